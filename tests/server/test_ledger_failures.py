"""Paid calls are never unrecorded (issue 15, section 3), with write failures injected for
real at the OS/SQLite boundary (see ``ledger_faults``): a full tmpfs, ``RLIMIT_FSIZE``, a
read-only bind mount, a ledger file replaced by a directory, a file that is not a database.

The promise: a call is sent only while the ledger is known to take its row (else refused,
unsent, in one line saying why, where the ledger is and how much space is free); a write that
fails after the provider answered returns the answer with a loud warning and keeps the row
pending in memory until it is written; every failed write is logged and shown in
``/byok/status``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ledger_faults import ServerProcess, events, fill, read_only_bind, tmpfs

import jupyter_byok
from jupyter_byok import ledger as ledger_mod
from jupyter_byok.errors import LedgerUnavailableError
from jupyter_byok.testing import FakeProviders

KEY = "sk-proj-" + "F" * 40 + "T3BlbkFJ" + "g" * 20
MODEL = "openai:gpt-4o-mini"


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM attempts")}


def sent(fake: FakeProviders) -> list[str]:
    """The prompts the fake provider received, in order."""
    return [r.body["messages"][-1]["content"] for r in fake.requests_for("openai")]


def one_line_refusal(message: str, path: Path) -> None:
    assert "\n" not in message
    assert message.startswith(f"not sending {MODEL}: the usage ledger {path}")
    assert " free" in message and "retry" in message


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # each call checks the ledger now (the remembered state is trusted for check_every_s)
    monkeypatch.setattr(ledger_mod.Ledger, "check_every_s", 0.0)


@pytest.fixture
def close_ledger() -> Any:
    """The process-wide ledger is closed after the test (its files may be on a mount)."""
    yield
    ledger_mod.default_ledger().close()


# ------------------------------------ RLIMIT_FSIZE: an I/O error after the answer came
SCRIPT = r"""
import json, os, resource, sys
import jupyter_byok
from jupyter_byok import ledger as L
from jupyter_byok.errors import LedgerUnavailableError

L.Ledger.check_every_s = 0.0  # each call checks the ledger now
out = {}
first = jupyter_byok.complete("openai:gpt-4o-mini", "first")
out["first"] = [first.ledger_id, first.warnings]
path = L.default_ledger().path
# the kernel refuses to grow any file of this process past its current size (EFBIG)
limit = max(os.path.getsize(p) for p in (path, path.with_name(path.name + "-wal")))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
second = jupyter_byok.complete("openai:gpt-4o-mini", "second")
out["second"] = [second.text, second.ledger_id, second.warnings, str(second.cost_usd)]
try:
    jupyter_byok.complete("openai:gpt-4o-mini", "third")
    out["third"] = ["sent"]
except LedgerUnavailableError as exc:
    out["third"] = ["refused", str(exc)]
