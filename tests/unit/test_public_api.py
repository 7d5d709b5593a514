"""The public face: a sorted, complete __all__, and an import that stays cheap and offline."""

from __future__ import annotations

import json
import subprocess
import sys

import jupyter_byok


def test_all_is_sorted_and_resolves() -> None:
    assert jupyter_byok.__all__ == sorted(jupyter_byok.__all__)
    for name in jupyter_byok.__all__:
        assert getattr(jupyter_byok, name) is not None, name


def test_import_is_cheap_and_touches_no_network() -> None:
    code = (
        "import socket, sys, json\n"
        "def refuse(*a, **k):\n"
        "    raise RuntimeError('network at import time')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import jupyter_byok\n"
        "heavy = ['pandas', 'plotly', 'llama_cpp', 'ipywidgets', 'numpy', 'httpx', 'httpx2', 'cryptography', 'sqlite3']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_jupyter_entry_points() -> None:
    assert jupyter_byok._jupyter_server_extension_points() == [{"module": "jupyter_byok"}]
    assert jupyter_byok._jupyter_labextension_paths() == [
        {"src": "labextension", "dest": "jupyter_byok"}
    ]
