"""A prompt as the engine sends it: :func:`build_messages`."""

from __future__ import annotations

from ..errors import ByokError
from ..types import Message

__all__ = ["build_messages"]


def build_messages(
    prompt: str | list[Message] | list[dict[str, str]], system: str | None = None
) -> list[Message]:
    """A prompt string or a list of messages (dicts or Message) -> list[Message]."""
    if isinstance(prompt, str):
        messages = [Message("user", prompt)]
    else:
        messages = []
        for item in prompt:
            if isinstance(item, Message):
                messages.append(item)
            else:
                role = item.get("role", "user")
                if role not in ("system", "user", "assistant"):
                    raise ByokError(f"unknown message role {role!r}: use system, user or assistant")
                messages.append(Message(role, str(item.get("content", ""))))  # type: ignore[arg-type]
    if system:
        messages = [Message("system", system), *[m for m in messages if m.role != "system"]]
    return messages
