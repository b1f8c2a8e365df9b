"""LLMWriter against a real OpenAI-compatible server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import socket
import time

import pytest

from moviellm_data.llm.client import ChatSettings, LLMFatalError
from moviellm_data.llm.cost import Price
from moviellm_data.writers.story_answers import parse_prompt
from moviellm_data.pipeline import plan_requests
from moviellm_data.prompts import load_prompts
from moviellm_data.script import MovieScript
from moviellm_data.writers.base import WriteFailure
from moviellm_data.writers.llm_writer import LLMWriteError, LLMWriter

from .conftest import FAST_RETRY, PRICE, settings_for
from .fake_openai import FakeOpenAI


def requests_per_movie(acts: int, scenes: int) -> int:
    return 1 + acts + acts * scenes + 1  # outline, scenes per act, shots per scene, movie questions


def write(writer: LLMWriter, count: int, themes: list[str] | None = None):
    """(scripts by id, failures by id) of ``count`` movies; every movie must be one or the other."""
    requests = plan_requests(count, 0, themes or [f"theme number {i}" for i in range(count)])
    scripts, failures = {}, {}
    for item in writer.write_many(requests):
        if isinstance(item, WriteFailure):
            failures[item.request.id] = item
        else:
            assert isinstance(item, MovieScript)
            scripts[item.id] = MovieScript.model_validate(item.model_dump())  # still valid on a round trip
    assert len(scripts) + len(failures) == count and not set(scripts) & set(failures)
    return scripts, failures


def test_a_movie_is_complete_valid_and_grounded(server):
    writer = LLMWriter(settings_for(server), size="2x2x3")
    request = plan_requests(1, 5, ["a love story"])[0]
    script = writer.write(request)

    assert [len(a.scenes) for a in script.acts] == [2, 2] and script.num_frames == 12
    assert server.totals.requests == requests_per_movie(2, 2) == writer.attempts
    assert all(r.response_format == "json_schema" and r.seed == request.seed % 2**31 for r in server.records)
    names = {c.name for c in script.characters}
    for shot in script.shots():
        place, action, expression = parse_prompt(shot.prompt)
        assert place.removeprefix("the ") == shot.location and shot.action == action
        assert expression == shot.expression and set(shot.characters) <= names
    for act in script.acts:  # 3 keyframes at a ratio of 0.5: 2 lines per scene
        assert [sum(s.dialogue is not None for s in scene.shots) for scene in act.scenes] == [2, 2]

    counts = {kind: sum(q.type == kind for q in script.qa) for kind in ("overview", "plot", "temporal", "act", "scene", "shot")}
    assert counts == {"overview": 1, "plot": 2, "temporal": 1, "act": 4, "scene": 4, "shot": 4}
    act_qa = [q for q in script.qa if q.type == "act"]
    assert [q.evidence for q in act_qa] == [script.act_span(0)] * 2 + [script.act_span(1)] * 2
    scene_qa = [q for q in script.qa if q.type in ("scene", "shot")]
    assert [q.evidence for q in scene_qa] == [script.scene_span(a, s) for a in range(2) for s in range(2) for _ in range(2)]
    assert all(q.evidence == script.full_span() for q in script.qa if q.type in ("overview", "plot", "temporal"))
    assert script.to_benchmark_json()["QA"]["plot_qa"][1]["Question"]

    writer_prov = script.provenance.writer
    assert writer_prov.name == "openai" and writer_prov.model == "test-model-2026-01-01"
    assert writer_prov.seed == request.seed and writer_prov.temperature == 0.7
    assert {(p.name, p.sha256) for p in writer_prov.prompts} == {(t.name, t.sha256) for t in load_prompts().values()}


@pytest.mark.parametrize("kind,level", [
    ("500", "outline"), ("429", "movie_qa"), ("garbage", "scenes"), ("malformed", "shots"), ("schema", "scenes"),
    ("schema", "movie_qa"), ("inconsistent", "outline"), ("inconsistent", "scenes"), ("inconsistent", "shots"),
    ("inconsistent", "movie_qa"), ("length", "outline"),
])
def test_each_fault_costs_exactly_one_more_attempt(server, kind, level):
    fault = server.add_fault(kind, level=level)
    writer = LLMWriter(settings_for(server), size="1x1x2")
    scripts, failures = write(writer, 1)
    assert not failures and len(scripts) == 1
    assert fault.fired == 1
    assert server.totals.requests == writer.attempts == requests_per_movie(1, 1) + 1
    retried = [r for r in server.records if r.level == level]
    assert len(retried) == 2
    if kind in ("malformed", "schema", "inconsistent"):
        assert retried[1].repair and not retried[0].repair  # the model saw its answer and the problems
    if kind == "length":
        assert retried[1].max_tokens == 2 * retried[0].max_tokens and not retried[1].repair


def test_schemas_pin_the_outline_names_and_repairs_show_the_errors():
    with FakeOpenAI(keep_bodies=True) as server:
        server.add_fault("inconsistent", level="shots")
        scripts, _ = write(LLMWriter(settings_for(server), size="1x1x2"), 1)
    (script,) = scripts.values()
    shots = [r.body for r in server.records if r.level == "shots"]
    schema = shots[0]["response_format"]["json_schema"]
    assert schema["strict"] is True
    keyframe = schema["schema"]["$defs"]["Keyframe"]["properties"]
    assert keyframe["location"]["enum"] == script.locations
    assert keyframe["characters"]["items"]["enum"] == [c.name for c in script.characters]
    scenes = next(r.body for r in server.records if r.level == "scenes")
    scene_plan = scenes["response_format"]["json_schema"]["schema"]["$defs"]["ScenePlan"]["properties"]
    assert scene_plan["location"]["enum"] == script.acts[0].locations
    # The repair round carries the rejected answer and the list of problems.
    repair = shots[1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert "Mara stands somewhere" in repair[2]["content"]
    assert "is not of the form 'at the <place>" in repair[3]["content"]


def test_retry_after_is_honoured(server):
    server.add_fault("429", level="outline", retry_after="1")
    write(LLMWriter(settings_for(server), size="1x1x2"), 1)
    first, second = [r for r in server.records if r.level == "outline"]
    assert first.status == 429 and second.status == 200
    # The backoff base is 10 ms: only the server's Retry-After explains a wait of a second.
    assert second.received - first.finished >= 0.9


def test_read_timeouts_are_retried(server):
    server.add_fault("timeout", level="scenes", delay=1.5)
    writer = LLMWriter(settings_for(server, timeout=0.3), size="1x1x2")
    scripts, failures = write(writer, 1)
    assert len(scripts) == 1 and writer.attempts == requests_per_movie(1, 1) + 1
    first, second = [r for r in server.records if r.level == "scenes"]
    assert second.received - first.received >= 0.3


def test_attempts_are_bounded_and_failures_carry_their_reason(server):
    server.add_fault("500", level="outline", theme="doomed by errors", times=100)
    server.add_fault("schema", level="shots", theme="doomed by bad answers", times=100)
    server.add_fault("length", level="outline", theme="doomed by length", times=100)
    themes = ["doomed by errors", "doomed by bad answers", "doomed by length", "a fine one"]
    writer = LLMWriter(settings_for(server), size="1x1x2")  # 3 retries, 2 repairs
    scripts, failures = write(writer, 4, themes)

    assert [s.theme for s in scripts.values()] == ["a fine one"]
    reasons = {f.request.theme: f.reason for f in failures.values()}
    assert "outline: gave up after 4 attempts, the last one got HTTP 500" in reasons["doomed by errors"]
    assert "shots: the answer failed validation" in reasons["doomed by bad answers"]
    assert "after 2 repair rounds" in reasons["doomed by bad answers"]
    assert "was cut off at 16384 tokens after 2 repair rounds" in reasons["doomed by length"]

    def sent(theme, level):
        return [r for r in server.records if r.theme == theme and r.level == level]

    assert len(sent("doomed by errors", "outline")) == 4 and not sent("doomed by errors", "scenes")
    assert len(sent("doomed by bad answers", "shots")) == 3
    assert [r.max_tokens for r in sent("doomed by length", "outline")] == [4096, 8192, 16384]
    assert writer.attempts == server.totals.requests <= 4 + (1 + 1 + 3 + 1) + 3 + requests_per_movie(1, 1)


def test_a_bad_request_about_something_else_is_not_mistaken_for_a_format_problem(server):
    server.add_fault("400", level="scenes")
    writer = LLMWriter(settings_for(server), size="1x1x2")
    scripts, failures = write(writer, 1)
    (failure,) = failures.values()
    assert "act 1 scenes: the endpoint answered HTTP 400 (Unsupported value: 'temperature'" in failure.reason
    assert writer.structured_mode == "json_schema"
    assert len([r for r in server.records if r.level == "scenes"]) == 1  # a 400 is not retried


@pytest.mark.parametrize("supports,mode", [(("json_object",), "json_object"), ((), "text")])
def test_servers_without_structured_outputs_get_json_mode_and_validation(tmp_path, supports, mode):
    with FakeOpenAI(supports=supports) as server:
        cache = tmp_path / "cache.sqlite"
        writer = LLMWriter(settings_for(server), size="1x1x2", cache_path=cache)
        scripts, failures = write(writer, 2)
        assert len(scripts) == 2 and writer.structured_mode == mode
        rejected = [r for r in server.records if r.status == 400]
        assert 1 <= len(rejected) <= 2 * 2  # only the first requests in flight meet the rejection
        answered = [r for r in server.records if r.status == 200]
        assert all(r.response_format == (None if mode == "text" else mode) and r.schema_in_prompt for r in answered)

        server.reset_counts()  # a later run remembers what this endpoint accepts
        again = LLMWriter(settings_for(server), size="1x1x2", cache_path=cache)
        write(again, 3, ["theme number 0", "theme number 1", "a new theme"])
        assert server.totals.requests == requests_per_movie(1, 1)
        assert all(r.status == 200 for r in server.records)


def test_token_accounting_and_cost_match_the_server(server):
    server.add_fault("schema", level="shots")
    server.add_fault("500", level="scenes")
    writer = LLMWriter(settings_for(server), size="1x2x2")
    write(writer, 3)
    usage = writer.usage
    assert usage.requests == server.totals.requests == writer.attempts
    assert usage.prompt_tokens == server.totals.prompt_tokens and usage.completion_tokens == server.totals.completion_tokens
    assert usage.cost == pytest.approx(PRICE.cost(server.totals.prompt_tokens, server.totals.completion_tokens))


def test_max_cost_stops_spending_and_a_rerun_continues(server, tmp_path):
    dear = Price(input=1000.0, output=1000.0)  # about 4 dollars per 1x1x2 movie on this server
    cache = tmp_path / "cache.sqlite"
    writer = LLMWriter(settings_for(server, price=dear, max_cost=6.0, concurrency=1), size="1x1x2",
                       cache_path=cache, movies_in_flight=1)
    scripts, failures = write(writer, 4)
    assert 1 <= len(scripts) < 4 and failures
    assert all("--max-cost budget of $6 is spent" in f.reason for f in failures.values())
    assert writer.usage.cost <= 6.0
    spent_requests = server.totals.requests
    assert spent_requests < 4 * requests_per_movie(1, 1)

    server.reset_counts()
    more = LLMWriter(settings_for(server, price=dear, max_cost=100.0, concurrency=4), size="1x1x2", cache_path=cache)
    scripts2, failures2 = write(more, 4)
    assert not failures2 and set(scripts) <= set(scripts2)
    # Answers paid for in the first run are not bought again.
    assert server.totals.requests == 4 * requests_per_movie(1, 1) - more.usage.cached
    assert more.usage.cached >= len(scripts) * requests_per_movie(1, 1)


def test_concurrency_is_used_and_bounded():
    with FakeOpenAI(latency=0.1) as server:
        writer = LLMWriter(settings_for(server, concurrency=4), size="1x2x2")
        started = time.monotonic()
        scripts, _ = write(writer, 6)
        elapsed = time.monotonic() - started
    assert len(scripts) == 6
    assert server.totals.max_in_flight == 4
    total = 6 * requests_per_movie(1, 2)
    assert elapsed < total * 0.1 / 2  # well under one at a time


def test_an_identical_second_run_makes_no_request(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first, _ = write(LLMWriter(settings_for(server), size="1x2x2", cache_path=cache), 3)
    server.reset_counts()
    writer = LLMWriter(settings_for(server), size="1x2x2", cache_path=cache)
    second, _ = write(writer, 3)
    assert server.totals.requests == 0 and writer.attempts == 0
    assert writer.usage.cached == 3 * requests_per_movie(1, 2) and writer.usage.cost == 0
    assert {k: v.model_dump() for k, v in first.items()} == {k: v.model_dump() for k, v in second.items()}


def test_a_wrong_key_stops_the_run_without_showing_the_key():
    wrong = "sk-wrong-KEY-0000111122223333abcd"
    with FakeOpenAI(echo_key=True) as server:
        writer = LLMWriter(settings_for(server, api_key=wrong), size="1x1x2")
        with pytest.raises(LLMFatalError) as info:
            write(writer, 3)
    message = str(info.value)
    assert "HTTP 401" in message and "$OPENAI_API_KEY" in message
    assert wrong not in message and wrong[:8] not in message and wrong[-8:] not in message


def test_an_unreachable_endpoint_is_reported_once():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ChatSettings(model="test-model", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-none-0123456789",
                            retry=FAST_RETRY, timeout=2.0)
    with pytest.raises(LLMFatalError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 .* after 4 attempts"):
        write(LLMWriter(settings, size="1x1x2"), 2)


def test_write_raises_one_sentence_for_a_failed_movie(server):
    server.add_fault("schema", level="outline", times=10)
    writer = LLMWriter(settings_for(server, max_repairs=0), size="1x1x2")
    with pytest.raises(LLMWriteError, match=r"could not be written: movie \S+ outline: the answer failed validation"):
        writer.write(plan_requests(1, 0, ["x"])[0])


def test_describe_holds_what_determines_scripts_and_nothing_else(server, tmp_path):
    a = LLMWriter(settings_for(server), size="1x1x2", cache_path=tmp_path / "a.sqlite").describe()
    b = LLMWriter(settings_for(server, base_url="http://10.0.0.1:9/v1", concurrency=64, max_cost=3.0,
                               api_key="sk-other-0123456789"), size="1x1x2").describe()
    assert a == b
    text = repr(a)
    assert server.api_key not in text and "127.0.0.1" not in text and "sqlite" not in text
    assert a["model"] == "test-model" and a["size"] == "1x1x2" and set(a["prompts"]) == set(load_prompts())
    assert LLMWriter(settings_for(server, temperature=0.2), size="1x1x2").describe() != a


def test_closing_early_cancels_what_is_in_flight():
    with FakeOpenAI(latency=0.2) as server:
        writer = LLMWriter(settings_for(server, concurrency=2), size="1x1x2")
        results = writer.write_many(plan_requests(20, 0, ["t"]))
        first = next(results)
        started = time.monotonic()
        results.close()
        assert time.monotonic() - started < 1.0
        assert isinstance(first, MovieScript)
        sent = server.totals.requests
        time.sleep(0.3)
        assert server.totals.requests == sent < 20 * requests_per_movie(1, 1)
