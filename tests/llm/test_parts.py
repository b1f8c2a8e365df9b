"""The LLM client's building blocks, without a server: redaction, Retry-After, prices, schemas, checks, prompts."""

from __future__ import annotations

import email.utils
import time

import pytest

from moviellm_data.errors import ConfigError
from moviellm_data.llm.cache import ResponseCache
from moviellm_data.llm.cost import BudgetExceeded, CostMeter, Price, parse_price, price_for
from moviellm_data.llm.jsonschema import AnswerInvalid, extract_json, strict_json_schema
from moviellm_data.llm.redact import Redactor, public_url, url_has_credentials
from moviellm_data.llm.retry import RetryPolicy, parse_retry_after
from moviellm_data.writers.story_answers import outline_model, outline_problems, prompt_problems, shots_model
from moviellm_data.prompts import load_prompts

KEY = "sk-proj-Zq81xYv0TESTKEYabcdef1234567890"


def test_redactor_masks_the_key_and_echoed_fragments():
    redact = Redactor(KEY)
    assert KEY not in redact(f"bad key {KEY}!")
    # Servers echo a prefix and the last characters of a key; both are fragments of it.
    echoed = f"Incorrect API key provided: {KEY[:8]}****{KEY[-6:]}"
    cleaned = redact(echoed)
    assert KEY[:8] not in cleaned and KEY[-6:] not in cleaned
    assert cleaned.startswith("Incorrect API key provided: ***")
    assert redact("nothing secret here") == "nothing secret here"


def test_urls_lose_credentials():
    assert public_url("https://user:pw@example.com:8443/v1/?api-key=x#f") == "https://example.com:8443/v1"
    assert url_has_credentials("https://user:pw@example.com/v1")
    assert url_has_credentials("https://example.com/v1?api-key=abc")
    assert not url_has_credentials("http://127.0.0.1:8000/v1")


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": future}) <= 31
    assert parse_retry_after({}) is None
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0, max_retry_after=60.0)
    assert policy.delay(0, retry_after=5.0) == 5.0
    assert policy.delay(0, retry_after=600.0) == 60.0  # bounded even when the server asks for more
    assert 4.0 <= policy.delay(10) <= 8.0  # exponential, capped, jittered


def test_prices_and_budget():
    assert price_for("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert price_for("gpt-4o") == Price(2.50, 10.00)
    assert price_for("my-local-llama") is None
    assert parse_price("1,2") == Price(1.0, 2.0)
    with pytest.raises(ValueError):
        parse_price("cheap")
    meter = CostMeter(Price(1.0, 1.0), max_cost=0.002)
    estimate = meter.estimate(3000, 100)  # 1,001 prompt tokens (3 characters each) + at most 100 completion tokens
    assert estimate == pytest.approx(0.001101)
    meter.reserve(estimate)
    with pytest.raises(BudgetExceeded, match=r"\$0\.002"):
        meter.reserve(estimate)  # two such requests in flight could overshoot
    cost = meter.settle(estimate, 900, 100)
    assert cost == pytest.approx(0.001) and meter.spent == pytest.approx(0.001) and meter.reserved == 0
    meter.reserve(meter.estimate(10, 10))  # a small one still fits
    with pytest.raises(BudgetExceeded):
        meter.reserve(estimate)


def test_strict_schema_closes_every_object_and_requires_every_field():
    schema = strict_json_schema(shots_model(3, 2, ("harbour", "market"), ("Mara", "Leo")))

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(schema))
    assert len(found) >= 4
    for obj in found:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
    keyframe = schema["$defs"]["Keyframe"]["properties"]
    assert keyframe["location"]["enum"] == ["harbour", "market"]
    assert schema["properties"]["shots"]["minItems"] == schema["properties"]["shots"]["maxItems"] == 3


def test_extract_json_tolerates_fences_and_reports_garbage():
    assert extract_json('Sure:\n```json\n{"a": 1}\n```') == {"a": 1}
    with pytest.raises(AnswerInvalid, match="not valid JSON"):
        extract_json('{"a": 1')
    with pytest.raises(AnswerInvalid, match="empty"):
        extract_json("")


def test_prompt_form_is_strict():
    cast = ("Mara", "Leo")
    ok = prompt_problems("shots.0", "at the harbour, Mara is holding a letter, worried", "harbour", ["Mara"],
                         "worried", cast)
    assert ok == []
    problems = prompt_problems("shots.0", "Mara at the harbour holding stuff", "harbour", ["Mara"], "worried", cast)
    assert "not of the form" in problems[0]
    problems = prompt_problems("shots.1", "at the market, Mara is dancing with Leo, happy", "harbour", ["Mara"],
                               "sad", cast)
    text = " ".join(problems)
    assert "differs from the keyframe's location" in text
    assert "one of the verbs" in text
    assert "'Leo' is named in the prompt" in text
    assert "must be the prompt's expression" in text


def test_outline_checks_catch_what_a_schema_cannot():
    model = outline_model(1, 3)
    outline = model.model_validate({
        "title": "T", "genre": "drama", "overview": "O.",
        "style": {"keyword": "Two words", "phrases": ["a", "b", "c"], "emphasised": ["z"]},
        "locations": ["harbour", "Mara's house", "harbour"],
        "characters": [{"name": "Mara", "role": "supporting", "lookalike": "Mara herself", "outfit_colour": "red",
                        "description": "d"}],
        "acts": [{"title": "A", "locations": ["moon"], "summary": "S.", "qa": {"question": "Tell me", "answer": "x"}}],
    })
    text = " | ".join(outline_problems(outline))
    for expected in ("style:", "appears twice", "must not contain the character name", "1 or 2 main characters",
                     "lookalike", "'moon' is not one of the locations", "must start with What"):
        assert expected in text


def test_prompt_templates_are_versioned_and_overridable(tmp_path):
    builtin = load_prompts()
    assert set(builtin) == {"system", "outline", "scenes", "shots", "movie_qa", "repair", "json_mode"}
    assert all(t.version and len(t.sha256) == 64 for t in builtin.values())
    (tmp_path / "system.txt").write_text("# name: system\n# version: 7\n\nYou write films.\n", encoding="utf-8")
    custom = load_prompts(tmp_path)
    assert custom["system"].version == "7" and custom["system"].body == "You write films."
    assert custom["system"].sha256 != builtin["system"].sha256
    assert custom["outline"] == builtin["outline"]
    (tmp_path / "outline.txt").write_text("# name: outline\n# version: 2\n\nTheme $theme by $author\n")
    with pytest.raises(ConfigError, match=r"\$author"):
        load_prompts(tmp_path)
    (tmp_path / "outline.txt").write_text("no metadata")
    with pytest.raises(ConfigError, match="must start with"):
        load_prompts(tmp_path)


def test_cache_survives_reopen_and_rejects_foreign_files(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put("k", "label", {"a": [1, 2]}, "m-1", 10, 5, 2)
    cache.close()
    again = ResponseCache(path)
    hit = again.get("k")
    assert hit.answer == {"a": [1, 2]} and hit.model == "m-1" and hit.requests == 2
    assert again.get("missing") is None
    again.close()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="--llm-cache"):
        ResponseCache(junk)
