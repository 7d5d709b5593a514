"""``doctor``: what jupyter_byok sees on this machine, for the first look when something is off.

Invariant: the report holds metadata only. Keys appear as label, last 4 characters and
fingerprint (what ``keys list`` shows); environment keys appear as variable names. Nothing
here loads a model into this process: llama.cpp is asked for its system info, and a probe,
when asked for, runs in a child process.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._format import human_size as _size
from ..errors import ByokError

__all__ = ["doctor", "render_text"]

_VERSIONED = ("jupyterlab", "jupyter_server", "ipywidgets", "httpx", "pandas", "llama_cpp_python")


def _safe(section: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One section; a failure in it is reported in place, never stops the report."""
    try:
        return section()
    except ByokError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # doctor must answer even on a broken install
        return {"error": f"{type(exc).__name__}: {exc}"}


def _mode(path: Path) -> str | None:
    try:
        return oct(stat.S_IMODE(path.stat().st_mode))
    except OSError:
        return None


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__

    found: dict[str, Any] = {"python": platform.python_version(), "jupyter_byok": __version__}
    for dist in _VERSIONED:
        try:
            found[dist] = version(dist.replace("_", "-"))
        except PackageNotFoundError:
            found[dist] = None
    found["platform"] = platform.platform()
    return found


def _cpu_flags(info: str) -> list[str]:
    """The features llama.cpp reports as on, e.g. ``AVX2``, ``AVX512``, ``AMX_INT8``."""
    flags: list[str] = []
    for part in info.replace("|", "\n").splitlines():
        name, sep, value = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if sep and value.strip() == "1" and name:
            flags.append(name)
    return flags


def _llama(probe: bool) -> dict[str, Any]:
    from ..providers.local import _guard

    try:
        info = _guard.system_info()
    except ByokError as exc:
        return {"installed": False, "error": str(exc)}
    from ..providers.local._cache import _import_llama_cpp

    llama_cpp = _import_llama_cpp()
    setting = _guard.buffer_setting()
    report: dict[str, Any] = {
        "installed": True,
        "version": str(llama_cpp.__version__),
        "system_info": info,
        "cpu_features": _cpu_flags(info),
        "amx": _guard.amx_present(info),
        "extra_buffers_setting": setting,
        "extra_buffers_decision": "on" if _guard.decide_extra_buffers(setting, info) else "off",
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }
    from ..providers.local._gpu import decide_gpu_layers, gpu_backends

    report["gpu_backends"] = gpu_backends(info)
    report["gpu_layers_auto"] = decide_gpu_layers("auto", report["gpu_offload"])
    if probe:
        from ..providers.local import embedded_model_path

        try:
            _guard.extra_buffers_for(embedded_model_path())
            report["probe"] = "ok"
        except ByokError as exc:
            report["probe"] = str(exc)
    report["verdicts"] = _guard.probe_verdicts()
    return report


def _keystore() -> dict[str, Any]:
    from ..keys import Keystore
    from ..providers import BUILTIN

    store = Keystore()
    status = store.status()
    files = {"home": Path(status["home"]), "keystore": Path(status["path"])}
    if status.get("key_file"):
        files["key_file"] = Path(status["key_file"])
    report: dict[str, Any] = {
        "tier": status["tier"],
        "tier_description": status.get("tier_description"),
        "path": status["path"],
        "modes": {name: _mode(path) for name, path in files.items()},
        "error": status.get("error"),
    }
    if status.get("error"):
        report["recovery"] = (
            "`jupyter byok keys reset` sets the unreadable store aside; then "
            "`jupyter byok restore BACKUP` brings back keys, ledger and settings from a "
            "backup made with `jupyter byok backup` (or add the keys again)"
        )
    keys: list[dict[str, Any]] = []
    if not status.get("error"):
        keys = [
            {
                "label": info.label,
                "kind": info.kind,
                "last4": info.last4,
                "fingerprint": info.fingerprint,
                "last_verified": info.last_verified,
            }
            for info in store.list()
        ]
    report["keys"] = keys
    report["environment"] = sorted(
        var for spec in BUILTIN.values() for var in spec.env_vars if os.environ.get(var)
    )
    return report


