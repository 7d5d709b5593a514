"""The Jupyter server half: one service object in the web app settings, thin handlers.

Invariant: plaintext keys stay in this process. Handlers return metadata only.
"""

from __future__ import annotations

from typing import Any

from ..redact import install_log_filter

__all__ = ["load_extension"]


def load_extension(server_app: Any) -> None:
    from .handlers import setup_handlers

    install_log_filter()
    setup_handlers(server_app.web_app)
    server_app.log.info("jupyter_byok server extension loaded")
