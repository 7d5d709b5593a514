"""Pointing a benchmark process at a state folder of its own."""

from __future__ import annotations

import os


def use_home(home: str | os.PathLike[str]) -> None:
    """Keep jupyter_byok's state in ``home``: for this process (``set_home``) and for the
    child processes it starts (``JUPYTER_BYOK_HOME``). A jupyter_byok from before
    ``set_home`` existed (a before/after comparison) reads the variable on every use."""
    os.environ["JUPYTER_BYOK_HOME"] = str(home)
    try:
        from jupyter_byok.config import set_home
    except ImportError:
        return
    set_home(home)
