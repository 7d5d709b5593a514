"""The "Test" child: one short real ``local:`` call, timed; prints one JSON line.

Run as ``python -m jupyter_byok.local_models._trial NAME PROMPT MAX_TOKENS`` by
:func:`jupyter_byok.local_models.test_model`. The model loads here, in this short-lived
process, through the same guard and GPU decision as in a kernel.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    name, prompt, max_tokens = argv[0], argv[1], int(argv[2])
    from jupyter_byok.errors import ByokError
    from jupyter_byok.providers.local import complete_local, loaded_models
    from jupyter_byok.types import Message

    started = time.perf_counter()
    try:
        result = complete_local(
            name,
            [Message("user", prompt)],
            {"max_tokens": max_tokens, "temperature": 0.0, "seed": 7},
        )
    except ByokError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    total = time.perf_counter() - started
    ttft = result.ttft_s if result.ttft_s is not None else total
    tokens = result.usage.output_tokens
    generating = total - ttft
    rate = (tokens - 1) / generating if tokens > 1 and generating > 0 else tokens / total
    loaded = loaded_models()
    print(
        json.dumps(
            {
                "text": result.text.strip(),
                "prompt": prompt,
                "input_tokens": result.usage.input_tokens,
                "output_tokens": tokens,
                "tokens_per_s": round(rate, 1),
                "first_token_s": round(ttft, 3),
                "total_s": round(total, 3),
                "n_gpu_layers": loaded[0]["n_gpu_layers"] if loaded else None,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
