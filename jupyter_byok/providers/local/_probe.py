"""The probe child: load a model, decode a multi-token prompt, generate a few tokens.

Run as ``python -m jupyter_byok.providers.local._probe MODEL.gguf on|off`` by
:mod:`._guard`. Exit status 0 means llama.cpp survived; death by a signal is the crash the
guard looks for. It prints one JSON line with its timings, for ``doctor`` and debugging.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

# Long enough that llama.cpp decodes it as one multi-token batch, as every chat prompt is.
PROMPT = b"<|im_start|>user\nWhat is the capital of France? Answer in one word.<|im_end|>\n"


def main(argv: list[str]) -> int:
    path, extra = argv[0], argv[1] == "on"
    from ._files import physical_cores
    from ._guard import FAULT_ENV, model_params

    started = time.perf_counter()
    import llama_cpp

    with model_params(extra):
        llama = llama_cpp.Llama(
            model_path=path,
            n_ctx=256,
            n_threads=physical_cores(),
            n_threads_batch=physical_cores(),
            n_gpu_layers=0,
            verbose=False,
        )
    loaded = time.perf_counter()
    fault = os.environ.get(FAULT_ENV, "")
    if fault == "always" or (fault == "extra-buffers" and extra):
        os.kill(os.getpid(), signal.SIGSEGV)  # stands in for the AMX crash, where it happens
    tokens = llama.tokenize(PROMPT, add_bos=True, special=True)
    out: Any = llama.create_completion(prompt=tokens, max_tokens=4, temperature=0.0)
    print(
        json.dumps(
            {
                "prompt_tokens": len(tokens),
                "generated": out["usage"]["completion_tokens"],
                "load_s": round(loaded - started, 3),
                "total_s": round(time.perf_counter() - started, 3),
            }
        ),
        flush=True,
    )
    llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
