"""Parse a large provider answer in a short-lived worker process, off the event loop.

``json.loads`` holds the GIL for the whole parse, so a worker thread does not help: a 30 MB
body of small JSON values takes seconds and gigabytes to parse, and the server's loop would
stand still meanwhile. An answer above ``Limits.parse_inline_bytes`` is therefore parsed in
a child process (``python -m jupyter_byok.providers._offload``), which runs the wire's own
parse function (``parse_chat``, ``parse_models``, ...) on it and sends back only what that
returns, pickled. The child's address space is capped, it runs at a lower CPU priority, it
is killed when the call's deadline passes or the call is cancelled, and all its memory goes
back to the system when it exits.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ProviderError

__all__ = ["parse_elsewhere"]

#: the worker's address-space cap (bytes): a body that needs more to parse is refused
WORKER_MEMORY = 3 * 1024**3


async def parse_elsewhere(
    provider: str, fn: Callable[..., Any], args: tuple[Any, ...], body: bytes, timeout: float
) -> Any:
    """``fn(*args, json.loads(body))`` in a worker process. Raises what ``fn`` raised (a
    :class:`ProviderError`), ``ValueError`` for a body that is not JSON, ``MemoryError`` for
    one too big to parse, ``TimeoutError`` past ``timeout`` seconds."""
    header = json.dumps({"module": fn.__module__, "function": fn.__qualname__, "args": args})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(header.encode() + b"\n")  # no copy of the body joined to it
        proc.stdin.write(body)
        proc.stdin.close()  # once what is buffered has been written
        out, _ = await asyncio.wait_for(proc.communicate(), max(timeout, 0.001))
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0 or not out:
        raise MemoryError(f"the parser process ended with status {proc.returncode}")
    kind, *rest = pickle.loads(out)  # our own child's output
    if kind == "ok":
        return rest[0]
    if kind == "provider_error":
        name, message, error_type = rest
        import jupyter_byok.errors as errors

        cls = getattr(errors, name, ProviderError)
        cls = cls if isinstance(cls, type) and issubclass(cls, ProviderError) else ProviderError
        raise cls(message, provider=provider, error_type=error_type)
    if kind == "memory":
        raise MemoryError("the answer needs too much memory to parse")
    raise ValueError(f"the answer could not be read ({rest[0]})")


def main() -> None:
    """The worker: a header line (module, function, args), then the body, on stdin."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
        os.nice(10)  # background work: the server and its clients come first for the CPU
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        pass
    stdin = sys.stdin.buffer
    spec = json.loads(stdin.readline())
    body = stdin.read()
    result: tuple[Any, ...]
    try:
        fn: Any = importlib.import_module(spec["module"])
        for part in spec["function"].split("."):
            fn = getattr(fn, part)
        data = json.loads(body)
        del body
        result = ("ok", fn(*spec["args"], data))
    except ProviderError as exc:
        result = ("provider_error", type(exc).__name__, exc.message, exc.error_type)
    except (MemoryError, RecursionError):
        result = ("memory",)
    except Exception as exc:
        result = ("unreadable", type(exc).__name__)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
