"""How many tokens a prompt is, before sending it: OpenAI's own vocabularies through
``tiktoken`` where they apply (loaded from its cache, never downloaded in a test), and a
character-based estimate for the rest."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("jupyter_byok")


def estimate_prompt_tokens(text: str, *, provider: str = "", model: str = "") -> int:
    """Prompt tokens for a budget estimate: exact with ``tiktoken`` for OpenAI, else a bound.

    OpenAI's vocabularies ship with the package (``tokenizers/``), so the count is exact
    offline for every model on o200k_base or cl100k_base. Elsewhere the heuristic is
    deliberately high: one token per 2 characters plus 8 for message framing (real tokenizers
    average about 4 characters per English token), so a budget check errs on the side of
    blocking.
    """
    if provider == "openai":
        encoding = _openai_encoding(model)
        if encoding is not None:
            return len(encoding.encode(text, disallowed_special=())) + 8
    return math.ceil(len(text) / 2) + 8


#: the vocabularies shipped in tokenizers/, by tiktoken encoding name
_VOCABULARIES = ("o200k_base", "cl100k_base")
_VOCAB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_encodings_lock = threading.Lock()


def _openai_encoding(model: str) -> Any:
    """tiktoken's encoding for ``model``, or None (tiktoken missing; a model on another
    vocabulary: tiktoken would try to download it, which a budget check must never do)."""
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:  # a model tiktoken does not know yet: the current vocabulary
        name = "o200k_base"
    if name not in _VOCABULARIES:
        return None
    loaded = _ENCODINGS.get(name)
    if loaded is not None:
        return loaded
    with _encodings_lock:
        if not _seed_tiktoken_cache(name):
            return None
        try:
            loaded = _ENCODINGS[name] = tiktoken.get_encoding(name)
        except Exception as exc:  # a damaged cache file: tiktoken checks the digest
            log.debug("tiktoken could not load %s (%s); using the heuristic", name, exc)
            return None
    return loaded


_ENCODINGS: dict[str, Any] = {}


def _seed_tiktoken_cache(name: str) -> bool:
    """Put the shipped vocabulary where tiktoken keeps its download of it (its cache:
    ``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or ``<tmp>/data-gym-cache``), if absent."""
    import gzip
    import hashlib
    import tempfile

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # caching turned off: tiktoken would download
        return False
    url = _VOCAB_URL.format(name)
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return True
    shipped = Path(__file__).parent.parent / "tokenizers" / f"{name}.tiktoken.gz"
    tmp = None
    try:
        data = gzip.decompress(shipped.read_bytes())
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except (OSError, EOFError) as exc:
        log.debug("could not place the %s vocabulary in tiktoken's cache (%s)", name, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
    return True
