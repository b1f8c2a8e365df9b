"""An asyncio chat client for any OpenAI-compatible endpoint that returns validated structured answers.

One :meth:`ChatClient.ask` turns a :class:`ChatCall` (messages + the pydantic model the answer must
fit + extra consistency checks) into a validated answer:

1. the SQLite cache is consulted first (a hit costs nothing and sends nothing);
2. the request goes out with ``response_format`` = the call's strict JSON schema; an endpoint that
   rejects that (HTTP 400/422) is asked again in JSON mode, then in plain text, with the schema written
   into the system message, and the choice is remembered for the endpoint and model;
3. 429, 5xx, 408/409, timeouts and broken responses are retried with bounded exponential backoff that
   honours Retry-After (a 429 pauses every request of the client, not just the one that got it);
4. an answer that is not JSON, breaks the schema or fails the checks gets a bounded number of repair
   rounds that show the model its answer and the list of problems; an answer cut off at ``max_tokens``
   is asked again with twice the room;
5. the validated answer is cached at once, and its tokens and cost are counted against ``max_cost``.

Authentication, permission and unknown-model errors, and an endpoint that cannot be reached at all,
raise :class:`LLMFatalError` (no later request could succeed). Everything else that goes wrong with
one call raises :class:`RequestFailed` with one readable reason. No message contains the API key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ..errors import MovieLLMError
from .cache import CACHE_FORMAT, ResponseCache
from .cost import BudgetExceeded, CostMeter, Price, Usage
from .jsonschema import AnswerInvalid, extract_json, strict_json_schema, validation_problems
from .redact import Redactor, public_url
from .retry import RetryPolicy, is_retryable_status, parse_retry_after

logger = logging.getLogger(__name__)

StructuredMode = Literal["auto", "json_schema", "json_object", "text"]
# Fallback order when an endpoint rejects a response_format.
_MODES = ("json_schema", "json_object", "text")
# What a server says when it rejects a response_format (OpenAI, vLLM, llama.cpp, Ollama phrasings).
_FORMAT_REJECTION = re.compile(r"response_format|json_schema|json_object|schema|structured|json mode", re.IGNORECASE)
# What the Batch API charges relative to the same requests sent one by one.
BATCH_DISCOUNT = 0.5
# Model families that take max_completion_tokens instead of max_tokens.
_COMPLETION_TOKENS_PREFIXES = ("o1", "o3", "o4", "gpt-5")
#: Characters one token can stand for, at most (English averages about 4): an answer longer than max_tokens times
#: this did not respect max_tokens, and is refused before it is parsed, validated or quoted in any later prompt.
MAX_CHARS_PER_TOKEN = 8
#: Characters per token assumed when an endpoint reports no usage (deliberately low, so the cost is not understated).
CHARS_PER_TOKEN_WHEN_UNREPORTED = 3


class LLMFatalError(MovieLLMError):
    """The endpoint refuses every request (bad key, no access, unknown model, unreachable)."""


class RequestFailed(Exception):
    """One call could not get a usable answer; the message is the reason, free of secrets.

    ``kind`` says why, for callers that count failures by cause: ``refused`` (the model declined),
    ``filtered`` (the endpoint's content filter), ``invalid`` (no valid answer after the repair rounds),
    ``truncated`` (still cut off at the longest allowed answer), ``too_long`` (longer than ``max_tokens`` allows:
    the endpoint ignores it), ``http`` (a status that cannot be
    retried), ``gave_up`` (retries exhausted) or ``budget`` (``max_cost`` reached; see :class:`BudgetSpent`).
    """

    def __init__(self, message: str, kind: str = "error", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.usage = usage if usage is not None else Usage()  # what the call spent before it failed


class BudgetSpent(RequestFailed):
    """The ``max_cost`` budget does not allow another request; a rerun with a larger budget continues."""

    def __init__(self, message: str, usage: Usage | None = None) -> None:
        super().__init__(message, kind="budget", usage=usage)


@dataclass(frozen=True)
class ChatSettings:
    """Where and how to ask.

    Args:
        model: the model name the endpoint knows (an OpenAI model, an Azure deployment, a vLLM served name).
        base_url: the OpenAI-compatible API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        api_key: the key sent as a bearer token; never printed, logged or stored.
        api_key_source: where the key came from (an environment variable name), for error messages.
        temperature, top_p: sampling parameters sent with every request.
        max_tokens: room for one answer; a cut-off answer is asked again with up to ``max_tokens_cap``.
        timeout: seconds to wait for one response before retrying.
        concurrency: requests in flight at once.
        structured: ``auto`` tries json_schema, then json_object, then text; or force one of them.
        retry: backoff and retry bounds.
        max_repairs: repair rounds (or longer re-asks after a cut-off) per call.
        price: USD per million tokens, or None when unknown (batch requests cost half of it).
        max_cost: stop sending once this many USD are spent (None: no limit).
        batch: send requests through the OpenAI Batch API (half price, answers within 24 hours,
            resumable); ``concurrency`` and ``timeout`` then do not apply to chat requests.
        batch_flush: seconds without a new request before the collected ones are submitted as a batch.
        batch_poll: seconds between status checks of a pending batch.
        option_prefix: the prefix of the command-line options that set model, URL and cache
            (``llm`` for ``--llm-model``, ``judge`` for ``--judge-model``), named in error messages.
    """

    model: str
    base_url: str
    api_key: str = field(repr=False)
    api_key_source: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 4096
    max_tokens_cap: int = 16384
    timeout: float = 120.0
    concurrency: int = 16
    structured: StructuredMode = "auto"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_repairs: int = 2
    price: Price | None = None
    max_cost: float | None = None
    batch: bool = False
    batch_flush: float = 2.0
    batch_poll: float = 30.0
    option_prefix: str = "llm"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_repairs < 0:
            raise ValueError("max_repairs must be 0 or more")
        if self.max_tokens < 1 or self.max_tokens_cap < self.max_tokens:
            raise ValueError("max_tokens must be positive and not above max_tokens_cap")
        if self.structured not in ("auto", *_MODES):
            raise ValueError(f"structured must be auto, json_schema, json_object or text, not {self.structured!r}")


@dataclass(frozen=True)
class ChatCall:
    """One logical question: messages, the answer's pydantic model, and checks beyond the schema.

    ``check`` receives the parsed answer and returns problems (sentences for the model); an empty
    list accepts it. ``label`` names the call in logs and failure reasons.
    """

    label: str
    system: str
    user: str
    response_model: type[BaseModel]
    schema_name: str
    seed: int | None = None
    check: Callable[[Any], list[str]] | None = None

    def schema(self) -> dict:
        return _schema_of(self.response_model)


@dataclass
class ChatResult:
    """A validated answer with what obtaining it cost (zero when it came from the cache)."""

    value: Any
    usage: Usage
    cached: bool
    model: str | None


DEFAULT_REPAIR_TEMPLATE = (
    "Your previous answer cannot be used:\n$problems\n"
    "Write the whole answer again as one JSON object that fixes every problem and follows all earlier instructions."
)
DEFAULT_JSON_TEMPLATE = "Answer with one JSON object and nothing else. It must match this JSON schema:\n$schema"


class ChatClient:
    """Validated, cached, budgeted chat answers with bounded retries (see the module docstring).

    Use as ``async with ChatClient(settings, cache) as client: result = await client.ask(call)``; the
    client belongs to the event loop it was opened in.
    """

    def __init__(
        self,
        settings: ChatSettings,
        cache: ResponseCache | None = None,
        repair_template: str = DEFAULT_REPAIR_TEMPLATE,
        json_template: str = DEFAULT_JSON_TEMPLATE,
        http_client: Any = None,
    ) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else ResponseCache(None)
        self.redact = Redactor(settings.api_key)
        self.endpoint = public_url(settings.base_url)
        self.repair_template = string.Template(repair_template)
        self.json_template = string.Template(json_template)
        price = settings.price
        if price is not None and settings.batch:
            price = Price(price.input * BATCH_DISCOUNT, price.output * BATCH_DISCOUNT)
        self.meter = CostMeter(price, settings.max_cost)
        self.usage = Usage(cost=0.0 if settings.price is not None else None)
        self.attempts = 0  # every HTTP request sent, answered or not
        self._http_client = http_client
        self._client = None
        self._batch = None
        self._slots: asyncio.Semaphore | None = None
        self._cooldown_until = 0.0
        self._rng = random.Random()
        self._mode_key = f"structured-mode {self.endpoint} {settings.model}"
        remembered = self.cache.get_meta(self._mode_key)
        if settings.structured != "auto":
            self._mode = settings.structured
        else:
            self._mode = remembered if remembered in _MODES else "json_schema"

    # ------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ChatClient:
        from openai import AsyncOpenAI  # the optional dependency is needed only once a client opens

        self._client = AsyncOpenAI(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=0,  # retries are ours: bounded, counted, Retry-After-aware, shared cool-down
            http_client=self._http_client,
        )
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        if self.settings.batch:
            from .batch import BatchQueue

            self._batch = BatchQueue(self._client, self.cache, flush_after=self.settings.batch_flush,
                                     poll_interval=self.settings.batch_poll)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._batch is not None:
            await self._batch.close()
            self._batch = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def structured_mode(self) -> str:
        """The response_format currently used with this endpoint (after any fallback)."""
        return self._mode

    # --------------------------------------------------------------------------------------- asking

    def cache_key(self, call: ChatCall) -> str:
        """A hash of everything that determines the answer (not of the retry or transport settings)."""
        s = self.settings
        material = {
            "format": CACHE_FORMAT,
            "endpoint": self.endpoint,
            "model": s.model,
            "system": call.system,
            "user": call.user,
            "schema": call.schema(),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": call.seed,
            "max_tokens": s.max_tokens,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    async def ask(self, call: ChatCall) -> ChatResult:
        """The validated answer to ``call``: from the cache, or asked (with retries and repairs) and cached."""
        key = self.cache_key(call)
        hit = self.cache.get(key)
        if hit is not None:
            try:
                value = self._validate(call, hit.answer)
            except AnswerInvalid:
                logger.info("%s: cached answer no longer passes the checks; asking again", call.label)
            else:
                usage = Usage(cached=1, cost=0.0)
                self.usage.add(usage)
                return ChatResult(value, usage, cached=True, model=hit.model)

        usage = Usage(cost=0.0 if self.settings.price is not None else None)
        try:
            return await self._ask(call, key, usage)
        except RequestFailed as err:
            err.usage = usage  # what the failed call cost is the caller's to count too (a movie's spending)
            raise

    async def _ask(self, call: ChatCall, key: str, usage: Usage) -> ChatResult:
        repair: list[dict] = []
        max_tokens = self.settings.max_tokens
        rounds = 0
        while True:
            response = await self._send(call, repair, max_tokens, usage)
            choice = response.choices[0]
            content = choice.message.content
            refusal = getattr(choice.message, "refusal", None)
            if refusal:
                raise RequestFailed(f"{call.label}: the model refused to answer ({self._short(refusal)})", "refused")
            if choice.finish_reason == "content_filter":
                raise RequestFailed(f"{call.label}: the endpoint's content filter stopped the answer", "filtered")
            if len(content or "") > max_tokens * MAX_CHARS_PER_TOKEN:
                # Checked before parsing: the endpoint ignored max_tokens, and asking again (or quoting the answer
                # back in a repair) would only pay for another runaway answer.
                raise RequestFailed(f"{call.label}: the answer was {len(content):,} characters, more than "
                                    f"max_tokens={max_tokens} allows; the endpoint does not respect max_tokens",
                                    "too_long")
            try:
                data = extract_json(content)
                value = self._validate(call, data)
            except AnswerInvalid as err:
                cut_off = choice.finish_reason == "length"
                what = f"was cut off at {max_tokens} tokens" if cut_off else f"failed validation ({self._short(err)})"
                if rounds >= self.settings.max_repairs:
                    raise RequestFailed(f"{call.label}: the answer {what} after {rounds} repair rounds",
                                        "truncated" if cut_off else "invalid") from None
                rounds += 1
                if cut_off:
                    # More room, same question: repairing a half-written answer rarely works.
                    max_tokens = min(max_tokens * 2, self.settings.max_tokens_cap)
                    logger.info("%s: answer cut off; asking again with max_tokens=%d", call.label, max_tokens)
                else:
                    logger.info("%s: answer rejected (%s); repair round %d", call.label, self._short(err), rounds)
                    repair = [
                        {"role": "assistant", "content": content or ""},
                        {"role": "user", "content": self.repair_template.substitute(
                            problems="\n".join(f"- {p}" for p in err.problems))},
                    ]
                continue
            self.cache.put(key, call.label, data, response.model, usage.prompt_tokens, usage.completion_tokens,
                           usage.requests)
            return ChatResult(value, usage, cached=False, model=response.model or self.settings.model)

    def _validate(self, call: ChatCall, data: Any) -> Any:
        try:
            value = call.response_model.model_validate(data)
        except ValidationError as err:
            raise AnswerInvalid(validation_problems(err)) from None
        if call.check is not None:
            problems = call.check(value)
            if problems:
                raise AnswerInvalid(problems)
        return value

    # -------------------------------------------------------------------------------------- sending

    def _request(self, call: ChatCall, repair: list[dict], max_tokens: int, mode: str) -> dict:
        s = self.settings
        system = call.system
        if mode != "json_schema":
            system = system + "\n\n" + self.json_template.substitute(schema=json.dumps(call.schema(), ensure_ascii=False))
        kwargs: dict[str, Any] = {
            "model": s.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": call.user}, *repair],
            "temperature": s.temperature,
        }
        if s.top_p is not None:
            kwargs["top_p"] = s.top_p
        if call.seed is not None:
            kwargs["seed"] = call.seed
        if s.model.lower().split("/")[-1].startswith(_COMPLETION_TOKENS_PREFIXES):
            kwargs["max_completion_tokens"] = max_tokens
        else:
            kwargs["max_tokens"] = max_tokens
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": call.schema_name, "schema": call.schema(), "strict": True},
            }
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    async def _send(self, call: ChatCall, repair: list[dict], max_tokens: int, usage: Usage):
        """One answered completion, retrying what can be retried; raises RequestFailed / LLMFatalError."""
        import openai

        assert self._client is not None and self._slots is not None, "use the client inside `async with`"
        if self._batch is not None:
            return await self._send_batched(call, repair, max_tokens, usage)
        retries = 0
        while True:
            await self._wait_cooldown()
            mode = self._mode
            kwargs = self._request(call, repair, max_tokens, mode)
            retry_after: float | None = None
            async with self._slots:
                estimate = self._begin_attempt(call, kwargs, max_tokens, usage)
                try:
                    response = await self._client.chat.completions.create(**kwargs)
                except openai.APIStatusError as err:
                    self.meter.release(estimate)
                    status = err.status_code
                    if status in (400, 422) and self._fall_back(mode, err):
                        continue  # same question in a simpler format; not a retry
                    self._raise_if_fatal(err)
                    if not is_retryable_status(status):
                        raise RequestFailed(f"{call.label}: the endpoint answered HTTP {status} "
                                            f"({self._server_message(err)})", "http") from None
                    problem = f"HTTP {status} ({self._server_message(err)})"
                    retry_after = parse_retry_after(err.response.headers)
                except openai.APITimeoutError:
                    self.meter.release(estimate)
                    problem = f"no answer within {self.settings.timeout:g} s"
                except openai.APIConnectionError as err:
                    self.meter.release(estimate)
                    problem = f"connection error ({self._short(err.__cause__ or err)})"
                    if retries >= self.settings.retry.max_retries:
                        raise LLMFatalError(
                            f"cannot reach {self.endpoint} ({self._short(err.__cause__ or err)}) after {retries + 1} "
                            f"attempts; check --{self.settings.option_prefix}-base-url and that the server is running."
                        ) from None
                except (ValueError, TypeError, openai.APIResponseValidationError) as err:
                    # A 200 whose body is not a chat completion (proxies, half-compatible servers).
                    self.meter.release(estimate)
                    problem = f"unreadable response ({self._short(err)})"
                else:
                    bad = self._malformed(response)
                    if bad is None:
                        self._account(response, estimate, usage, kwargs)
                        return response
                    self._settle_unusable(response, estimate, usage)
                    problem = bad
            if retries >= self.settings.retry.max_retries:
                raise RequestFailed(f"{call.label}: gave up after {retries + 1} attempts, the last one got {problem}",
                                    "gave_up")
            delay = self.settings.retry.delay(retries, retry_after, self._rng)
            if retry_after is not None and "HTTP 429" in problem:
                # Rate limits are per key: hold every request, not only this one.
                self._cooldown_until = max(self._cooldown_until, time.monotonic() + delay)
            logger.info("%s: %s; retry %d/%d in %.2f s", call.label, problem, retries + 1,
                        self.settings.retry.max_retries, delay)
            retries += 1
            await asyncio.sleep(delay)

    async def _send_batched(self, call: ChatCall, repair: list[dict], max_tokens: int, usage: Usage):
        """:meth:`_send` through the Batch API: same retries and fallbacks, no per-request timeout."""
        from openai.types.chat import ChatCompletion

        from .batch import BatchError

        retries = 0
        while True:
            mode = self._mode
            kwargs = self._request(call, repair, max_tokens, mode)
            estimate = self._begin_attempt(call, kwargs, max_tokens, usage)
            try:
                status, body = await self._batch.send(kwargs)
            except BatchError as err:
                status, body, problem = 0, None, self._short(err)
            else:
                problem = None
            if status == 200:
                try:
                    response = ChatCompletion.model_validate(body)
                except (ValueError, TypeError):
                    problem = "an unreadable batch response"
                else:
                    bad = self._malformed(response)
                    if bad is None:
                        self._account(response, estimate, usage, kwargs)
                        return response
                    problem = bad
            self.meter.release(estimate)
            if status and status != 200:
                error = _StatusInBatch(status, body)
                if status in (400, 422) and self._fall_back(mode, error):
                    continue
                self._raise_if_fatal(error)
                problem = f"HTTP {status} ({self._server_message(error)})"
                if not is_retryable_status(status):
                    raise RequestFailed(f"{call.label}: the endpoint answered {problem}", "http")
            if retries >= self.settings.retry.max_retries:
                raise RequestFailed(f"{call.label}: gave up after {retries + 1} attempts, the last one got {problem}",
                                    "gave_up")
            delay = self.settings.retry.delay(retries, None, self._rng)
            logger.info("%s: %s; retry %d/%d in %.2f s", call.label, problem, retries + 1,
                        self.settings.retry.max_retries, delay)
            retries += 1
            await asyncio.sleep(delay)

    def _begin_attempt(self, call, kwargs: dict, max_tokens: int, usage: Usage) -> float:
        """Reserve the attempt's estimated cost (or refuse it past --max-cost) and count it; return the estimate."""
        estimate = self.meter.estimate(sum(len(m["content"]) for m in kwargs["messages"]), max_tokens)
        try:
            self.meter.reserve(estimate)
        except BudgetExceeded as err:
            raise BudgetSpent(f"{call.label}: {err}") from None
        self.attempts += 1
        usage.requests += 1
        self.usage.requests += 1
        return estimate

    def _account(self, response, estimate: float, usage: Usage, kwargs: dict) -> None:
        """Count an answered request's tokens and cost for the call and the run.

        An endpoint that reports no usage is charged an estimate from the characters sent and received, so
        ``max_cost`` still stops a run whose endpoint hides what it bills.
        """
        prompt_tokens, completion_tokens = _token_counts(response)
        if not prompt_tokens and not completion_tokens:
            sent = sum(len(str(m.get("content") or "")) for m in kwargs["messages"])
            received = sum(len(getattr(c.message, "content", None) or "") for c in getattr(response, "choices", None)
                           or [] if getattr(c, "message", None) is not None)
            prompt_tokens = sent // CHARS_PER_TOKEN_WHEN_UNREPORTED + 1
            completion_tokens = received // CHARS_PER_TOKEN_WHEN_UNREPORTED + 1
        cost = self.meter.settle(estimate, prompt_tokens, completion_tokens)
        for target in (usage, self.usage):
            target.prompt_tokens += prompt_tokens
            target.completion_tokens += completion_tokens
            target.cost = None if target.cost is None or cost is None else target.cost + cost

    def _settle_unusable(self, response, estimate: float, usage: Usage) -> None:
        """A response without a usable answer: charge the tokens it reports (the endpoint bills them), if any."""
        if _token_counts(response) != (0, 0):
            self._account(response, estimate, usage, {"messages": []})
        else:
            self.meter.release(estimate)

    async def _wait_cooldown(self) -> None:
        while True:
            remaining = self._cooldown_until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    def _fall_back(self, mode: str, err) -> bool:
        """Switch to the next simpler response format after the endpoint rejected ``mode``.

        Only a rejection that is about the format counts (it names response_format, the schema or
        JSON); a 400 about anything else, say an unsupported temperature, is reported as it is.
        """
        if self.settings.structured != "auto" or mode == "text":
            return False
        if not _FORMAT_REJECTION.search(f"{getattr(err, 'param', '') or ''} {self._server_message(err)}"):
            return False
        if self._mode != mode:
            return True  # another request already switched; just ask again
        self._mode = _MODES[_MODES.index(mode) + 1]
        self.cache.set_meta(self._mode_key, self._mode)
        logger.warning("%s rejected response_format %s (HTTP %d: %s); using %s with validation instead",
                       self.endpoint, mode, err.status_code, self._server_message(err), self._mode)
        return True

    def _raise_if_fatal(self, err) -> None:
        status = err.status_code
        if status == 401:
            raise LLMFatalError(
                f"{self.endpoint} rejected the API key (HTTP 401: {self._server_message(err)}); "
                f"check the key in ${self.settings.api_key_source}."
            ) from None
        if status == 403:
            raise LLMFatalError(
                f"{self.endpoint} refused access (HTTP 403: {self._server_message(err)}); "
                f"check that the key in ${self.settings.api_key_source} may use model {self.settings.model}."
            ) from None
        if status == 404:
            raise LLMFatalError(
                f"{self.endpoint} does not know model {self.settings.model!r} or the chat completions path "
                f"(HTTP 404: {self._server_message(err)}); "
                f"check --{self.settings.option_prefix}-model and --{self.settings.option_prefix}-base-url."
            ) from None

    @staticmethod
    def _malformed(response) -> str | None:
        if not hasattr(response, "choices"):
            return "a response that is not a chat completion"
        if not response.choices or response.choices[0].message is None:
            return "a response without choices"
        return None

    def _server_message(self, err) -> str:
        body = getattr(err, "body", None)
        message = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else inner
        return self._short(message or err.message or "no message")

    def _short(self, text: object, limit: int = 300) -> str:
        clean = " ".join(self.redact(text).split())
        return clean if len(clean) <= limit else clean[: limit - 3] + "..."


class _StatusInBatch:
    """An HTTP error a batch line carried, shaped like the SDK's APIStatusError for the shared handling."""

    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.body = body
        self.message = f"HTTP {status}"
        self.param = body.get("error", {}).get("param") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None


@functools.lru_cache(maxsize=1024)
def _schema_of(model: type[BaseModel]) -> dict:
    # Answer models are built once per shape (see moviellm_data.writers.story_answers), so their schemas are too.
    return strict_json_schema(model)


def _token_counts(response) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
