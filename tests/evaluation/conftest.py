"""Fixtures of the evaluation tests: the judge's API key in the environment, as a user would set it."""

from __future__ import annotations

import pytest

from .judge_support import SECRET


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return SECRET
