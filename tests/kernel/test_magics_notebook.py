"""A notebook using %%byok, executed end to end by nbclient in a real kernel."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_byok.keys import Keystore
from jupyter_byok.magics import format_cost
from jupyter_byok.testing import FakeProviders

CANARY = "sk-proj-NBCANARY" + "z" * 44 + "T3BlbkFJ" + "m" * 20


class CountingClient(NotebookClient):
    """Counts in-place display updates and keeps execute replies (for set_next_input)."""

    updates: int = 0
    replies: list[dict[str, Any]]

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        self.updates += 1
        super()._update_display_id(display_id, msg)


def test_notebook_end_to_end(
    tmp_path: Path, fake_providers: FakeProviders, byok_home: Path
) -> None:
    Keystore().set("openai", CANARY)
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_byok"),
            new_code_cell("%%byok openai:gpt-4o-mini -o reply\nname the planets in order"),
            new_code_cell("print(reply.text, reply.ledger_id)"),
            new_code_cell("%%byok openai:gpt-4o-mini -f code --no-stream\nprint('hi')"),
            new_code_cell("%%byok anthropic:claude-haiku-4-5\nthis provider has no key"),
            new_code_cell("print('still running')"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    replies: list[dict[str, Any]] = []
    client = CountingClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        on_cell_executed=lambda cell, cell_index, execute_reply: replies.append(execute_reply),
    )
    client.execute()
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)

    # the answer streamed into a display that was updated in place
    assert client.updates >= 1
    outputs = nb.cells[1].outputs
    answer = [o for o in outputs if "text/markdown" in o.get("data", {})]
    assert answer and "Echo: name the planets in order" in answer[0]["data"]["text/markdown"]

    # the footer shows the cost the ledger recorded for this call
    import jupyter_byok

    frame = jupyter_byok.usage()
    printed = nb.cells[2].outputs[0]["text"].split()
    ledger_id = printed[-1]
    row = frame[frame["id"] == ledger_id] if "id" in frame.columns else frame.iloc[[0]]
    cost = Decimal(str(row["cost_usd"].iloc[0]))
    footer = outputs[-1]["data"]["text/plain"]
    assert format_cost(cost) in footer, (footer, cost)
    assert outputs[-1]["metadata"]["jupyter_byok"]["ledger_id"] == ledger_id

    # -o captured the Completion
    assert "Echo: name the planets in order" in nb.cells[2].outputs[0]["text"]

    # -f code proposed the code as the next cell
    payloads = [p for r in replies for p in r.get("content", {}).get("payload", [])]
    assert any(
        p.get("source") == "set_next_input" and "print('hi')" in p.get("text", "") for p in payloads
    )

    # an expected failure is one line on stderr, no traceback, and the kernel goes on
    err = [o for o in nb.cells[4].outputs if o.get("name") == "stderr"]
    assert (
        len(err) == 1
        and err[0]["text"].count("\n") == 1
        and "no key for anthropic" in err[0]["text"]
    )
    assert not [o for o in nb.cells[4].outputs if o["output_type"] == "error"]
    assert nb.cells[5].outputs[0]["text"] == "still running\n"

    # no trace of the key anywhere in the saved notebook
    saved = path.read_text()
    assert CANARY not in saved and CANARY[-12:] not in saved
    assert CANARY not in json.dumps(nb.metadata)
