"""Sending judge tasks through the project's chat client (one client, one cache, one retry and cost policy).

Every task becomes a :class:`~moviellm_data.llm.client.ChatCall` whose answer model is the judge's
pydantic model. The client answers from its SQLite cache when it can (a rerun costs nothing, a killed
run resumes with exactly the calls that had no answer yet), otherwise asks with structured outputs,
retries 429/5xx honouring Retry-After, repairs unparseable answers and asks again with more room after
a cut-off answer, all bounded. A judgement that still fails (refused, filtered, unparseable, cut off)
is asked again up to ``attempts`` times in all; then it is an :class:`Outcome` with the reason, which
the report counts and lists. Calls past ``max_cost`` are not sent and are reported the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from pathlib import Path

from moviellm_data.llm.cache import ResponseCache
from moviellm_data.llm.client import ChatCall, ChatClient, ChatSettings, LLMFatalError, RequestFailed
from moviellm_data.llm.cost import Usage

from .judges import JudgePrompt
from .protocols import JudgeTask, Outcome

logger = logging.getLogger(__name__)

# Failures worth asking again from the start: a judge may answer differently the next time.
RETRIED_KINDS = frozenset({"refused", "filtered", "invalid", "truncated"})
JUDGE_SEED = 0  # sent with every call, so endpoints that honour seeds answer the same way again


@dataclass
class JudgeRun:
    """What judging cost and which judge model(s) the endpoint reported."""

    usage: Usage
    attempts: int = 0
    judge_models: dict[str, int] = field(default_factory=dict)
    structured_mode: str | None = None


def build_call(task: JudgeTask, prompt: JudgePrompt) -> ChatCall:
    system, user = prompt.render(task.values)
    return ChatCall(label=task.label, system=system, user=user, response_model=prompt.answer_model,
                    schema_name=prompt.answer_model.__name__, seed=JUDGE_SEED)


def judge(tasks: list[JudgeTask], prompts: dict[str, JudgePrompt], settings: ChatSettings,
          cache_path: str | Path | None, attempts: int = 2, progress: bool = True,
          cache_option: str = "--judge-cache") -> tuple[dict[tuple, Outcome], JudgeRun]:
    """Judge every task; returns the outcome of each (by task key) and what the run cost.

    Raises :class:`~moviellm_data.llm.client.LLMFatalError` when the endpoint refuses every request
    (bad key, unknown model, unreachable); what was judged until then stays cached.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    work = _judge(tasks, prompts, settings, cache_path, attempts, progress, cache_option)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # Called from inside a running event loop (a notebook): judge on a fresh loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="moviellm-judge") as pool:
        return pool.submit(asyncio.run, work).result()


async def _judge(tasks, prompts, settings, cache_path, attempts, progress, cache_option):
    from tqdm.auto import tqdm

    cache = ResponseCache(cache_path, option=cache_option)
    outcomes: dict[tuple, Outcome] = {}
    run = JudgeRun(usage=Usage(cost=0.0 if settings.price is not None else None))
    bar = tqdm(total=len(tasks), unit="call", desc="judging", disable=not progress)
    try:
        async with ChatClient(settings, cache) as client:
            async def one(task: JudgeTask) -> None:
                outcomes[task.key] = await _judge_one(client, task, prompts[task.judge], attempts)
                model = outcomes[task.key].judge_model
                if model:
                    run.judge_models[model] = run.judge_models.get(model, 0) + 1
                bar.update()

            try:
                async with asyncio.TaskGroup() as group:
                    for task in tasks:
                        group.create_task(one(task))
            except* LLMFatalError as errors:
                raise _first(errors) from None
            finally:
                run.usage.add(client.usage)
                run.attempts = client.attempts
                run.structured_mode = client.structured_mode
    finally:
        bar.close()
        cache.close()
    return outcomes, run


async def _judge_one(client: ChatClient, task: JudgeTask, prompt: JudgePrompt, attempts: int) -> Outcome:
    call = build_call(task, prompt)
    for attempt in range(1, attempts + 1):
        try:
            result = await client.ask(call)
        except RequestFailed as err:
            if err.kind in RETRIED_KINDS and attempt < attempts:
                logger.info("%s; asking again (attempt %d of %d)", err, attempt + 1, attempts)
                continue
            logger.warning("unjudged: %s", err)
            return Outcome(task, reason=str(err), kind=err.kind)
        return Outcome(task, value=result.value, judge_model=result.model, cached=result.cached)
    raise AssertionError("unreachable")


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


__all__ = ["JudgeRun", "RETRIED_KINDS", "build_call", "judge"]
