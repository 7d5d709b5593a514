"""jupyter_byok: bring-your-own-key AI for Jupyter.

Your provider keys stay encrypted on your machine and go only to the provider you
call; every call lands in a usage ledger. Importing this package is cheap: it never
imports pandas, plotly or llama_cpp, and never touches the network.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import ByokError, MissingKeyError
from .keystore import Keystore, resolve_key
from .redact import Secret
from .types import Completion, Message, SearchResult, Usage

__all__ = [
    "ByokError",
    "Completion",
    "Keystore",
    "Message",
    "MissingKeyError",
    "SearchResult",
    "Secret",
    "Usage",
    "__version__",
    "resolve_key",
]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter_byok"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_byok"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from .server import load_extension

    load_extension(server_app)
