"""Crash safety for llama.cpp on this machine's CPU.

Invariant: a native crash inside llama.cpp (SIGSEGV, SIGABRT, ...) may kill a short-lived
probe child, never the process that asked for the model: that process is usually a
notebook kernel, and losing it loses every variable in the notebook.

Two defences:

- **The buffer-type decision.** llama.cpp loads weights into "extra" CPU buffer types
  when it can: repacked layouts for AVX2/AVX-512, and the AMX backend on CPUs with AMX.
  The AMX backend segfaults in ``ggml_backend_amx_mul_mat`` on some CPUs for any decode of
  two or more tokens (upstream ggml-org/llama.cpp#20824). The setting
  ``local_extra_buffers`` is ``auto`` (the default: off when llama.cpp reports
  ``AMX_INT8 = 1`` in its system info, on otherwise, so repacking stays where it is safe),
  ``on`` or ``off``. ``Llama`` has no keyword for the field, so
  :func:`model_params` sets ``use_extra_bufts`` on the params llama-cpp-python builds.
- **The probe.** The first time a model file is used with a given llama-cpp-python
  version, CPU (its system-info line) and setting, a child process loads it, decodes a
  multi-token prompt and generates a few tokens. If the child dies from a signal, it is
  tried again with extra buffer types off; if that dies too, the model is refused with one
  line naming the signal. The verdict is kept in memory and in ``local-probe.json`` under
  ``JUPYTER_BYOK_HOME``, so later calls and later processes do not probe again.

``JUPYTER_BYOK_PROBE_FAULT`` is a fault-injection hook for tests, read only by the probe
child: ``extra-buffers`` makes the child die from SIGSEGV when extra buffer types are on,
``always`` makes it die every time. Nothing else reads it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, LocalModelError

__all__ = [
    "EXTRA_BUFFER_SETTINGS",
    "FAULT_ENV",
    "SETTING_ENV",
    "ProbeVerdict",
    "amx_present",
    "buffer_setting",
    "decide_extra_buffers",
    "extra_buffers_for",
    "guarded_llama",
    "model_params",
    "probe_verdicts",
    "system_info",
]

log = logging.getLogger("jupyter_byok")

EXTRA_BUFFER_SETTINGS = ("auto", "on", "off")
SETTING_ENV = "JUPYTER_BYOK_LOCAL_EXTRA_BUFFERS"
FAULT_ENV = "JUPYTER_BYOK_PROBE_FAULT"
VERDICT_FILE = "local-probe.json"
#: A probe of a small model takes about a second; a large model on a slow disk loads slower.
PROBE_TIMEOUT_S = 180.0
_AMX = re.compile(r"\bAMX_INT8\s*=\s*1\b")


# --------------------------------------------------------------------------- facts
@functools.lru_cache(maxsize=1)
def system_info() -> str:
    """llama.cpp's own description of what it was built with and uses on this CPU."""
    from ._cache import _import_llama_cpp

    llama_cpp = _import_llama_cpp()
    raw = llama_cpp.llama_print_system_info()
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()


def llama_cpp_version() -> str:
    from ._cache import _import_llama_cpp

    return str(_import_llama_cpp().__version__)


def amx_present(info: str) -> bool:
    """Whether llama.cpp reports its AMX backend as active (``AMX_INT8 = 1``)."""
    return bool(_AMX.search(info))


def buffer_setting() -> str:
    """``local_extra_buffers``: the environment variable, else the settings file, else auto."""
    value = os.environ.get(SETTING_ENV)
    if not value:
        from ...config import load_settings

        value = load_settings().local_extra_buffers
    value = value.strip().lower()
    if value not in EXTRA_BUFFER_SETTINGS:
        raise ConfigError(
            f"local_extra_buffers must be auto, on or off, not {value!r}: "
            f"fix {SETTING_ENV} or run `jupyter byok config local_extra_buffers auto`"
        )
    return value


