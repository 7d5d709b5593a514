"""What ``local pull`` is asked for: ``hf:OWNER/REPO[/FILE.gguf][@REVISION]`` or a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from .._format import human_size
from ..errors import LocalModelError

__all__ = ["PullSpec", "check_name", "human_size", "model_name_for", "parse_spec"]

#: local model names: used as ``local:NAME``; never ending in .gguf (that reads as a path)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_USAGE = (
    "use hf:OWNER/REPO/FILE.gguf[@REVISION], hf:OWNER/REPO with --quant Q4_K_M, "
    "or an https://...gguf URL with --sha256"
)


@dataclass(frozen=True)
class PullSpec:
    kind: str  # "hf" | "url"
    repo: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "url":
            return str(self.url)
        where = f"{self.repo}/{self.filename}" if self.filename else str(self.repo)
        return f"hf:{where}" + (f"@{self.revision}" if self.revision else "")


def parse_spec(text: str) -> PullSpec:
    """Parse a pull spec; one clear :class:`LocalModelError` line when it is not one."""
    spec = (text or "").strip()
    if spec.startswith(("https://", "http://")):
        return _parse_url(spec)
    if not spec.startswith("hf:"):
        raise LocalModelError(f"cannot pull {spec!r}: {_USAGE}")
    body = spec[3:].strip("/")
    revision: str | None = None
    head, at, tail = body.rpartition("@")
    if at and head:
        body, revision = head, tail
        if not revision:
            raise LocalModelError(f"empty revision in {spec!r}: {_USAGE}")
    parts = body.split("/")
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        raise LocalModelError(f"{spec!r} does not name a Hub repository (OWNER/REPO): {_USAGE}")
    repo = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or None
    if filename is not None:
        if any(p in ("", ".", "..") for p in parts[2:]):
            raise LocalModelError(f"{spec!r} has an invalid file path: {_USAGE}")
        if not filename.lower().endswith(".gguf"):
            raise LocalModelError(
                f"{filename} is not a GGUF file: local models are .gguf files (look for a "
                "repository with GGUF in its name, or convert the model with llama.cpp)"
            )
    return PullSpec("hf", repo=repo, filename=filename, revision=revision)


def _parse_url(spec: str) -> PullSpec:
    url = urlparse(spec)
    host = (url.hostname or "").lower()
    if not host:
        raise LocalModelError(f"{spec!r} is not a URL: {_USAGE}")
    if url.scheme == "http" and host not in _LOOPBACK:
        raise LocalModelError(
            f"refusing plain http for {host}: use an https:// URL (http is allowed for this "
            "machine only)"
        )
    if url.username or url.password:
        raise LocalModelError("put no credentials in the URL: pull public files only")
    name = unquote(url.path.rsplit("/", 1)[-1])
    if not name.lower().endswith(".gguf"):
        raise LocalModelError(
            f"{spec} does not end in .gguf: local models are .gguf files; link to the file itself"
        )
    return PullSpec("url", url=spec, filename=name)


def check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise LocalModelError(f"--sha256 must be 64 hexadecimal digits, not {value!r}")
    return digest


def model_name_for(filename: str) -> str:
    """A registry name from a file name: ``Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`` ->
    ``qwen2.5-0.5b-instruct-q4_k_m``."""
    stem = filename.rsplit("/", 1)[-1]
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("._-").lower()
    return (name or "model")[:64].rstrip("._-") or "model"


def check_name(name: str) -> str:
    """A valid local model name, or one :class:`ConfigError` line."""
    from ..errors import ConfigError
    from ..providers.local import EMBEDDED_NAME

    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.endswith(".gguf"):
        raise ConfigError(
            f"invalid local model name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 64, not ending in .gguf)"
        )
    if name == EMBEDDED_NAME:
        raise ConfigError(f"{EMBEDDED_NAME!r} is the embedded model: choose another name")
    return name
