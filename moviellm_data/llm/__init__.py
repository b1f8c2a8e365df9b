"""Chat client for any OpenAI-compatible endpoint: structured output, retries, cache, cost.

- :mod:`.client`: :class:`ChatClient` / :class:`ChatSettings` / :class:`ChatCall` (validated answers);
- :mod:`.cache`: the SQLite answer cache; :mod:`.cost`: prices, usage, the spending guard;
- :mod:`.retry`: backoff and Retry-After; :mod:`.redact`: secrets out of every message;
- :mod:`.options`: the default endpoint and API-key lookup shared by command-line users of the client.

Importing this package does not import ``openai``; opening a :class:`ChatClient` does.
"""

from .cache import ResponseCache
from .client import BudgetSpent, ChatCall, ChatClient, ChatResult, ChatSettings, LLMFatalError, RequestFailed
from .cost import Price, Usage, price_for
from .retry import RetryPolicy

__all__ = [
    "BudgetSpent", "ChatCall", "ChatClient", "ChatResult", "ChatSettings", "LLMFatalError", "Price", "RequestFailed",
    "ResponseCache", "RetryPolicy", "Usage", "price_for",
]
