"""The offline demo: the README's main job, on the embedded local model.

Executes ``notebooks/quickstart.ipynb`` headless with nbclient (a real kernel, no Jupyter
server, so calls run in-process) in a fresh ``JUPYTER_BYOK_HOME`` under the output folder:
no key and no network are needed. Writes the executed notebook, the ledger as CSV and a
cost chart as HTML, and prints where they are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .config import set_home
from .errors import ByokError

__all__ = ["find_quickstart", "run_demo"]

#: Provider variables the demo removes from the kernel's environment: it must not need them.
_PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "XAI_API_KEY",
    "TAVILY_API_KEY",
)


def find_quickstart() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (
        here.parent / "notebooks" / "quickstart.ipynb",
        Path("notebooks/quickstart.ipynb"),
    ):
        if candidate.exists():
            return candidate
    raise ByokError(
        "notebooks/quickstart.ipynb was not found: run the demo from the project folder"
    )


def run_demo(output: str | Path = "demo-output", notebook: Path | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out = Path(output).resolve()
    home = out / "byok-home"
    out.mkdir(parents=True, exist_ok=True)
    source = notebook or find_quickstart()
    nb = nbformat.read(source, as_version=4)

    saved = {
        k: os.environ.get(k) for k in ("JUPYTER_BYOK_HOME", "BYOK_DEMO_OUTPUT", *_PROVIDER_VARS)
    }
    os.environ["JUPYTER_BYOK_HOME"] = str(home)  # for the notebook's kernel
    home_before = set_home(home)  # for this process
    os.environ["BYOK_DEMO_OUTPUT"] = str(out)
    for var in _PROVIDER_VARS:
        os.environ.pop(var, None)
    print(f"demo: running {source} on the embedded local model (no keys, no network)")
    started = time.monotonic()
    try:
        client = NotebookClient(
            nb,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(source.parent)}},
        )
        try:
            client.execute()
        except CellExecutionError as exc:
            nbformat.write(nb, out / "quickstart.executed.ipynb")
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ByokError(
                f"the demo notebook failed: {first}; see {out / 'quickstart.executed.ipynb'}"
            ) from None
    finally:
        set_home(home_before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    executed = out / "quickstart.executed.ipynb"
    nbformat.write(nb, executed)
    elapsed = time.monotonic() - started
    print(f"demo: done in {elapsed:.1f} s")
    _summarize(out / "usage.csv")
    print(f"  executed notebook: {executed}")
    for name in ("usage.csv", "cost_by_model.html"):
        path = out / name
        if path.exists():
            print(f"  {name:<18} {path}")
    print(f"  state (ledger, keystore): {home}")
    return 0


def _summarize(csv_path: Path) -> None:
    """A few lines about what the demo did, read back from its ledger export."""
    import csv

    if not csv_path.exists():
        return
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    tokens_in = sum(int(float(r.get("input_tokens") or 0)) for r in rows)
    tokens_out = sum(int(float(r.get("output_tokens") or 0)) for r in rows)
    features = sorted({r.get("feature", "") for r in rows})
    print(
        f"  ledger: {len(rows)} calls ({', '.join(features)}), {tokens_in} tokens in, "
        f"{tokens_out} out, cost $0 on the local model"
    )
