"""The panel's "Local models" section: ``/byok/local/*``.

- ``GET  local/models``               the models with their facts, the default, the pulls
- ``DELETE local/models/NAME``        remove (the file only if jupyter_byok downloaded it)
- ``POST local/models/NAME/test``     a short prompt in a child process; tokens/s
- ``PUT  local/default``              ``{"name": NAME}``: the default local model
- ``POST local/pulls``                ``{"spec", "name"?, "quant"?, "sha256"?, "n_gpu_layers"?}``:
                                      start a pull (202, the job); ``GET`` lists the jobs
- ``GET|DELETE local/pulls/ID``       a pull's progress; cancel it (the part is kept)

Each verb is authenticated and authorized against ``jupyter_byok:local``. This process
downloads and reads GGUF headers but never loads a model for inference: "Test" runs in a
short-lived child (:func:`jupyter_byok.local_models.test_model`). Replies are metadata; the
Hub token stays in the keystore and in the request to the Hub.

Registered in :data:`.handlers.ROUTES` (imported from there, after ``ByokHandler``).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import errors
from ._replies import LocalOverview, PullJob
from .handlers import ByokHandler
from .service import BadInput, NotFound

LOCAL_RESOURCE = "jupyter_byok:local"
NAME = r"([A-Za-z0-9][A-Za-z0-9._-]{0,63})"
JOB = r"([0-9a-f]{16})"

_PULL_FIELDS: dict[str, tuple[type, ...]] = {
    "spec": (str,),
    "name": (str, type(None)),
    "quant": (str, type(None)),
    "sha256": (str, type(None)),
    "n_gpu_layers": (str, int, type(None)),
}


def _checked(
    body: dict[str, Any], fields: dict[str, tuple[type, ...]], required: str
) -> dict[str, Any]:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadInput(f"unknown field(s) {', '.join(unknown)}: use {', '.join(sorted(fields))}")
    for key, types in fields.items():
        value = body.get(key)
        if key in body and (not isinstance(value, types) or isinstance(value, bool)):
            raise BadInput(f"{key!r} has the wrong type")
        if isinstance(value, str) and len(value) > 2048:
            raise BadInput(f"{key!r} is too long")
    if not body.get(required):
        raise BadInput(f"{required!r} is required")
    return {k: v for k, v in body.items() if v is not None}


class _LocalHandler(ByokHandler):
    auth_resource = LOCAL_RESOURCE

    async def call(self, fn: Any, *args: Any, status: int = 200, **kwargs: Any) -> None:
        """Reply with ``fn(*args, **kwargs)`` run in a worker thread (file I/O, child
        processes), or with the one-line error it raised."""
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except (errors.ByokError, BadInput, NotFound) as exc:
            self.fail(exc)
            return
        self.reply(result, status)


def _overview() -> LocalOverview:
    from ..local_models import default_local_name, list_local_models, pull_jobs
    from ..providers.local._gpu import GPU_AUTO

    return cast(
        LocalOverview,
        {
            "models": list_local_models(),
            "default": default_local_name(),
            "pulls": pull_jobs().list(),
            "gpu_layers_default": GPU_AUTO,
        },
    )


class LocalModelsHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.call(_overview)


class LocalModelHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        from ..local_models import remove_model

        await self.call(remove_model, name)


class LocalTestHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        from ..local_models import test_model

        await self.call(test_model, name)


class LocalDefaultHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def put(self) -> None:
        from ..local_models import set_default

        try:
            body = _checked(self.body(), {"name": (str,)}, "name")
        except (errors.ByokError, BadInput) as exc:
            self.fail(exc)
            return
        await self.call(set_default, body["name"])


class LocalPullsHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..local_models import pull_jobs

        await self.call(lambda: {"pulls": pull_jobs().list()})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from ..local_models import pull_jobs

        try:
            body = _checked(self.body(), _PULL_FIELDS, "spec")
        except (errors.ByokError, BadInput) as exc:
            self.fail(exc)
            return
        spec = body.pop("spec")
        await self.call(pull_jobs().start, spec, status=202, **body)


def _job(job_id: str, cancel: bool) -> PullJob:
    from ..local_models import pull_jobs

    jobs = pull_jobs()
    found = jobs.cancel(job_id) if cancel else jobs.get(job_id)
    if found is None:
        raise NotFound(f"no pull {job_id}: it finished long ago or never started")
    return cast(PullJob, found)


class LocalPullHandler(_LocalHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        await self.call(_job, job_id, False)

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        await self.call(_job, job_id, True)
