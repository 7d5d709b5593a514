"""A call is acknowledged only once its ledger row is committed, on every path (issue 15,
section 3: over 8 SIGKILLed server runs and ~7,600 acknowledged calls, one had no row).

The server used to hand its rows to the ledger's writer thread and answer at once
(write-behind): a SIGKILL between the reply and the writer's COMMIT lost the row of a call
the client had been told about. Now every path waits for the COMMIT before it answers: a
real server process, and the in-process engine in a script (its own writer thread, the
per-loop-turn batches, a single call, streams), are killed with SIGKILL in the middle of
concurrent calls, and every acknowledged call must have its row.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from ledger_faults import ServerProcess, events

from jupyter_byok.testing import FakeProviders

KEY = "sk-proj-" + "K" * 40 + "T3BlbkFJ" + "k" * 20
MODEL = "openai:gpt-4o-mini"
CLIENTS = 16


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in conn.execute("SELECT id FROM attempts")}


def call(server: ServerProcess, conn: http.client.HTTPConnection, prompt: str, stream: bool) -> str:
    """One call; returns the ledger id the server acknowledged (raises if it did not)."""
    code, body = server.request(
        "POST", "/byok/complete", {"model": MODEL, "prompt": prompt, "stream": stream}, conn=conn
    )
    assert code == 200, body
    if stream:
        kind, done = events(body)[-1]
        assert kind == "done", body
        return str(done["ledger_id"])
    return str(json.loads(body)["ledger_id"])


class Clients:
    """CLIENTS threads calling the server in a loop (half streamed) until it dies."""

    def __init__(self, server: ServerProcess, target: int) -> None:
        self.server, self.target = server, target
        self.acked: list[str] = []
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]

    def run(self, i: int) -> None:
        conn = self.server.connection()
        n = 0
        while True:
            try:
                ledger_id = call(self.server, conn, f"client {i} call {n}", (i + n) % 2 == 1)
            except (OSError, http.client.HTTPException, ValueError):
                return  # the server was killed: this call was not acknowledged
            with self.lock:
                self.acked.append(ledger_id)
                if len(self.acked) >= self.target:
                    self.reached.set()
            n += 1

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(timeout=60)


def test_sigkilled_server_loses_no_acknowledged_call(
    fake_providers: FakeProviders, tmp_path: Path
) -> None:
    rng = random.Random(15)
    home = tmp_path / "home"
    env = {**fake_providers.env(), "JUPYTER_BYOK_HOME": str(home), "OPENAI_API_KEY": KEY}
    acked: list[str] = []
    for _ in range(3):
        with ServerProcess(tmp_path, env) as server:
            # killed after a random number of acknowledged calls, with 16 calls in flight
            with Clients(server, target=rng.randrange(100, 400)) as clients:
                assert clients.reached.wait(60), server.output()[-2000:]
                server.kill()
            assert len(clients.acked) >= clients.target
            acked += clients.acked
    stored = stored_ids(home / "ledger.sqlite3")
    assert set(acked) - stored == set(), "acknowledged calls without a ledger row"
    assert len(set(acked)) == len(acked) >= 300


class Acks(list[str]):
    """Acknowledged ledger ids, and an event set by the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()

    def add(self, ledger_id: str) -> None:
        self.append(ledger_id)
        self.first.set()

    def wait(self, timeout: float) -> bool:
        return self.first.wait(timeout)


def stream_one(server: ServerProcess, prompt: str, texts: threading.Semaphore, acked: Acks) -> None:
    """A streamed call read as it comes: ``texts`` is released at its first piece of text
    (the provider has answered), ``acked`` gets its ledger id at its end (acknowledged)."""
    conn = server.connection()
    try:
        conn.request(
            "POST",
            "/byok/complete",
            body=json.dumps({"model": MODEL, "prompt": prompt, "stream": True}),
            headers={"Authorization": f"token {server.token}"},
        )
        response = conn.getresponse()
        assert response.status == 200
        body = b""
        while line := response.readline():
            body += line
            if line.startswith(b"event: delta"):
                texts.release()
            if body.endswith(b"\n\n") and b"event: done" in body:
                acked.add(events(body)[-1][1]["ledger_id"])
                return
    except (OSError, http.client.HTTPException):
        return


