"""``python -m jupyter_byok.testing [--port N] [--latency S]``: run the fake providers."""

from __future__ import annotations

import argparse
import sys
import threading

from .fake import FakeProviders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_byok.testing",
        description="Loopback fake AI providers (OpenAI, xAI, Anthropic, Gemini, Tavily).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    with FakeProviders(port=args.port, latency=args.latency) as fake:
        for name, value in fake.env().items():
            print(f"export {name}={value}")
        print(f"# fake providers on {fake.url}; Ctrl-C stops them", file=sys.stderr)
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