out["health"] = L.ledger_health()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
fourth = jupyter_byok.complete("openai:gpt-4o-mini", "fourth")
out["fourth"] = [fourth.ledger_id, fourth.warnings]
out["health_after"] = L.ledger_health()
out["path"] = str(path)
print(json.dumps(out))
"""


def run_fsize_script(fake: FakeProviders, home: Path) -> None:
    """A script (no server) whose ledger writes start failing (RLIMIT_FSIZE) after its first
    call: the answer already paid for is returned with a warning and its row kept until
    the limit is lifted; meanwhile calls are refused unsent."""
    env = {**os.environ, **fake.env(), "JUPYTER_BYOK_HOME": str(home), "OPENAI_API_KEY": KEY}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    path = Path(out["path"])
    assert out["first"][1] == []
    text, second_id, warnings, cost = out["second"]
    assert text == "Echo: second" and cost != "None"  # the answer, not thrown away
    [warning] = warnings
    assert warning.startswith("ledger: this call was NOT recorded") and str(path) in warning
    # SQLite reports the kernel's EFBIG as an I/O error (SQLITE_IOERR_WRITE)
    assert "(disk I/O error)" in warning and "\n" not in warning
    assert out["third"][0] == "refused"
    one_line_refusal(out["third"][1], path)
    assert "1 row(s) kept in memory still cannot be written" in out["third"][1]
    assert sent(fake) == ["first", "second", "fourth"]  # the third was never sent
    health = out["health"]
    assert health["pending"] == 1 and not health["writable"] and health["failed_writes"] >= 2
    assert health["last_error"] == "disk I/O error"
    assert Decimal(health["pending_cost_usd"]) == Decimal(cost)
    assert out["fourth"][1] == []
    after = out["health_after"]
    assert after["pending"] == 0 and after["writable"] and after["error"] is None
    # every answered call has its row, the one kept pending included
    assert {out["first"][0], second_id, out["fourth"][0]} == stored_ids(path)
    # every failed write was logged
    assert "could not write 1 usage row(s) to" in done.stderr
    assert "wrote 1 usage row(s) kept pending" in done.stderr


def test_write_failing_after_the_answer_returns_it_and_keeps_the_row(
    fake_providers: FakeProviders, byok_home: Path
) -> None:
    run_fsize_script(fake_providers, byok_home)


# ------------------------------------------------------------ a real full disk (tmpfs)
def test_full_disk_in_a_script_refuses_before_sending(
    fake_providers: FakeProviders,
    tmp_path: Path,
    byok_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    env_key: None,
    close_ledger: None,
) -> None:
    folder = tmp_path / "ledger-fs"
    with tmpfs(folder, "1m") as mounted:
        if not mounted:  # no mount rights here: the disk fills through RLIMIT_FSIZE instead
            run_fsize_script(fake_providers, byok_home)
            return
        monkeypatch.setenv("JUPYTER_BYOK_LEDGER_DIR", str(folder))
        path = folder / "ledger.sqlite3"
        first = jupyter_byok.complete(MODEL, "first")
        assert ledger_mod.default_ledger().path == path and stored_ids(path) == {first.ledger_id}
        filler = fill(folder)
        for _ in range(3):
            with pytest.raises(LedgerUnavailableError) as info:
                jupyter_byok.complete(MODEL, "second")
            one_line_refusal(str(info.value), path)
            assert "its disk is full; 0 B free of 1.0 MiB" in str(info.value)
        assert sent(fake_providers) == ["first"]  # nothing sent, nothing billed
        health = ledger_mod.ledger_health()
        assert not health["writable"] and health["free_bytes"] == 0 and health["pending"] == 0
        filler.unlink()
        third = jupyter_byok.complete(MODEL, "third")
        assert third.warnings == [] and sent(fake_providers) == ["first", "third"]
        assert stored_ids(path) == {first.ledger_id, third.ledger_id}
        ledger_mod.default_ledger().close()


# -------------------------------------------------------------- a read-only folder


def test_read_only_folder_refuses_before_sending(
    fake_providers: FakeProviders,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env_key: None,
    close_ledger: None,
) -> None:
    folder = tmp_path / "ledger-ro"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_DIR", str(folder))
    path = folder / "ledger.sqlite3"
    first = jupyter_byok.complete(MODEL, "first")
    ledger_mod.default_ledger().close()  # a read-only remount needs no file open for writing
    with read_only_bind(folder) as read_only:
        if read_only:  # a read-only bind mount: the kernel refuses every write (root included)
            with pytest.raises(LedgerUnavailableError) as info:
                jupyter_byok.complete(MODEL, "second")
            ledger_mod.default_ledger().close()
    if read_only:
        one_line_refusal(str(info.value), path)
        assert "its file system is read-only" in str(info.value)
        assert sent(fake_providers) == ["first"]
        assert stored_ids(path) == {first.ledger_id}
        third = jupyter_byok.complete(MODEL, "third")  # writable again: sent and recorded
        assert stored_ids(path) == {first.ledger_id, third.ledger_id}
        return
    if os.geteuid() != 0:  # without mount rights and not root: permissions do stop writes
        folder.chmod(0o500)
        path.chmod(0o400)
        try:
            with pytest.raises(LedgerUnavailableError) as info:
                jupyter_byok.complete(MODEL, "second")
        finally:
            folder.chmod(0o700)
        one_line_refusal(str(info.value), path)
        assert sent(fake_providers) == ["first"]
        return
    # root without mount rights: a forked child that drops to another user (nobody), for
    # whom the folder is read-only, in a tree it can walk (everything it runs is imported)
    base = Path(tempfile.mkdtemp(prefix="byok-ro-"))
    try:
        base.chmod(0o755)
        ro, home = base / "ledger", base / "home"
        shutil.copytree(folder, ro)
        home.mkdir(mode=0o700)
        for p in (ro, ro / "ledger.sqlite3", home):
            os.chown(p, 65534, 65534)
        ro.chmod(0o500)
        (ro / "ledger.sqlite3").chmod(0o400)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            verdict = ["error", "child failed"]
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.environ.update(
                    {"JUPYTER_BYOK_HOME": str(home), "JUPYTER_BYOK_LEDGER_DIR": str(ro)}
                )
                try:
                    jupyter_byok.complete(MODEL, "read-only")
                    verdict = ["sent", ""]
                except LedgerUnavailableError as exc:
                    verdict = ["refused", str(exc)]
                except BaseException as exc:
                    verdict = ["error", repr(exc)]
            finally:
                os.write(w, json.dumps(verdict).encode())
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as pipe:
            verdict = json.loads(pipe.read())
        os.waitpid(pid, 0)
        assert verdict[0] == "refused", verdict
        one_line_refusal(verdict[1], ro / "ledger.sqlite3")
        assert sent(fake_providers) == ["first"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------- I/O errors: the file is not a ledger
def test_ledger_replaced_by_a_directory_refuses_before_sending(
    fake_providers: FakeProviders, byok_home: Path, env_key: None, close_ledger: None
) -> None:
    first = jupyter_byok.complete(MODEL, "first")
    path = ledger_mod.default_ledger().path
    aside = path.with_name("aside.sqlite3")
    # the file the open connection writes to is moved away and a directory takes its name:
    # rows written through the old connection would go to a file nobody reads
    path.rename(aside)
    path.mkdir()
    with pytest.raises(LedgerUnavailableError) as info:
        jupyter_byok.complete(MODEL, "second")
    one_line_refusal(str(info.value), path)
    assert "it cannot be opened" in str(info.value)
    assert sent(fake_providers) == ["first"]
    health = ledger_mod.ledger_health()
    assert not health["writable"] and health["error"] and health["path"] == str(path)
    path.rmdir()
    aside.rename(path)
    third = jupyter_byok.complete(MODEL, "third")
    assert stored_ids(path) == {first.ledger_id, third.ledger_id}


def test_corrupt_ledger_in_a_script_refuses_before_sending(
    fake_providers: FakeProviders, byok_home: Path, env_key: None, close_ledger: None
) -> None:
    path = ledger_mod.ledger_path(byok_home)
    byok_home.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(os.urandom(8192))
    with pytest.raises(LedgerUnavailableError) as info:
        jupyter_byok.complete(MODEL, "hello")
    one_line_refusal(str(info.value), path)
    assert "file is not a database" in str(info.value)
    assert sent(fake_providers) == []


def test_a_write_error_keeps_a_provider_error_and_its_row(
    fake_providers: FakeProviders, byok_home: Path, env_key: None, close_ledger: None
) -> None:
    """A provider error whose row cannot be written is still raised as itself (the row
    kept pending), not replaced by a ledger error."""
    from jupyter_byok.errors import QuotaExceededError

    jupyter_byok.complete(MODEL, "first")
    led = ledger_mod.default_ledger()
    # the rows table cannot take this row now: another connection holds the write lock
    # past the busy timeout (SQLITE_BUSY), a real failure of the file
    led.busy_timeout_ms = 50
    led.close()
    holder = sqlite3.connect(led.path, isolation_level=None)
    fake_providers.add_fault("openai", "quota")
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(QuotaExceededError):  # the provider's own error, not the ledger's
            jupyter_byok.complete(MODEL, "second")
        assert led.health()["pending"] == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    third = jupyter_byok.complete(MODEL, "third")  # the pending row is written first
    assert third.warnings == [] and led.health()["pending"] == 0
    with sqlite3.connect(led.path) as conn:
        statuses = sorted(r[0] for r in conn.execute("SELECT status FROM attempts"))
    assert statuses == ["error", "ok", "ok"]


# --------------------------------------------------------------------- the server
@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


async def post(jp_fetch: Any, prompt: str, **extra: Any) -> tuple[int, Any]:
    response = await jp_fetch(
        "byok",
        "complete",
        method="POST",
        body=json.dumps({"model": MODEL, "prompt": prompt, **extra}),
        raise_error=False,
    )
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        return response.code, events(response.body)
    return response.code, json.loads(response.body)


async def status(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("byok", "status", method="GET")
    return json.loads(response.body)  # type: ignore[no-any-return]


async def test_server_full_disk_never_answers_200_without_a_row(
    fake_providers: FakeProviders,
    env_key: None,  # before the server starts: it binds environment keys to what it saw
    jp_fetch: Any,
    tmp_path: Path,
    byok_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    close_ledger: None,
) -> None:
    """Issue 15's reproduction: the ledger on a 1 MiB tmpfs that is then filled; 31 calls
    returned 200 and wrote 0 rows. Now each is refused unsent (503, one line) and the status
    says why."""
    folder = tmp_path / "ledger-fs"
    with tmpfs(folder, "1m") as mounted:
        if not mounted:  # no mount rights here: the same promise with RLIMIT_FSIZE
            run_server_fsize(fake_providers, tmp_path)
            return
        monkeypatch.setenv("JUPYTER_BYOK_LEDGER_DIR", str(folder))
        path = folder / "ledger.sqlite3"
        code, first = await post(jp_fetch, "first")
        assert code == 200 and stored_ids(path) == {first["ledger_id"]}
        filler = fill(folder)
        for i in range(31):
            # a stream is refused before its first piece: a JSON error as well
            code, body = await post(jp_fetch, f"full {i}", stream=i % 2 == 1)
            assert code == 503 and body["error"] == "LedgerUnavailableError", body
            message = body["message"]
            one_line_refusal(message, path)
            assert "its disk is full; 0 B free of 1.0 MiB" in message
        assert sent(fake_providers) == ["first"]
        data = await status(jp_fetch)
        assert "its disk is full" in data["ledger_error"] and str(path) in data["ledger_error"]
        assert data["ledger"]["pending"] == 0 and data["ledger"]["free_bytes"] == 0
        filler.unlink()
        code, again = await post(jp_fetch, "again")
        assert code == 200 and again["warnings"] == []
        assert stored_ids(path) == {first["ledger_id"], again["ledger_id"]}
        assert (await status(jp_fetch))["ledger_error"] is None
        ledger_mod.default_ledger().close()


async def test_server_corrupt_ledger_refuses_and_status_shows_it(
    fake_providers: FakeProviders,
    env_key: None,  # before the server starts: it binds environment keys to what it saw
    jp_fetch: Any,
    byok_home: Path,
    close_ledger: None,
) -> None:
    path = ledger_mod.ledger_path(byok_home)
    byok_home.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(b"not a ledger " * 1000)
    code, body = await post(jp_fetch, "hello")
    assert code == 503 and body["error"] == "LedgerUnavailableError"
    one_line_refusal(body["message"], path)
    assert sent(fake_providers) == []
    data = await status(jp_fetch)
    assert "file is not a database" in data["ledger_error"]
    assert str(path) in data["ledger_error"] and not data["ledger"]["writable"]


def run_server_fsize(fake: FakeProviders, root: Path) -> None:
    """A real server process whose ledger writes start failing (RLIMIT_FSIZE set on it from
    outside) after its first call: the answer is returned with a warning, the row kept
    pending and shown in the status, calls refused unsent, and the row written once the
    limit is lifted."""
    home = root / "server-home"
    env = {**fake.env(), "JUPYTER_BYOK_HOME": str(home), "OPENAI_API_KEY": KEY}
    with ServerProcess(root, env) as server:
        code, body = server.request("POST", "/byok/complete", {"model": MODEL, "prompt": "first"})
        assert code == 200, body
        first = json.loads(body)
        path = home / "ledger.sqlite3"
        limit = max(os.path.getsize(p) for p in (path, path.with_name(path.name + "-wal")))
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        code, body = server.request(
            "POST", "/byok/complete", {"model": MODEL, "prompt": "second", "stream": True}
        )
        assert code == 200
        kinds = [kind for kind, _ in events(body)]
        assert kinds[0] == "delta" and kinds[-1] == "done"
        second = events(body)[-1][1]
        assert second["text"] == "Echo: second"  # the answer paid for is delivered
        [warning] = second["warnings"]
        assert warning.startswith("ledger: this call was NOT recorded") and str(path) in warning
        data = json.loads(server.request("GET", "/byok/status")[1])
        assert data["ledger"]["pending"] == 1
        assert "1 row(s) kept in memory still cannot be written" in data["ledger_error"]
        code, body = server.request("POST", "/byok/complete", {"model": MODEL, "prompt": "third"})
        assert code == 503 and "not sending" in json.loads(body)["message"]
        assert sent(fake) == ["first", "second"]
        resource.prlimit(
            server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        data = json.loads(server.request("GET", "/byok/status")[1])  # re-checks: writes it
        assert data["ledger"]["pending"] == 0 and data["ledger_error"] is None
        assert stored_ids(path) == {first["ledger_id"], second["ledger_id"]}
        code, body = server.request("POST", "/byok/complete", {"model": MODEL, "prompt": "fourth"})
        assert code == 200 and json.loads(body)["warnings"] == []
        assert len(stored_ids(path)) == 3
        assert "could not write 1 usage row(s) to" in server.output()


def test_server_write_failing_after_the_answer_keeps_it_and_its_row(
    fake_providers: FakeProviders, tmp_path: Path
) -> None:
    run_server_fsize(fake_providers, tmp_path)


# ------------------------------------------------------------- cheap on the hot path
def test_the_check_is_remembered_between_calls(
    fake_providers: FakeProviders, byok_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within CHECK_EVERY_S the check is a clock read: no statvfs per call."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(ledger_mod.Ledger, "check_every_s", 3600.0)
    jupyter_byok.complete(MODEL, "opens the ledger")
    calls: list[str] = []
    real = os.statvfs
    lock = threading.Lock()

    def counting(path: Any) -> Any:
        with lock:
            calls.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "statvfs", counting)
    for i in range(20):
        jupyter_byok.complete(MODEL, f"call {i}")
    assert calls == []
    monkeypatch.setattr(ledger_mod.Ledger, "check_every_s", 0.0)
    jupyter_byok.complete(MODEL, "now it checks")
    assert len(calls) == 1
