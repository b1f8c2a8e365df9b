"""Fixtures of the LLM writer tests: a fresh loopback OpenAI-compatible server per test."""

from __future__ import annotations

import pytest

from moviellm_data.llm.client import ChatSettings
from moviellm_data.llm.cost import Price
from moviellm_data.llm.retry import RetryPolicy

from .fake_openai import FakeOpenAI

# Small backoffs keep retry tests fast; they are options of the client, not patches of it.
FAST_RETRY = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)
PRICE = Price(input=1.0, output=2.0)


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def settings_for(fake: FakeOpenAI, **overrides) -> ChatSettings:
    """Client settings that talk to ``fake`` with fast retries and a known price."""
    values = dict(model="test-model", base_url=fake.url, api_key=fake.api_key, retry=FAST_RETRY, timeout=5.0,
                  concurrency=8, price=PRICE, max_repairs=2)
    values.update(overrides)
    return ChatSettings(**values)
