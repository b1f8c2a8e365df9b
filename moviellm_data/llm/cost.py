"""Token usage, prices and the spending guard.

Prices are US dollars per million tokens (input, output), list prices of OpenAI's API as of 2025; they
change, so every price can be overridden (``--price-per-mtok IN,OUT``). A model not in the table has an
unknown cost: tokens are still counted, and ``--max-cost`` then needs an explicit price.
"""

from __future__ import annotations

from dataclasses import dataclass

# (input, output) USD per 1M tokens. Longest matching prefix wins, so dated snapshots
# ("gpt-4o-2024-08-06") find their family.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o1-mini": (1.10, 4.40),
    "o1": (15.00, 60.00),
}


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


def parse_price(text: str) -> Price:
    """'IN,OUT' in USD per million tokens, e.g. '0.15,0.60'."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"expected IN,OUT dollars per million tokens such as 0.15,0.60, got {text!r}") from None
    if len(parts) != 2 or any(p < 0 for p in parts):
        raise ValueError(f"expected two non-negative numbers IN,OUT such as 0.15,0.60, got {text!r}")
    return Price(*parts)


def price_for(model: str, table: dict[str, tuple[float, float]] | None = None) -> Price | None:
    """The price of ``model`` from the table (longest matching prefix), or None when unknown."""
    table = DEFAULT_PRICES if table is None else table
    name = model.lower().split("/")[-1]  # "openai/gpt-4o" as some gateways spell it
    matches = [prefix for prefix in table if name == prefix or name.startswith(prefix + "-")]
    if not matches:
        return None
    return Price(*table[max(matches, key=len)])


@dataclass
class Usage:
    """Requests and tokens of some work, with their cost (None when the price is unknown)."""

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.cached += other.cached
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost = None if self.cost is None or other.cost is None else self.cost + other.cost

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def summary(self) -> str:
        cost = "cost unknown (no price for this model)" if self.cost is None else f"${self.cost:.4f}"
        return (f"{self.requests} requests ({self.cached} answers from cache), {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, {cost}")

    def to_dict(self) -> dict:
        return {"requests": self.requests, "cached": self.cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost}


class BudgetExceeded(Exception):
    """No more requests may be sent: the spending limit is reached."""


@dataclass
class CostMeter:
    """Counts what a run spent and refuses requests that could take it past ``max_cost``.

    A request reserves a deliberately high estimate of its cost before it is sent (prompt tokens at 3
    characters each, where English averages about 4; completion tokens as many as the longest answer so
    far, 1,000 before the first), so many concurrent requests cannot jointly overshoot the budget
    unless an answer is longer than every one before it. The reservation is replaced by the real cost
    when the answer arrives.
    """

    price: Price | None
    max_cost: float | None = None
    spent: float = 0.0
    reserved: float = 0.0
    longest_completion: int = 0

    def __post_init__(self) -> None:
        if self.max_cost is not None and self.price is None:
            raise ValueError("a cost limit needs a price for the model")

    def estimate(self, prompt_chars: int, max_tokens: int | None) -> float:
        if self.price is None:
            return 0.0
        expected_out = self.longest_completion or 1000
        if max_tokens:
            expected_out = min(expected_out, max_tokens)
        return self.price.cost(prompt_chars // 3 + 1, expected_out)

    def reserve(self, estimate: float) -> None:
        """Book ``estimate`` for a request about to be sent; raise BudgetExceeded when it does not fit."""
        if self.max_cost is not None and self.spent + self.reserved + estimate > self.max_cost:
            raise BudgetExceeded(
                f"the --max-cost budget of ${self.max_cost:g} is spent (${self.spent:.4f} so far); "
                "rerun with a larger --max-cost to continue, answers so far are cached"
            )
        self.reserved += estimate

    def settle(self, estimate: float, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Replace a reservation by what the answer cost; returns that cost (None if the price is unknown)."""
        self.reserved = max(self.reserved - estimate, 0.0)
        self.longest_completion = max(self.longest_completion, completion_tokens)
        if self.price is None:
            return None
        cost = self.price.cost(prompt_tokens, completion_tokens)
        self.spent += cost
        return cost

    def release(self, estimate: float) -> None:
        """Drop a reservation whose request produced no billable answer."""
        self.reserved = max(self.reserved - estimate, 0.0)