def _ledger() -> dict[str, Any]:
    from ..ledger import ledger_path

    path = ledger_path()
    report: dict[str, Any] = {"path": str(path), "exists": path.exists()}
    if not path.exists():
        return report
    report["size_bytes"] = path.stat().st_size
    report["mode"] = _mode(path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = [row[0] for row in con.execute("PRAGMA integrity_check")]
            report["rows"] = con.execute("SELECT count(*) FROM attempts").fetchone()[0]
        finally:
            con.close()
        report["integrity"] = "ok" if result == ["ok"] else "; ".join(map(str, result[:5]))
    except sqlite3.Error as exc:
        report["integrity"] = f"cannot check ({exc})"
    from ..ledger import ledger_health

    health = ledger_health()
    report["writable"] = health.get("writable")
    report["refusing"] = health.get("error")
    report["pending_rows"] = health.get("pending")
    report["last_error"] = health.get("last_error")
    report["free_bytes"] = health.get("free_bytes")
    return report


def _shared_ledger() -> dict[str, Any]:
    """The shared ledger (PostgreSQL) when JUPYTER_BYOK_LEDGER_URL is set, checked now."""
    from ..ledger.shared import doctor_report

    return doctor_report()


def _extensions() -> dict[str, Any]:
    from jupyter_core.paths import jupyter_config_path, jupyter_path

    enabled: bool | None = None
    for directory in reversed(jupyter_config_path()):  # later (more specific) paths win
        base = Path(directory)
        for file in [
            *sorted((base / "jupyter_server_config.d").glob("*.json")),
            base / "jupyter_server_config.json",
        ]:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            value = data.get("ServerApp", {}).get("jpserver_extensions", {}).get("jupyter_byok")
            if value is not None:
                enabled = bool(value)
    lab = next(
        (
            str(Path(d) / "jupyter_byok")
            for d in jupyter_path("labextensions")
            if (Path(d) / "jupyter_byok" / "package.json").is_file()
        ),
        None,
    )
    disabled = False
    for directory in jupyter_config_path():
        try:
            page = json.loads(
                (Path(directory) / "labconfig" / "page_config.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            continue
        listed = page.get("disabledExtensions", {})
        if (isinstance(listed, dict) and listed.get("jupyter_byok")) or (
            isinstance(listed, list) and "jupyter_byok" in listed
        ):
            disabled = True
    return {
        "server_extension_enabled": bool(enabled),
        "labextension": lab,
        "labextension_enabled": lab is not None and not disabled,
    }


def doctor(*, probe: bool = False) -> dict[str, Any]:
    """The whole report as plain data (JSON-serializable). ``probe``: check the embedded model."""
    from ..config import byok_home

    return {
        "home": str(byok_home()),
        "versions": _safe(_versions),
        "llama_cpp": _safe(lambda: _llama(probe)),
        "keystore": _safe(_keystore),
        "ledger": _safe(_ledger),
        "shared_ledger": _safe(_shared_ledger),
        "jupyter": _safe(_extensions),
    }


def render_text(report: dict[str, Any]) -> str:
    """The report as the aligned text ``jupyter byok doctor`` and ``%byok doctor`` show."""
    lines: list[str] = []

    def row(label: str, value: Any) -> None:
        lines.append(f"  {label:<22} {value}")

    lines.append(f"jupyter_byok doctor  (home: {report['home']})")
    versions = report["versions"]
    lines.append("versions")
    for name, value in versions.items():
        row(name, value if value is not None else "not installed")

    llama = report["llama_cpp"]
    lines.append("local models (llama.cpp)")
    if llama.get("error"):
        row("problem", llama["error"])
    else:
        row("llama-cpp-python", llama["version"])
        row("CPU features", " ".join(llama["cpu_features"]) or "-")
        row("AMX backend", "present" if llama["amx"] else "absent")
        row(
            "extra buffer types",
            f"{llama['extra_buffers_decision']} (setting: {llama['extra_buffers_setting']})",
        )
        backends = ", ".join(llama.get("gpu_backends") or []) or "backend not named"
        row(
            "GPU offload",
            f"available ({backends})" if llama["gpu_offload"] else "none (CPU only)",
        )
        auto = llama.get("gpu_layers_auto")
        if auto is not None:
            row("n_gpu_layers auto", "all layers (-1)" if auto == -1 else f"{auto} (CPU)")
        if "probe" in llama:
            row("probe (embedded)", llama["probe"])
        if not llama["verdicts"]:
            row("probe verdicts", "none yet (a model is probed on first use)")
        for verdict in llama["verdicts"]:
            extra = verdict.get("extra_buffers")
            used = "-" if extra is None else ("on" if extra else "off")
            died = f", died from {verdict['signal']}" if verdict.get("signal") else ""
            row(
                "probe verdict",
                f"{Path(str(verdict.get('model'))).name}: {verdict.get('verdict')} "
                f"(extra buffers {used}{died}; llama-cpp-python {verdict.get('llama_cpp')}, "
                f"{verdict.get('probe_s')} s, {verdict.get('probed_at')})",
            )

    keystore = report["keystore"]
    lines.append("keystore")
    if "tier" in keystore:
        row("protection tier", f"{keystore['tier']} — {keystore.get('tier_description')}")
        row("file", keystore["path"])
        row(
            "modes",
            ", ".join(f"{name} {mode or 'missing'}" for name, mode in keystore["modes"].items()),
        )
    if keystore.get("error"):
        row("problem", keystore["error"])
    if keystore.get("recovery"):
        row("recovery", keystore["recovery"])
    if "keys" in keystore:
        stored = [
            f"{k['label']} (…{k['last4'] or '****'}, {k['fingerprint']})" for k in keystore["keys"]
        ]
        row("stored keys", ", ".join(stored) or "none")
        row("keys from environment", ", ".join(keystore["environment"]) or "none")

    ledger = report["ledger"]
    lines.append("usage ledger")
    if ledger.get("error"):
        row("problem", ledger["error"])
    else:
        row("file", ledger["path"])
        if not ledger["exists"]:
            row("state", "not created yet (the first call creates it)")
        else:
            row("size", f"{_size(ledger['size_bytes'])}; rows: {ledger.get('rows', '?')}")
            row("integrity check", ledger.get("integrity"))
        if ledger.get("writable") is not None:
            free = ledger.get("free_bytes")
            row(
                "takes new rows",
                ("yes" if ledger["writable"] else f"NO: {ledger.get('refusing')}")
                + (f" ({_size(free)} free)" if isinstance(free, int) else ""),
            )
        if ledger.get("pending_rows"):
            row("rows pending", f"{ledger['pending_rows']} (kept in memory, retried)")
        if ledger.get("last_error"):
            row("last write error", ledger["last_error"])

    shared = report.get("shared_ledger")
    if shared:
        lines.append("shared usage ledger")
        for label, value in shared.get("rows") or [("problem", shared.get("error"))]:
            row(label, value)

    jupyter = report["jupyter"]
    lines.append("jupyter")
    if jupyter.get("error"):
        row("problem", jupyter["error"])
    else:
        row("server extension", "enabled" if jupyter["server_extension_enabled"] else "NOT enabled")
        lab = jupyter["labextension"]
        state = "enabled" if jupyter["labextension_enabled"] else "disabled"
        row("labextension", f"{state} ({lab})" if lab else "NOT installed")
    return "\n".join(lines)
