"""A loopback "catch" server for the key-origin tests: it records every request it gets
(request line, headers and body, as raw bytes) and answers like an OpenAI-compatible
provider, so that a test can assert that a planted canary key never reached it, or that
a key bound to it did."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHAT_ANSWER = {
    "id": "chatcmpl-caught",
    "object": "chat.completion",
    "model": "caught-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "caught"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Catch:
    """One listener on 127.0.0.1 at an ephemeral port."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        catch = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                head = f"{self.requestline}\r\n{self.headers}".encode("latin-1")
                catch.raw.append(head + body)
                catch.paths.append(self.path)
                catch.bodies.append(body)

            def _answer(self, data: object) -> None:
                payload = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._record()
                self._answer({"object": "list", "data": [{"id": "caught-model"}]})

            def do_POST(self) -> None:
                self._record()
                try:
                    streamed = json.loads(catch.bodies[-1])["stream"]
                except (ValueError, KeyError, IndexError, TypeError):
                    streamed = False
                if streamed is not True:
                    self._answer(CHAT_ANSWER)
                    return
                chunk = {
                    "id": "chatcmpl-caught",
                    "object": "chat.completion.chunk",
                    "model": "caught-model",
                    "choices": [
                        {"index": 0, "delta": {"content": "caught"}, "finish_reason": "stop"}
                    ],
                }
                usage = {**chunk, "choices": [], "usage": CHAT_ANSWER["usage"]}
                events = b"".join(
                    b"data: " + json.dumps(e).encode() + b"\n\n" for e in (chunk, usage)
                )
                events += b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(events)))
                self.end_headers()
                self.wfile.write(events)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def received(self, secret: str) -> bool:
        """Whether ``secret`` appeared anywhere in what this server received."""
        needle = secret.encode()
        return any(needle in raw for raw in self.raw)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve() -> Iterator[Catch]:
    """A catch server for a fixture's lifetime (``yield from serve()``)."""
    catch = Catch()
    try:
        yield catch
    finally:
        catch.close()
