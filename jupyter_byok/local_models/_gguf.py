"""What a GGUF file is, read from its header with the ``gguf`` package, without loading it.

:func:`inspect_gguf` reads the metadata and the tensor table (through ``np.memmap``: only
the header pages are touched, whatever the model's size) and returns plain facts:
architecture, parameter count, quantization, context length, whether a chat template is
present, and an estimate of the memory needed to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LocalModelError

__all__ = ["inspect_gguf", "ram_estimate"]

#: The context the RAM estimate assumes: the local provider's default n_ctx.
ESTIMATE_N_CTX = 2048
_MiB = 1024**2


def _reader_class() -> type:
    """``gguf.GGUFReader`` that does not expand large arrays into per-element views.

    The stock reader builds one numpy view per vocabulary entry (tokens, merges, token
    types): several seconds for a 50k vocabulary, tens of seconds for 150k. We only need
    those arrays' lengths, so numeric arrays are read as one view and string arrays are
    walked by their length prefixes; every scalar and string field is read as usual.
    Tensors are kept as name and element count (no view over their data).
    """
    from gguf import GGUFReader, GGUFValueType

    class _HeaderReader(GGUFReader):
        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            offs = orig_offs
            raw_itype = self._get(offs, np.uint32)
            offs += 4
            alen = self._get(offs, np.uint64)
            offs += 8
            count = int(alen[0])
            itype = GGUFValueType(int(raw_itype[0]))
            types = [GGUFValueType.ARRAY, itype]
            nptype = self.gguf_scalar_to_np.get(itype)
            if nptype is not None:
                values = self._get(offs, nptype, count)
                return offs - orig_offs + int(values.nbytes), [raw_itype, alen, values], [2], types
            if itype == GGUFValueType.STRING:
                raw = memoryview(self.data.data)  # the memmap: reads only the pages it touches
                for _ in range(count):
                    offs += 8 + int.from_bytes(raw[offs : offs + 8], "little")
                return offs - orig_offs, [raw_itype, alen], [], types
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            # Names and element counts only: no memmap view over each tensor's data.
            tensors: list[Any] = [
                _Tensor(bytes(f.parts[1]).decode("utf-8", "replace"), int(np.prod(f.parts[3])))
                for f in fields
            ]
            self.tensors = tensors

    return _HeaderReader


class _Tensor:
    __slots__ = ("n_elements", "name")

    def __init__(self, name: str, n_elements: int) -> None:
        self.name, self.n_elements = name, n_elements


def _scalar(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.types:
        return None
    from gguf import GGUFValueType

    if field.types[0] == GGUFValueType.ARRAY:
        return None
    try:
        value = field.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return value.item() if hasattr(value, "item") else value


def _array_length(reader: Any, key: str) -> int | None:
    field = reader.fields.get(key)
    if field is None or len(field.parts) < 5:
        return None
    return int(field.parts[4][0])  # key length, key, type, item type, count


def _quantization(file_type: Any, path: Path) -> str | None:
    from gguf import LlamaFileType

    if isinstance(file_type, int):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    import re

    found = re.search(
        r"(?i)\b(I?Q\d_[A-Z0-9_]+|Q\d_\d|F16|BF16|F32)\b", path.name.replace(".", " ")
    )
    return found.group(1).upper() if found else None


def ram_estimate(size_bytes: int, facts: dict[str, Any], n_ctx: int = ESTIMATE_N_CTX) -> int:
    """Bytes needed to load the model with a context of ``n_ctx``: the weights, the KV
    cache (f16 keys and values for every layer), the logits buffer and a fixed margin for
    llama.cpp's compute buffers. An estimate, rounded up to the MiB."""
    layers = facts.get("block_count") or 0
    kv_width = facts.get("kv_width") or 0
    vocab = facts.get("vocab_size") or 0
    kv_cache = 2 * layers * n_ctx * kv_width * 2
    logits = vocab * 4 * 512
    total = size_bytes + kv_cache + logits + 64 * _MiB
    return -(-total // _MiB) * _MiB


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Facts about a GGUF file (raises :class:`LocalModelError` if it is not one)."""
    from ..providers.local import check_gguf

    check_gguf(path)
    try:
        reader = _reader_class()(str(path))
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise LocalModelError(
            f"{path.name} has a damaged GGUF header ({exc}): download it again"
        ) from exc
    arch = _scalar(reader, "general.architecture")
    prefix = f"{arch}." if isinstance(arch, str) else ""
    heads = _scalar(reader, f"{prefix}attention.head_count")
    heads_kv = _scalar(reader, f"{prefix}attention.head_count_kv") or heads
    embedding = _scalar(reader, f"{prefix}embedding_length")
    key_length = _scalar(reader, f"{prefix}attention.key_length")
    if not key_length and embedding and heads:
        key_length = int(embedding) // int(heads)
    parameters = int(sum(int(t.n_elements) for t in reader.tensors))
    file_type = _scalar(reader, "general.file_type")
    facts: dict[str, Any] = {
        "architecture": arch,
        "model_name": _scalar(reader, "general.name"),
        "size_label": _scalar(reader, "general.size_label"),
        "parameters": parameters,
        "quantization": _quantization(file_type, path),
        "context_length": _scalar(reader, f"{prefix}context_length"),
        "chat_template": "tokenizer.chat_template" in reader.fields,
        "block_count": _scalar(reader, f"{prefix}block_count"),
        "kv_width": int(heads_kv or 0) * int(key_length or 0),
        "vocab_size": _array_length(reader, "tokenizer.ggml.tokens"),
        "gguf_version": _scalar(reader, "GGUF.version"),
        "tensors": len(reader.tensors),
    }
    del reader
    size = path.stat().st_size
    facts["ram_estimate_bytes"] = ram_estimate(size, facts)
    return facts
