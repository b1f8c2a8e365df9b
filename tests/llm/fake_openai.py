"""A real OpenAI-compatible chat-completions server on 127.0.0.1, scripted and fault-injecting.

It answers ``POST /v1/chat/completions`` the way a well-behaved model would: it reads the
machine-checked constraints line that every prompt of the LLM writer ends with (level, counts, names,
places) and writes a fitting JSON answer, so one server serves movies of any size. Faults are injected
by rules (:class:`Fault`) matched on the level, the theme and whether the request is a repair round:
429 with Retry-After, 500, a read timeout, malformed JSON, JSON that breaks the schema, JSON that
breaks the story's consistency, a truncated answer (finish_reason "length"), a non-JSON body, a 401,
a 400 about something other than the response format, an answer that ignores max_tokens (a 2 MB field), a field
longer than the schema allows, and a response without usage.

Requests without that line (the evaluation judge's) are answered by a ``responder`` the test gives:
a function of the request that returns a :class:`Scripted` answer (its level and theme, which faults
match on, and the JSON or raw text to answer), or None for an unknown request (HTTP 400).

It also speaks the Batch API (``POST /v1/files``, ``POST /v1/batches``, ``GET /v1/batches/{id}``,
``GET /v1/files/{id}/content``): a batch's lines are answered like direct requests (faults included)
and the batch completes after ``batch_polls`` status checks.

It counts what the writer's accounting must match: requests, prompt and completion tokens, requests
in flight. Only the Python standard library is used.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONSTRAINTS_PREFIX = "Machine-checked constraints (JSON): "
PLACES = ["harbour", "old library", "market", "lighthouse", "train station", "garden", "bakery", "museum",
          "rooftop", "forest path", "beach", "school hall", "bridge", "cafe", "chapel", "pier"]
CAST = [("Mara", "main", "a woman who looks like Emma Stone", "red"),
        ("Leo", "main", "a man who looks like Ryan Gosling", "blue"),
        ("Ida", "supporting", "an old woman who looks like Judi Dench", "green")]
FAULT_KINDS = ("429", "500", "timeout", "malformed", "schema", "inconsistent", "length", "garbage", "401", "400",
               "refusal", "huge", "long_field", "no_usage")
#: Characters of the text field a "huge" fault blows up (an endpoint that ignores max_tokens).
HUGE_CHARS = 2_000_000
REFUSAL = "I'm sorry, but I can't help with evaluating this."


@dataclass
class Scripted:
    """A responder's answer to one request: ``answer`` is sent as JSON (a dict) or as it is (a str).

    ``level`` and ``theme`` are what :class:`Fault` rules match on (e.g. the judge's dimension and the item).
    """

    answer: dict | str
    level: str | None = None
    theme: str | None = None


@dataclass
class Fault:
    """Inject ``kind`` into the next ``times`` requests that match ``level``/``theme``/``repair``.

    ``retry_after`` is sent as the Retry-After header (429/500); ``delay`` is how long a "timeout"
    request waits before answering; ``repair`` None matches any request, True only repair rounds, False
    only first asks.
    """

    kind: str
    level: str | None = None
    theme: str | None = None
    times: int = 1
    retry_after: str | None = None
    delay: float = 2.0
    repair: bool | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}")

    def matches(self, level: str | None, theme: str | None, repair: bool) -> bool:
        return (self.fired < self.times and (self.level is None or self.level == level)
                and (self.theme is None or self.theme == theme) and (self.repair is None or self.repair == repair))


@dataclass
class Record:
    """One request as the server saw it."""

    received: float
    level: str | None
    theme: str | None
    repair: bool
    response_format: str | None
    schema_in_prompt: bool
    max_tokens: int | None
    seed: int | None
    body: dict | None = None  # the parsed request, when the server keeps bodies
    via_batch: bool = False
    fault: str | None = None
    status: int = 200
    finished: float = 0.0


@dataclass
class Totals:
    requests: int = 0
    answered: int = 0  # 200 responses that carried usage
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class FakeOpenAI:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        api_key: the only key accepted (401 otherwise).
        latency: seconds added to every request before it is answered.
        supports: response_format types accepted; others get HTTP 400 like a server without them.
        fence_text: wrap plain-text answers in ```json fences, as chatty models do.
        echo_key: on a wrong key, echo the whole received key in the error message (worst case for leaks).
        model: the model name reported in responses (default: the requested one plus a snapshot suffix).
        keep_bodies: keep every parsed request in its :class:`Record` (for tests that inspect them).
        batch_polls: status checks a batch answers "in_progress" before it is "completed".
        responder: answers requests that carry no constraints line (see :class:`Scripted`).
    """

    def __init__(self, api_key: str = "sk-test-loopback-0123456789abcdef", latency: float = 0.0,
                 supports: tuple[str, ...] = ("json_schema", "json_object"), fence_text: bool = True,
                 echo_key: bool = False, model: str | None = None, faults: list[Fault] | None = None,
                 keep_bodies: bool = False, batch_polls: int = 1, responder=None) -> None:
        self.api_key = api_key
        self.latency = latency
        self.supports = supports
        self.fence_text = fence_text
        self.echo_key = echo_key
        self.model = model
        self.keep_bodies = keep_bodies
        self.batch_polls = batch_polls
        self.responder = responder
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # id -> the batch object, plus "levels" of its lines and "polls"
        self.faults: list[Fault] = list(faults or [])
        self.records: list[Record] = []
        self.totals = Totals()
        self._lock = threading.Lock()
        self._request_event = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- scripting

    def add_fault(self, kind: str, **kwargs) -> Fault:
        fault = Fault(kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` requests have been received."""
        deadline = time.monotonic() + timeout
        with self._request_event:
            while self.totals.requests < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._request_event.wait(remaining)
        return True

    def reset_counts(self) -> None:
        with self._lock:
            self.records.clear()
            self.totals = Totals()

    # ----------------------------------------------------------------------------------- handling

    def handle(self, headers, body: bytes) -> tuple[int, dict[str, str], bytes, float, Record | None]:
        """(status, headers, body, delay before sending, record) for one request."""
        received = time.monotonic()
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            return 400, {}, _error("request body is not JSON"), 0.0, None
        messages = request.get("messages") or []
        constraints = _constraints(messages)
        level = constraints.get("level") if constraints else None
        theme = constraints.get("theme") if constraints else None
        scripted = self.responder(request) if constraints is None and self.responder is not None else None
        if scripted is not None:
            level, theme = scripted.level, scripted.theme
        repair = any(m.get("role") == "assistant" for m in messages)
        fmt = (request.get("response_format") or {}).get("type")
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        record = Record(received, level, theme, repair, fmt, '"properties"' in system,
                        request.get("max_tokens") or request.get("max_completion_tokens"), request.get("seed"),
                        request if self.keep_bodies else None)
        with self._lock:
            self.records.append(record)
            self.totals.requests += 1
            self._request_event.notify_all()
            fault = next((f for f in self.faults if f.matches(level, theme, repair)), None)
            if fault is not None:
                fault.fired += 1
                record.fault = fault.kind
        delay = self.latency

        def reply(status: int, payload: bytes, extra: dict[str, str] | None = None, wait: float = delay):
            record.status = status
            return status, extra or {}, payload, wait, record

        auth = headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}" or (fault is not None and fault.kind == "401"):
            received_key = auth.removeprefix("Bearer ")
            shown = received_key if self.echo_key else received_key[:6] + "****" + received_key[-4:]
            return reply(401, _error(f"Incorrect API key provided: {shown}.", code="invalid_api_key"))
        if fmt is not None and fmt not in self.supports:
            return reply(400, _error(f"response_format type '{fmt}' is not supported by this server",
                                     param="response_format"))
        if constraints is None and scripted is None:
            return reply(400, _error("no machine-checked constraints line in the first user message"))
        if fault is not None and fault.kind == "429":
            return reply(429, _error("Rate limit reached for requests", code="rate_limit_exceeded"),
                         {"Retry-After": fault.retry_after} if fault.retry_after else {})
        if fault is not None and fault.kind == "500":
            return reply(500, _error("The server had an error while processing your request."),
                         {"Retry-After": fault.retry_after} if fault.retry_after else {})
        if fault is not None and fault.kind == "400":
            return reply(400, _error("Unsupported value: 'temperature' does not support 0.7 with this model.",
                                     param="temperature"))
        if fault is not None and fault.kind == "garbage":
            return reply(200, b"<html>upstream proxy error</html>")

        answer = scripted.answer if scripted is not None else ANSWERS[level](constraints)
        finish = "stop"
        if scripted is not None and fault is not None and fault.kind in ("schema", "inconsistent"):
            answer = {"unexpected": "an object of another shape"}
        elif fault is not None and fault.kind == "schema":
            _break_schema(level, answer)
        elif fault is not None and fault.kind == "inconsistent":
            _break_consistency(level, answer)
        elif fault is not None and fault.kind in ("huge", "long_field"):
            _blow_up(level, answer, HUGE_CHARS if fault.kind == "huge" else 5_000)
        content = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        if fault is not None and fault.kind == "malformed":
            content = content.replace('":', '" ', 1)
        if fault is not None and fault.kind == "length":
            content, finish = content[: len(content) // 2], "length"
        if fmt is None and self.fence_text:
            content = f"Here is the JSON:\n```json\n{content}\n```"
        if fault is not None and fault.kind == "timeout":
            delay = max(delay, fault.delay)
        message = {"role": "assistant", "content": content}
        if fault is not None and fault.kind == "refusal":
            message = {"role": "assistant", "content": None, "refusal": REFUSAL}
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        completion_tokens = len(content) // 4 + 1
        with self._lock:
            self.totals.answered += 1
            self.totals.prompt_tokens += prompt_tokens
            self.totals.completion_tokens += completion_tokens
        payload = {
            "id": f"chatcmpl-{self.totals.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or f"{request.get('model')}-2026-01-01",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if fault is not None and fault.kind == "no_usage":
            del payload["usage"]  # billed all the same
        return reply(200, json.dumps(payload).encode(), wait=delay)

    # ---------------------------------------------------------------------------------- batch API

    def authorized(self, headers) -> bool:
        return headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def upload_file(self, headers, body: bytes) -> tuple[int, bytes]:
        if not self.authorized(headers):
            return 401, _error("Incorrect API key provided.", code="invalid_api_key")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        if "file" not in fields or fields.get("purpose") is None:
            return 400, _error("a file and a purpose are required")
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = fields["file"].get_payload(decode=True)
        return 200, json.dumps({"id": file_id, "object": "file", "bytes": len(self.files[file_id]),
                                "created_at": int(time.time()), "filename": fields["file"].get_filename(),
                                "purpose": fields["purpose"].get_content().strip(), "status": "processed"}).encode()

    def create_batch(self, headers, body: bytes) -> tuple[int, bytes]:
        if not self.authorized(headers):
            return 401, _error("Incorrect API key provided.", code="invalid_api_key")
        request = json.loads(body)
        data = self.files.get(request.get("input_file_id", ""))
        if data is None:
            return 404, _error("no such file")
        out_lines, levels = [], []
        for raw in data.decode().splitlines():
            line = json.loads(raw)
            status, _, payload, _, record = self.handle(headers, json.dumps(line["body"]).encode())
            if record is not None:
                record.via_batch = True
                record.finished = time.monotonic()
                levels.append(record.level)
            try:
                response_body = json.loads(payload)
            except json.JSONDecodeError:
                response_body = payload.decode(errors="replace")
            out_lines.append(json.dumps({"id": f"batch_req_{len(out_lines)}", "custom_id": line["custom_id"],
                                         "response": {"status_code": status, "body": response_body}, "error": None}))
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            output_id = f"file-{len(self.files) + 1}"
            self.files[output_id] = ("\n".join(out_lines) + "\n").encode()
            batch = {"id": batch_id, "object": "batch", "endpoint": request.get("endpoint"),
                     "input_file_id": request["input_file_id"], "completion_window": request.get("completion_window"),
                     "status": "in_progress", "created_at": int(time.time()), "output_file_id": None,
                     "error_file_id": None, "request_counts": {"total": len(out_lines), "completed": 0, "failed": 0}}
            self.batches[batch_id] = {"object": batch, "output": output_id, "levels": levels, "polls": 0}
        return 200, json.dumps(batch).encode()

    def retrieve_batch(self, headers, batch_id: str) -> tuple[int, bytes]:
        if not self.authorized(headers):
            return 401, _error("Incorrect API key provided.", code="invalid_api_key")
        with self._lock:
            entry = self.batches.get(batch_id)
            if entry is None:
                return 404, _error(f"no batch {batch_id}")
            entry["polls"] += 1
            if entry["polls"] >= self.batch_polls:
                total = entry["object"]["request_counts"]["total"]
                entry["object"].update(status="completed", output_file_id=entry["output"],
                                       request_counts={"total": total, "completed": total, "failed": 0})
            return 200, json.dumps(entry["object"]).encode()

    def file_content(self, headers, file_id: str) -> tuple[int, bytes]:
        if not self.authorized(headers):
            return 401, _error("Incorrect API key provided.", code="invalid_api_key")
        data = self.files.get(file_id)
        return (200, data) if data is not None else (404, _error(f"no file {file_id}"))

    def begin(self) -> None:
        with self._lock:
            self.totals.in_flight += 1
            self.totals.max_in_flight = max(self.totals.max_in_flight, self.totals.in_flight)

    def end(self) -> None:
        with self._lock:
            self.totals.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default backlog of 5 drops connections under concurrency

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that cancelled its request (a run stopping); not a server problem
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if match := re.fullmatch(r".*/batches/([^/]+)", path):
            self._send(*self.fake.retrieve_batch(self.headers, match.group(1)))
        elif match := re.fullmatch(r".*/files/([^/]+)/content", path):
            self._send(*self.fake.file_content(self.headers, match.group(1)))
        else:
            self._send(404, _error(f"unknown path {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/files"):
            self._send(*self.fake.upload_file(self.headers, body))
            return
        if path.endswith("/batches"):
            self._send(*self.fake.create_batch(self.headers, body))
            return
        if not path.endswith("/chat/completions"):
            self._send(404, _error(f"unknown path {self.path}"))
            return
        self.fake.begin()
        try:
            status, headers, payload, delay, record = self.fake.handle(self.headers, body)
            if delay:
                time.sleep(delay)
        finally:
            self.fake.end()
        self._send(status, payload, headers)
        if record is not None:
            record.finished = time.monotonic()

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test); nothing to do


def _error(message: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": code}}).encode()


def _constraints(messages: list[dict]) -> dict | None:
    first_user = next((m for m in messages if m.get("role") == "user"), None)
    if first_user is None:
        return None
    for line in str(first_user.get("content", "")).splitlines():
        if line.startswith(CONSTRAINTS_PREFIX):
            try:
                return json.loads(line[len(CONSTRAINTS_PREFIX):])
            except json.JSONDecodeError:
                return None
    return None


# --------------------------------------------------------------------------------------- answers


def _places(count: int) -> list[str]:
    return [PLACES[i] if i < len(PLACES) else f"hall {i}" for i in range(count)]


def _outline(c: dict) -> dict:
    places = _places(c["locations"])
    acts = []
    for a in range(c["acts"]):
        where = list(dict.fromkeys([places[a % len(places)], places[(a + 1) % len(places)]]))
        acts.append({
            "title": f"Part {a + 1}",
            "locations": where,
            "summary": f"Mara and Leo face trial {a + 1} at the {where[0]}.",
            "qa": {"question": f"What do Mara and Leo face in part {a + 1}?",
                   "answer": f"They face trial {a + 1} at the {where[0]}."},
        })
    theme = str(c.get("theme", "a story"))
    return {
        "title": " ".join(w.capitalize() for w in re.findall(r"[A-Za-z]+", theme) if w.lower() not in ("a", "an", "the"))
                 or "Untitled",
        "genre": "drama",
        "overview": f"A movie about {theme}. Mara and Leo go through {c['acts']} trials and come out changed.",
        "style": {"keyword": "Dramatic", "phrases": ["warm light", "soft focus", "muted colours"],
                  "emphasised": ["warm light"]},
        "locations": places,
        "characters": [{"name": n, "role": r, "lookalike": look, "outfit_colour": colour,
                        "description": f"{n} is a {r} character."} for n, r, look, colour in CAST],
        "acts": acts,
    }


def _scenes(c: dict) -> dict:
    where = c["locations"]
    scenes = [{"title": f"Step {s + 1}", "location": where[s % len(where)],
               "summary": f"Mara and Leo take step {s + 1} of trial {c['act']} at the {where[s % len(where)]}."}
              for s in range(c["scenes"])]
    return {"scenes": scenes, "qa": {"question": f"Where does trial {c['act']} begin?",
                                     "answer": f"It begins at the {where[0]}."}}


def _shots(c: dict) -> dict:
    names, place = c["characters"], c["location"]
    verbs = ["standing by the window", "holding a letter", "looking at the sea", "walking slowly"]
    shots = []
    for k in range(c["shots"]):
        name = names[k % len(names)]
        shots.append({"prompt": f"at the {place}, {name} is {verbs[k % len(verbs)]}, calm", "location": place,
                      "characters": [name], "expression": "calm"})
    dialogue = [{"shot": k + 1, "speaker": names[k % len(names)], "text": f"Line {k + 1} of this scene."}
                for k in range(c["dialogue"])]
    qa = [{"question": f"Where does scene {c['scene']} happen?", "answer": f"At the {place}."},
          {"question": f"What is {names[0]} doing first?", "answer": f"{names[0]} is {verbs[0]}."}]
    return {"shots": shots, "dialogue": dialogue, "qa": qa}


def _movie_qa(c: dict) -> dict:
    return {
        "overview": {"question": "Describe the events of the movie.", "answer": "Mara and Leo go through trials."},
        "plot": [{"question": f"Why does Mara keep going in trial {i + 1}?", "answer": "Because Leo needs her."}
                 for i in range(c["plot"])],
        "temporal": {"question": "Outline the chronological sequence of events.",
                     "answer": "First the trials begin, then they end."},
    }


ANSWERS = {"outline": _outline, "scenes": _scenes, "shots": _shots, "movie_qa": _movie_qa}


def _break_schema(level: str, answer: dict) -> None:
    """Valid JSON that a schema rejects: one item too few in the level's main list."""
    key = {"outline": "acts", "scenes": "scenes", "shots": "shots", "movie_qa": "plot"}[level]
    answer[key] = answer[key][:-1]


def _blow_up(level: str, answer: dict, chars: int) -> None:
    """A valid answer with one text field of ``chars`` characters (the outline's overview, the first summary ...)."""
    filler = ("The story goes on and on. " * (chars // 26 + 1))[:chars]
    if level == "outline":
        answer["overview"] = filler
    elif level == "scenes":
        answer["scenes"][0]["summary"] = filler
    elif level == "shots":
        answer["qa"][0]["answer"] = filler
    else:
        answer["overview"]["answer"] = filler


def _break_consistency(level: str, answer: dict) -> None:
    """Valid JSON of the right shape whose content contradicts the story."""
    if level == "outline":
        answer["acts"][0]["locations"] = ["atlantis"]
    elif level == "scenes":
        answer["scenes"][0]["location"] = "atlantis"
    elif level == "shots":
        answer["shots"][0]["prompt"] = "Mara stands somewhere and smiles"
    else:
        answer["plot"][0]["question"] = "Tell me a story."
