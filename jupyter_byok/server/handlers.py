"""REST handlers under ``{base_url}/byok/``: parse, call the service, map errors.

Every verb is authenticated (``@web.authenticated``) and authorized against a
``jupyter_byok:*`` resource; no reply, log line or error carries a key value.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .._version import __version__
from ..errors import ByokError
from ..keystore import Keystore


class ByokHandler(APIHandler):
    auth_resource = "jupyter_byok:status"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def fail(self, exc: ByokError, status: int = 400) -> None:
        self.set_status(status)
        self.finish(json.dumps({"error": type(exc).__name__, "message": str(exc)}))


class StatusHandler(ByokHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        store = Keystore()
        try:
            keystore = store.status()
        except ByokError as exc:
            self.fail(exc, 500)
            return
        self.reply({"version": __version__, "keystore": keystore})


def setup_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    routes = [(url_path_join(base_url, "byok", "status"), StatusHandler)]
    web_app.add_handlers(".*$", routes)
