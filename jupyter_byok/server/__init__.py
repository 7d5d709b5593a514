"""The Jupyter server half: one service object in the web app settings, thin handlers.

Invariant: plaintext keys stay in this process. Handlers return metadata only, and the
redaction filter is installed on the server's loggers before any handler runs.
"""

from __future__ import annotations

from typing import Any

from ..redact import install_log_filter

__all__ = ["load_extension"]


def load_extension(server_app: Any) -> None:
    from .handlers import setup_handlers
    from .service import ByokService

    _ledger_config(server_app)
    install_log_filter(extra=(server_app.log.name,))
    for handler in server_app.log.handlers:
        from ..redact import RedactingFilter

        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(install_log_filter())
    # Local models belong to kernels: the service's Engine(allow_local=False) refuses them.
    setup_handlers(server_app.web_app, ByokService())
    _collect_once_serving(server_app)
    server_app.log.info("jupyter_byok server extension loaded (keystore and dispatch in server)")


#: ``c.JupyterByok.<name>`` in jupyter_server_config.py -> the environment variable it sets
LEDGER_CONFIG = {
    "ledger_url": "JUPYTER_BYOK_LEDGER_URL",
    "ledger_password_secret": "JUPYTER_BYOK_LEDGER_PASSWORD_SECRET",
    "team": "JUPYTER_BYOK_TEAM",
}


def _ledger_config(server_app: Any) -> None:
    """The shared ledger's settings from the server's config (``c.JupyterByok.ledger_url``,
    ``ledger_password_secret``, ``team``), as the environment variables of the same meaning
    (the environment wins): kernels this server starts inherit them, so notebooks and the
    server write to the same ledger as the same team."""
    import os

    section = server_app.config.get("JupyterByok", {})
    for name, env in LEDGER_CONFIG.items():
        value = section.get(name)
        if value and not os.environ.get(env):
            os.environ[env] = str(value)
    url = os.environ.get("JUPYTER_BYOK_LEDGER_URL")
    if url:
        from ..ledger.pg import check_url, redact_url

        check_url(url)
        server_app.log.info("jupyter_byok: shared usage ledger at %s", redact_url(url))


def _collect_once_serving(server_app: Any) -> None:
    """One full garbage collection as soon as the server serves.

    A fresh server has never run one: everything imported at start-up (~200,000 objects)
    waits in the oldest generation, and Python's first full collection, 140-155 ms in one
    loop turn, then lands in the first busy moment (measured in bench_server_load: the
    first burst of calls, stalling every request, ``GET /byok/status`` included). Run
    once, up front, it leaves the heap counted as long-lived, so the next full collection
    waits until a quarter as many objects again have survived. It changes nothing else in
    how the server collects garbage.
    """
    import gc

    from tornado.ioloop import IOLoop

    loop = getattr(server_app, "io_loop", None) or IOLoop.current()
    loop.add_callback(gc.collect)
