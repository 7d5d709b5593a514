"""Waiting for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``condition()`` is true, letting the loop run meanwhile; fail the test
    after ``timeout`` seconds. Checks every loop turn at first, then every 10 ms."""
    deadline = time.monotonic() + timeout
    turns = 0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        turns += 1
        await asyncio.sleep(0 if turns < 100 else 0.01)
