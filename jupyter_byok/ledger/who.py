"""Who and where a ledger row comes from: the user, the team and the server.

* user: ``JUPYTERHUB_USER`` (set by JupyterHub for every single-user server), else the OS
  user;
* team: ``JUPYTER_BYOK_TEAM`` (a hub admin passes the user's group through the spawner's
  environment), else none;
* server: ``JUPYTER_BYOK_SERVER_NAME``, else this host's name, with JupyterHub's named
  server (``JUPYTERHUB_SERVER_NAME``) after a slash.

Read on every row (three environment lookups), worked out once per distinct environment.
"""

from __future__ import annotations

import getpass
import os
import socket

__all__ = ["who"]

_cache: dict[tuple[str | None, ...], tuple[str, str | None, str]] = {}


def who() -> tuple[str, str | None, str]:
    """(user, team, server) of this process."""
    env = os.environ
    key = (
        env.get("JUPYTERHUB_USER"),
        env.get("JUPYTER_BYOK_TEAM"),
        env.get("JUPYTER_BYOK_SERVER_NAME"),
    )
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _work_out(*key)
    return found


def _work_out(
    hub_user: str | None, team: str | None, server: str | None
) -> tuple[str, str | None, str]:
    user = hub_user
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
    if not server:
        server = socket.gethostname()
        named = os.environ.get("JUPYTERHUB_SERVER_NAME")
        if named:
            server = f"{server}/{named}"
    return user, (team or None), server
