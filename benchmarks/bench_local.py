"""Generated tokens/s through jupyter_byok's local provider versus raw ``llama_cpp.Llama``.

Both sides use the embedded SmolLM2 model with the same settings (n_threads, n_ctx, seed,
temperature 0, the same sampling defaults, end-of-generation tokens pushed away so both
generate exactly ``--max-tokens`` tokens). Runs are interleaved, alternating which side goes
first, and the median of each is reported as a ratio (target: >= 0.95), with the time to
first token of streamed calls.

    .venv/bin/python benchmarks/bench_local.py            # 7 runs of 128 tokens
    .venv/bin/python benchmarks/bench_local.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_local.py --buffers  # what extra buffer types buy here

Both sides load through the same crash guard (``local.guarded_llama`` for raw llama-cpp),
so they use the same buffer types. ``--buffers`` measures what turning llama.cpp's extra
buffer types (weight repacking; the AMX backend where present) off costs on this machine:
prompt processing and generation, raw llama-cpp with them on versus off, and the one-time
probe.

"Ours" is the path users take: ``jupyter_byok.complete("local:smollm2", ...)`` and
``jupyter_byok.stream(...)``, through the engine (ledger row, pricing, budgets included), with
its state in a temporary ``JUPYTER_BYOK_HOME``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _home import use_home

import jupyter_byok
from jupyter_byok.providers import local
from jupyter_byok.types import Message

MESSAGES = [Message("user", "Write a long story about a lighthouse keeper and a storm.")]
TARGET = 0.95


def _raw_model(n_ctx: int, n_threads: int) -> tuple[Any, dict[int, float]]:
    import llama_cpp

    raw = local.guarded_llama(
        local.embedded_model_path(),
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
    vocab = raw._model.vocab
    eog = [t for t in range(raw.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    return raw, {t: -1e9 for t in eog}


def buffers_cost(n_threads: int, runs: int) -> int:
    """Raw llama-cpp with extra buffer types on versus off: prompt and generation tokens/s."""
    from jupyter_byok.providers.local import _guard

    path = local.embedded_model_path()
    started = time.perf_counter()
    died = _guard.run_probe_child(path, True)
    probe_s = time.perf_counter() - started
    if died is not None:
        print(
            f"extra buffer types crash llama.cpp here (probe died from {died}): nothing to compare"
        )
        return 0
    models: dict[str, Any] = {}
    for label, extra in (("on", True), ("off", False)):
        with _guard.model_params(extra):
            import llama_cpp

            models[label] = llama_cpp.Llama(
                str(path),
                n_ctx=2048,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=False,
            )
    prompt = models["on"].tokenize(("The lighthouse keeper watched the storm. " * 60).encode())
    prompt_rates: dict[str, list[float]] = {"on": [], "off": []}
    gen_rates: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(runs):
        for label in ("on", "off") if i % 2 == 0 else ("off", "on"):
            llama = models[label]
            llama.reset()
            t0 = time.perf_counter()
            llama.eval(prompt)
            prompt_rates[label].append(len(prompt) / (time.perf_counter() - t0))
            llama.reset()
            t0 = time.perf_counter()
            out = llama.create_completion(
                "Once upon a time",
                max_tokens=128,
                temperature=0.0,
                logit_bias={
                    t: -1e9
                    for t in range(llama.n_vocab())
                    if llama_cpp.llama_vocab_is_eog(llama._model.vocab, t)
                },
            )
            gen_rates[label].append(out["usage"]["completion_tokens"] / (time.perf_counter() - t0))
    print(
        f"extra buffer types on this machine (AMX present: "
        f"{local.amx_present(local.system_info())}), n_threads={n_threads}, "
        f"median of {runs} interleaved runs"
    )
    for label in ("on", "off"):
        print(
            f"  extra buffers {label:<3}  prompt {statistics.median(prompt_rates[label]):8.1f} "
            f"tokens/s   generation {statistics.median(gen_rates[label]):6.1f} tokens/s"
        )
    for kind, rates in (("prompt", prompt_rates), ("generation", gen_rates)):
        ratio = statistics.median(rates["off"]) / statistics.median(rates["on"])
        print(f"  off/on ratio ({kind}): {ratio:.3f}")
    print(f"  one probe (child process, extra buffers on): {probe_s:.2f} s, died: {died}")
    for llama in models.values():
        llama.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 32 tokens (smoke test)")
    parser.add_argument("--runs", type=int, default=7, help="runs per variant (default 7)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=local.physical_cores())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 when below the target")
    parser.add_argument("--buffers", action="store_true", help="extra buffer types on vs off")
    args = parser.parse_args(argv)
    if args.buffers:
        return buffers_cost(args.threads, max(args.runs, 5))
    use_home(tempfile.mkdtemp(prefix="byok-bench-"))
    runs, max_tokens = (2, 32) if args.quick else (max(args.runs, 5), args.max_tokens)

    raw, logit_bias = _raw_model(args.n_ctx, args.threads)
    chat = [m.to_dict() for m in MESSAGES]
    raw_kwargs: dict[str, Any] = {
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "seed": args.seed,
        "logit_bias": logit_bias,
    }
    params: dict[str, Any] = {
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "seed": args.seed,
        "ignore_eos": True,
        "n_ctx": args.n_ctx,
        "n_threads": args.threads,
    }

    def raw_complete() -> tuple[int, float | None]:
        out = raw.create_chat_completion(chat, **raw_kwargs)
        return int(out["usage"]["completion_tokens"]), None

    def ours_complete() -> tuple[int, float | None]:
        answer = jupyter_byok.complete("local:smollm2", MESSAGES, feature="benchmark", **params)
        return answer.usage.output_tokens, None

    def raw_stream() -> tuple[int, float | None]:
        started, ttft = time.perf_counter(), None
        for chunk in raw.create_chat_completion(chat, stream=True, **raw_kwargs):
            if ttft is None and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
        return max_tokens, ttft  # raw streams carry no usage; ignore_eos makes it max_tokens

    def ours_stream() -> tuple[int, float | None]:
        started, ttft = time.perf_counter(), None
        stream = jupyter_byok.stream("local:smollm2", MESSAGES, feature="benchmark", **params)
        for text in stream:
            if ttft is None and text:
                ttft = time.perf_counter() - started
        return stream.completion.usage.output_tokens, ttft

    variants: dict[str, Callable[[], tuple[int, float | None]]] = {
        "raw complete": raw_complete,
        "ours complete": ours_complete,
        "raw stream": raw_stream,
        "ours stream": ours_stream,
    }
    for fn in variants.values():  # warm up: load, first-eval allocations
        fn()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    ttfts: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        pairs = [("raw complete", "ours complete"), ("raw stream", "ours stream")]
        for pair in pairs:
            for name in pair if i % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                tokens, ttft = variants[name]()
                elapsed = time.perf_counter() - started
                if tokens != max_tokens:
                    print(f"{name}: generated {tokens} tokens, expected {max_tokens}")
                    return 2
                rates[name].append(tokens / elapsed)
                if ttft is not None:
                    ttfts[name].append(ttft)

    med = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"SmolLM2-135M-Instruct Q4_1, n_threads={args.threads}, n_ctx={args.n_ctx}, "
        f"{max_tokens} tokens, median of {runs} interleaved runs"
    )
    for name in variants:
        shown = f"  ttft {statistics.median(ttfts[name]) * 1000:6.1f} ms" if ttfts[name] else ""
        print(f"  {name:<14} {med[name]:7.1f} tokens/s{shown}")
    ratios = {
        "complete": med["ours complete"] / med["raw complete"],
        "stream": med["ours stream"] / med["raw stream"],
    }
    for kind, ratio in ratios.items():
        verdict = "ok" if ratio >= TARGET else f"BELOW target {TARGET}"
        print(f"  ratio ours/raw ({kind}): {ratio:.3f}  {verdict}")
    local.unload_all()
    raw.close()
    return 1 if args.check and min(ratios.values()) < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
