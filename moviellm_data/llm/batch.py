"""The OpenAI Batch API as a transport: the same chat requests at half price, answered within 24 hours.

Requests are collected while the writer keeps producing them and submitted together once it has been
quiet for ``flush_after`` seconds (or a batch is full): one JSONL file upload plus one batch per flush,
so the outlines of all movies go in one batch, then all their acts, then all their scenes, then the
repairs. Each request line's ``custom_id`` is the hash of its exact body.

Resumable: which request went into which batch is written to the answer cache the moment the batch
is created, and every line a finished batch returns is stored there too. A run killed while batches
are pending picks them up again (it polls them instead of paying for them twice), and lines that came
back after the kill are read from the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from .cache import ResponseCache

logger = logging.getLogger(__name__)

FINAL_STATES = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS = 50_000  # the Batch API's limits per batch file
MAX_BYTES = 190_000_000


def wire_key(body: dict) -> str:
    """The custom_id of a request: a hash of its exact body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class BatchError(Exception):
    """A request line could not be submitted or came back without a response."""


class BatchQueue:
    """Sends chat request bodies through batches; :meth:`send` returns ``(status_code, body)`` per request.

    Args:
        client: an open ``openai.AsyncOpenAI``.
        cache: where pending batches and returned lines are recorded (a disabled cache means no resume).
        flush_after: seconds without a new request before the collected ones are submitted.
        poll_interval: seconds between status checks of a pending batch.
    """

    def __init__(self, client: Any, cache: ResponseCache, flush_after: float = 2.0, poll_interval: float = 30.0,
                 max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> None:
        self.client = client
        self.cache = cache
        self.flush_after = flush_after
        self.poll_interval = poll_interval
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.batches_submitted = 0
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._collected: list[tuple[str, bytes]] = []
        self._collected_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pollers: dict[str, asyncio.Task] = {}

    async def send(self, body: dict) -> tuple[int, Any]:
        """The status code and response body of one request line; raises BatchError when it has none."""
        key = wire_key(body)
        stored = self.cache.batch_result(key)
        if stored is not None:
            status, payload, error = stored
            if status != 200:
                self.cache.forget_batch_result(key)  # a retry must really be asked again
            return _result(status, payload, error)
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(key, [])
        waiters.append(future)
        if len(waiters) == 1:
            batch_id = self.cache.batch_pending(key)
            if batch_id is not None:
                self._poll_later(batch_id)  # submitted by an earlier (killed) run: wait for it, do not pay twice
            else:
                self._collect(key, body)
        status, payload, error = await future
        if status != 200:
            self.cache.forget_batch_result(key)
        return _result(status, payload, error)

    async def close(self) -> None:
        """Stop timers and pollers (pending batches stay recorded for the next run)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in [*self._tasks, *self._pollers.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._pollers.values(), return_exceptions=True)

    # --------------------------------------------------------------------------------- submitting

    def _collect(self, key: str, body: dict) -> None:
        line = json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body},
                          ensure_ascii=False).encode() + b"\n"
        if self._collected and (len(self._collected) >= self.max_requests
                                or self._collected_bytes + len(line) > self.max_bytes):
            self._flush()
        self._collected.append((key, line))
        self._collected_bytes += len(line)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.flush_after, self._flush)

    def _flush(self) -> None:
        lines, self._collected, self._collected_bytes = self._collected, [], 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if lines:
            task = asyncio.get_running_loop().create_task(self._submit(lines))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _submit(self, lines: list[tuple[str, bytes]]) -> None:
        import openai

        keys = [key for key, _ in lines]
        try:
            uploaded = await self.client.files.create(
                file=("moviellm-batch.jsonl", b"".join(line for _, line in lines), "application/jsonl"), purpose="batch")
            batch = await self.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                     completion_window="24h", metadata={"created_by": "moviellm"})
        except (openai.APIError, ValueError) as err:
            status = getattr(err, "status_code", 0) or 0
            message = f"submitting a batch failed ({type(err).__name__}{f', HTTP {status}' if status else ''})"
            self._resolve({key: (status if status else 0, getattr(err, "body", None), message) for key in keys})
            return
        self.cache.record_batch(batch.id, keys)
        self.batches_submitted += 1
        logger.info("submitted batch %s with %d requests", batch.id, len(keys))
        self._poll_later(batch.id)

    # ----------------------------------------------------------------------------------- polling

    def _poll_later(self, batch_id: str) -> None:
        if batch_id not in self._pollers:
            self._pollers[batch_id] = asyncio.get_running_loop().create_task(self._poll(batch_id))

    async def _poll(self, batch_id: str) -> None:
        import openai

        failures = 0
        while True:
            try:
                batch = await self.client.batches.retrieve(batch_id)
                failures = 0
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
                failures += 1
                if failures > 10:
                    self._finish(batch_id, {}, f"batch {batch_id} could not be polled")
                    return
                await asyncio.sleep(self.poll_interval)
                continue
            except openai.APIStatusError as err:  # gone or not ours: its requests must be sent again
                self._finish(batch_id, {}, f"batch {batch_id} cannot be read (HTTP {err.status_code})")
                return
            if batch.status in FINAL_STATES:
                break
            await asyncio.sleep(self.poll_interval)
        results: dict[str, tuple[int, Any, str | None]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for line in content.text.splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                response, error = item.get("response"), item.get("error")
                if response:
                    results[item["custom_id"]] = (int(response.get("status_code") or 0), response.get("body"), None)
                else:
                    message = (error or {}).get("message") if isinstance(error, dict) else None
                    results[item["custom_id"]] = (0, None, f"the batch line failed ({message or 'no response'})")
        self._finish(batch_id, results, f"batch {batch_id} ended {batch.status} without an answer for the request")

    def _finish(self, batch_id: str, results: dict[str, tuple[int, Any, str | None]], missing: str) -> None:
        keys = self.cache.batch_keys(batch_id)
        for key in keys:
            results.setdefault(key, (0, None, missing))
        self.cache.store_batch_results(batch_id, results)
        self._pollers.pop(batch_id, None)
        self._resolve(results)

    def _resolve(self, results: dict[str, tuple[int, Any, str | None]]) -> None:
        for key, result in results.items():
            for future in self._waiting.pop(key, []):
                if not future.done():
                    future.set_result(result)


def _result(status: int, payload: Any, error: str | None) -> tuple[int, Any]:
    if status == 0:
        raise BatchError(error or "the batch returned no response")
    return status, payload
