"""The upper-bound cost of a call before it is made, as budgets use it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..models import ModelRef
from ..types import DEFAULT_MAX_TOKENS, Message

__all__ = ["Estimate", "estimate_call"]


@dataclass(frozen=True)
class Estimate:
    """An upper bound for one call, as budgets use it (never sent anywhere)."""

    model: str
    input_tokens: int
    max_output_tokens: int
    cost_usd: Decimal | None

    def __str__(self) -> str:
        cost = "cost unknown (no price)" if self.cost_usd is None else f"at most ${self.cost_usd}"
        return (
            f"{self.model}: about {self.input_tokens:,} input tokens (an upper bound), up to "
            f"{self.max_output_tokens:,} output tokens: {cost}"
        )


def estimate_call(ref: ModelRef, messages: list[Message], max_tokens: int | None) -> Estimate:
    """The upper-bound cost of a call before it is made: the prompt through
    :func:`pricing.estimate_prompt_tokens` (tiktoken for OpenAI where its files are
    available, else a deliberately high bound) plus ``max_tokens`` of output."""
    from .. import pricing

    max_out = int(max_tokens or DEFAULT_MAX_TOKENS)
    if ref.provider == "tavily":
        return Estimate(ref.id, 0, 0, pricing.estimate_cost(ref.provider, ref.model, 0, 0))
    text = "\n".join(m.content for m in messages)
    tokens = pricing.estimate_prompt_tokens(text, provider=ref.provider, model=ref.model)
    tokens += 4 * max(len(messages) - 1, 0)
    return Estimate(
        ref.id, tokens, max_out, pricing.estimate_cost(ref.provider, ref.model, tokens, max_out)
    )