def test_the_server_answers_only_after_the_commit(
    fake_providers: FakeProviders, tmp_path: Path
) -> None:
    """The ack-before-commit path, made visible: while another process holds the ledger's
    write lock, the provider has answered and the streams have their text, but no call is
    acknowledged; killed then, no client was told about a row that does not exist. Released,
    every call is acknowledged with its row."""
    home = tmp_path / "home"
    env = {**fake_providers.env(), "JUPYTER_BYOK_HOME": str(home), "OPENAI_API_KEY": KEY}
    path = home / "ledger.sqlite3"
    with ServerProcess(tmp_path, env) as server:
        first = call(server, server.connection(), "first", False)
        for phase in ("released", "killed"):
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the writer's COMMIT must wait for this
            acked = Acks()
            texts = threading.Semaphore(0)
            threads = [
                threading.Thread(target=stream_one, args=(server, f"{phase} {i}", texts, acked))
                for i in range(8)
            ]
            for t in threads:
                t.start()
            for _ in threads:
                assert texts.acquire(timeout=30), server.output()[-2000:]
            # every answer is in; an acknowledgement now would come before its COMMIT
            assert not acked.wait(0.5), "a call was acknowledged before its row was committed"
            if phase == "released":
                holder.execute("ROLLBACK")
                for t in threads:
                    t.join(timeout=30)
                assert len(acked) == 8
                assert set(acked) <= stored_ids(path)
            else:
                server.kill()
                holder.execute("ROLLBACK")
                for t in threads:
                    t.join(timeout=30)
                assert acked == []
            holder.close()
    assert len(stored_ids(path)) == 1 + 8 and first in stored_ids(path)


ENGINE_SCRIPT = r"""
import asyncio, os, sys, threading
import jupyter_byok
from jupyter_byok.engine import Engine, get_engine
from jupyter_byok.types import Message, Request

MODEL = "openai:gpt-4o-mini"
server_like = Engine(offload=True)  # the server's write path: the ledger's writer thread
out = threading.Lock()

def ack(ledger_id):
    with out:  # one line per acknowledged call, written as soon as the call returned
        os.write(1, (ledger_id + "\n").encode())

async def worker(i):
    n = 0
    while True:
        request = Request(model=MODEL, messages=[Message("user", f"w{i} {n}")])
        if i % 3 == 0:
            done = await server_like.acomplete(request)
        elif i % 3 == 1:  # several in flight on one loop: the per-turn batches
            done = await jupyter_byok.acomplete(MODEL, f"w{i} {n}")
        else:
            async for item in get_engine().astream(request):
                done = item
        ack(done.ledger_id)
        n += 1

def alone():  # one call at a time in its own thread: the single-row commit
    while True:
        ack(jupyter_byok.complete(MODEL, "alone").ledger_id)

threading.Thread(target=alone, daemon=True).start()

async def main():
    await asyncio.gather(*(worker(i) for i in range(15)))

asyncio.run(main())
"""


def test_sigkilled_engine_in_a_script_loses_no_acknowledged_call(
    fake_providers: FakeProviders, tmp_path: Path
) -> None:
    rng = random.Random(7)
    home = tmp_path / "home"
    env = {
        **os.environ, **fake_providers.env(), "JUPYTER_BYOK_HOME": str(home),
        "OPENAI_API_KEY": KEY,
    }  # fmt: skip
    acked: list[str] = []
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE_SCRIPT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        target, lines = rng.randrange(100, 600), []
        try:
            while len(lines) < target:
                line = proc.stdout.readline()
                assert line, proc.stderr.read().decode() if proc.stderr else ""
                lines.append(line)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)  # what it acknowledged before it died
        lines += rest.splitlines(keepends=True)
        acked += [x.decode().strip() for x in lines if len(x.strip()) == 32]
    stored = stored_ids(home / "ledger.sqlite3")
    assert set(acked) - stored == set(), "acknowledged calls without a ledger row"
    assert len(acked) >= 500