def decide_extra_buffers(setting: str, info: str) -> bool:
    """Load with llama.cpp's extra buffer types? ``auto`` keeps them unless AMX is active."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return not amx_present(info)


# --------------------------------------------------------------------------- loading
_params_lock = threading.RLock()


@contextlib.contextmanager
def model_params(extra_buffers: bool) -> Iterator[None]:
    """Within this block, ``llama_cpp.Llama(...)`` loads with ``use_extra_bufts`` as given.

    llama-cpp-python builds its model params from ``llama_model_default_params()`` inside
    ``Llama.__init__``; we wrap that function for the duration of the block (loads are
    serialized by a lock, so a concurrent load never sees the other's choice).
    """
    from ._cache import _import_llama_cpp

    native = _import_llama_cpp().llama_cpp
    with _params_lock:
        original = native.llama_model_default_params

        def params() -> Any:
            value = original()
            if hasattr(value, "use_extra_bufts"):
                value.use_extra_bufts = extra_buffers
            return value

        native.llama_model_default_params = params
        try:
            yield
        finally:
            native.llama_model_default_params = original


def guarded_llama(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A raw ``llama_cpp.Llama`` loaded with the same guard as jupyter_byok's own models.

    For code that uses llama-cpp-python directly (benchmarks, tests) on a file that
    jupyter_byok also runs: both then use the same buffer types, decided by the probe.
    """
    from ._cache import _import_llama_cpp

    llama_cpp = _import_llama_cpp()
    extra = extra_buffers_for(Path(path))
    with model_params(extra):
        return llama_cpp.Llama(model_path=str(path), **kwargs)


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class ProbeVerdict:
    """What the probe found for one model file on this llama.cpp build and CPU."""

    model: str
    llama_cpp: str
    setting: str
    amx: bool
    #: ``ok`` (the first choice worked), ``fallback`` (it crashed, extra buffers off
    #: worked) or ``refused`` (both crashed)
    verdict: str
    extra_buffers: bool | None
    signal: str | None
    probe_s: float
    probed_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_memory: dict[str, ProbeVerdict] = {}
_probe_lock = threading.Lock()


def _verdict_key(path: Path, setting: str, info: str, version: str) -> str:
    st = path.stat()
    material = json.dumps([version, info, setting, str(path), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def _verdict_path() -> Path:
    from ...config import home_file

    return home_file(VERDICT_FILE)


def _read_verdicts(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); models will be probed again", path, exc)
        return {}
    verdicts = data.get("verdicts") if isinstance(data, dict) else None
    return verdicts if isinstance(verdicts, dict) else {}


def _load_verdict(path: Path, key: str) -> ProbeVerdict | None:
    raw = _read_verdicts(path).get(key)
    if not isinstance(raw, dict):
        return None
    try:
        return ProbeVerdict(**raw)
    except TypeError:
        return None


def _store_verdict(path: Path, key: str, verdict: ProbeVerdict) -> None:
    from ..._files import atomic_write

    verdicts = _read_verdicts(path)
    verdicts[key] = verdict.to_dict()
    body = json.dumps({"version": 1, "verdicts": verdicts}, indent=2, sort_keys=True)
    try:
        atomic_write(path, body.encode() + b"\n")
    except OSError as exc:  # the verdict still holds for this process
        log.warning("could not record the llama.cpp probe verdict in %s (%s)", path, exc)


def probe_verdicts() -> list[dict[str, Any]]:
    """Every recorded verdict (for ``doctor``), newest first."""
    rows = [dict(v) for v in _read_verdicts(_verdict_path()).values() if isinstance(v, dict)]
    return sorted(rows, key=lambda row: str(row.get("probed_at", "")), reverse=True)


def extra_buffers_for(path: Path) -> bool:
    """Whether to load ``path`` with extra buffer types; probes once per model and machine.

    Raises :class:`LocalModelError` when the model crashes llama.cpp either way.
    """
    setting = buffer_setting()
    info = system_info()
    key = _verdict_key(path, setting, info, llama_cpp_version())
    verdict = _probe_once(path, key, setting, info)
    if verdict.verdict == "refused":
        raise LocalModelError(
            f"{path.name} crashes llama.cpp on this machine (the probe died from "
            f"{verdict.signal}, with and without extra buffer types), so it was not loaded: "
            "run `jupyter byok doctor` for details"
        )
    return bool(verdict.extra_buffers)


def _probe_once(path: Path, key: str, setting: str, info: str) -> ProbeVerdict:
    """The recorded verdict, or a new one. Runs when a model loads, so a file read is cheap."""
    from ..._files import file_lock
    from ...config import home_file

    verdict_path = _verdict_path()
    with _probe_lock, contextlib.ExitStack() as stack:
        try:  # one probe at a time across processes; a read-only home still gets its probe
            stack.enter_context(file_lock(home_file("local-probe.lock")))
        except OSError as exc:
            log.warning("probing without the cross-process lock (%s)", exc)
        verdict = _load_verdict(verdict_path, key)
        if verdict is None:
            # A verdict this process already found (under another JUPYTER_BYOK_HOME) is a
            # fact about this machine: record it here too rather than probe again.
            verdict = _memory.get(key) or _probe(path, setting, info)
            _store_verdict(verdict_path, key, verdict)
        _memory[key] = verdict
    return verdict


def _probe(path: Path, setting: str, info: str) -> ProbeVerdict:
    first = decide_extra_buffers(setting, info)
    started = time.perf_counter()
    verdict, extra, crash = "refused", None, None
    for attempt, choice in enumerate([first, False] if first else [False]):
        died = run_probe_child(path, choice)
        if died is None:
            verdict, extra = ("ok" if attempt == 0 else "fallback"), choice
            break
        crash = crash or died
        log.warning(
            "llama.cpp died from %s probing %s with extra buffer types %s",
            died,
            path.name,
            "on" if choice else "off",
        )
    return ProbeVerdict(
        model=str(path),
        llama_cpp=llama_cpp_version(),
        setting=setting,
        amx=amx_present(info),
        verdict=verdict,
        extra_buffers=extra,
        signal=crash,
        probe_s=round(time.perf_counter() - started, 3),
        probed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def run_probe_child(path: Path, extra_buffers: bool) -> str | None:
    """Run the probe in a child; the name of the signal that killed it, or None if it lived.

    A child that exits with a Python error (a file llama.cpp cannot load, say) did not
    crash: the load in this process then raises the same error as a clear message.
    """
    command = [
        sys.executable,
        "-m",
        "jupyter_byok.providers.local._probe",
        str(path),
        "on" if extra_buffers else "off",
    ]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LocalModelError(
            f"the llama.cpp check of {path.name} did not finish in {PROBE_TIMEOUT_S:.0f} s "
            "(the machine may be overloaded): try again, or run `jupyter byok doctor`"
        ) from None
    if done.returncode < 0:
        try:
            return signal.Signals(-done.returncode).name
        except ValueError:
            return f"signal {-done.returncode}"
    return None
