"""Regenerate notebooks/quickstart.ipynb (committed without outputs)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# jupyter_byok quick start\n\n"
        "Everything here runs offline on the embedded local model (`local:smollm2`): no key, "
        "no network. Swap the model id for `openai:gpt-4o-mini`, `anthropic:claude-haiku-4-5`, "
        "`gemini:gemini-2.5-flash` or `xai:grok-4.3` once you have stored a key with "
        "`%byok keys set PROVIDER`."
    ),
    new_code_cell(
        "import os\n\nimport jupyter_byok as byok\n\n%load_ext jupyter_byok\nbyok.__version__"
    ),
    new_markdown_cell(
        "## A call from Python\nEvery call returns text, token usage, cost and latency."
    ),
    new_code_cell(
        'answer = byok.complete("local:smollm2", "What is the capital of France? Answer in one sentence.", max_tokens=32, temperature=0)\n'
        "print(answer.text)\n"
        'print(f"{answer.usage.input_tokens} tokens in, {answer.usage.output_tokens} out, cost ${answer.cost_usd} ({answer.cost_source}), {answer.latency_s:.2f} s")\n'
        "assert answer.text.strip() and answer.usage.output_tokens > 0"
    ),
    new_markdown_cell(
        "## The `%%byok` magic\nThe answer streams in; `{topic}` is filled from the notebook, "
        "while other braces (JSON, code) stay as written; `-o` keeps the result."
    ),
    new_code_cell('topic = "notebooks"'),
    new_code_cell("%%byok local:smollm2 --max-tokens 48 -o haiku\nWrite a haiku about {topic}."),
    new_code_cell("assert haiku.text.strip()\nhaiku.usage"),
    new_markdown_cell(
        "## A pipeline\nEach node may use a different provider; results, tokens and cost are kept "
        "per node, and an unchanged re-run is served from the node cache."
    ),
    new_code_cell(
        'p = byok.Pipeline("quickstart")\n'
        'p.llm("fact", "local:smollm2", "Give one short fact about {input.topic}.", max_tokens=32)\n'
        'p.llm("title", "local:smollm2", "Write a five-word title for this fact: {fact}", max_tokens=16)\n'
        'result = p.run(topic="the Moon")\n'
        'assert result["fact"].text.strip() and result["title"].text.strip()\n'
        "result"
    ),
    new_markdown_cell(
        "## The usage ledger\nEvery attempt is a row: a pandas DataFrame you can slice, export and chart."
    ),
    new_code_cell(
        "frame = byok.usage()\n"
        "assert len(frame) >= 4, frame\n"
        'frame[["ts", "provider", "model", "feature", "status", "input_tokens", "output_tokens", "cost_usd", "latency_s"]]'
    ),
    new_code_cell(
        "from jupyter_byok import charts\n\n"
        'out = os.environ.get("BYOK_DEMO_OUTPUT", ".")\n'
        'fig = charts.cost_by(frame, by="model")\n'
        'fig.write_html(os.path.join(out, "cost_by_model.html"))\n'
        'frame.to_csv(os.path.join(out, "usage.csv"), index=False)\n'
        "fig"
    ),
]

nb = new_notebook(
    cells=cells,
    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
)
path = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
nbformat.write(nb, path)
print(f"wrote {path}")
