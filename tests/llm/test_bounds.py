"""Issue 12, LLM answers are bounded: in characters per field, in tokens per request (max_tokens sent, an answer's
length checked before it is validated or quoted), and what failed movies spent is counted like the rest."""

from __future__ import annotations

import json

from moviellm_data.llm.cache import ResponseCache
from moviellm_data.llm.cost import Price
from moviellm_data.llm.jsonschema import strict_json_schema
from moviellm_data.writers.llm_writer import LLMWriter
from moviellm_data.writers.story_answers import TEXT_LIMITS, outline_model, shots_model

from .conftest import settings_for
from .fake_openai import HUGE_CHARS, FakeOpenAI
from .test_writer import requests_per_movie, write


def test_every_text_field_of_every_answer_is_bounded():
    def strings(node, where=""):
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node:
                yield where, node
            for key, value in node.items():
                yield from strings(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from strings(value, f"{where}.{i}")

    for model in (outline_model(2, 6), shots_model(3, 2, ("a", "b"), ("Mara", "Leo"))):
        found = list(strings(model.model_json_schema()))
        assert found and all("maxLength" in node for _, node in found), [w for w, n in found if "maxLength" not in n]
        # What strict structured outputs are sent: no maxLength keyword (not in the subset every endpoint accepts),
        # the bound said in the description instead.
        assert "maxLength" not in json.dumps(strict_json_schema(model))
    assert "At most 1500 characters." in json.dumps(strict_json_schema(outline_model(2, 6)))


def test_an_endpoint_ignoring_max_tokens_cannot_run_up_the_prompt_tokens(server, tmp_path):
    server.keep_bodies = True
    server.add_fault("huge", level="outline", times=10)  # every outline answer carries a 2 MB overview
    cache = tmp_path / "cache.sqlite"
    writer = LLMWriter(settings_for(server, max_tokens=1024, max_tokens_cap=2048), size="2x2x3", cache_path=cache)
    scripts, failures = write(writer, 1)
    failure, = failures.values()
    assert "more than max_tokens=1024 allows; the endpoint does not respect max_tokens" in failure.reason
    # One outline request: the runaway answer is neither asked again, nor quoted back, nor put in a later prompt.
    assert server.totals.requests == 1 and server.records[0].level == "outline"
    assert server.totals.prompt_tokens < 2_000, "the runaway answer reached a later prompt"
    assert server.records[0].max_tokens == 1024  # max_tokens went with the request
    # What the failed movie spent is recorded with it (the endpoint billed the 2 MB answer).
    usage = ResponseCache(cache).movie_usage()[failure.request.id]
    assert usage["requests"] == 1
    assert usage["completion_tokens"] == server.totals.completion_tokens >= HUGE_CHARS // 4
    assert writer.usage.completion_tokens == server.totals.completion_tokens


def test_a_field_longer_than_its_bound_is_repaired(server):
    server.add_fault("long_field", level="outline")  # a 5,000-character overview: valid JSON, too long a field
    server.keep_bodies = True
    writer = LLMWriter(settings_for(server), size="1x1x2")
    scripts, failures = write(writer, 1)
    script, = scripts.values()
    assert not failures and len(script.overview) <= TEXT_LIMITS["overview"]
    repair = next(r for r in server.records if r.repair)
    assert "overview: String should have at most 1500 characters" in json.dumps(repair.body["messages"])
    assert server.totals.requests == requests_per_movie(1, 1) + 1


def test_an_endpoint_that_reports_no_usage_is_still_charged_and_stopped(tmp_path):
    with FakeOpenAI(faults=[]) as server:
        server.add_fault("no_usage", times=10_000)
        dear = Price(input=1000.0, output=1000.0)
        writer = LLMWriter(settings_for(server, price=dear, max_cost=6.0, concurrency=1), size="1x1x2",
                           movies_in_flight=1)
        scripts, failures = write(writer, 4)
        assert failures and all("--max-cost budget of $6 is spent" in f.reason for f in failures.values())
        assert writer.usage.prompt_tokens > 0 and writer.usage.cost > 0
        assert server.totals.requests < 4 * requests_per_movie(1, 1)
