"""Command-line options of a chat model, for every command-line user of the client, and what they build.

A user of the client (the ``openai`` writer backend, :mod:`moviellm_data.writers.llm_writer_cli`; the
evaluation judge, ``moviellm eval``) describes itself as a :class:`ChatRole` and gets the same options under
its own prefix. The API key is read from an environment variable (``OPENAI_API_KEY``, or the one named by
``--PREFIX-api-key-env``) and never accepted on the command line, because the command line is recorded
(in ``pipeline.yaml``, ``results.json``). This module imports no openai code: building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .cost import parse_price, price_for
from .redact import url_has_credentials

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_NAME = "llm-cache.sqlite"


@dataclass(frozen=True)
class ChatRole:
    """Who asks the chat model, which decides the options' names, defaults and wording.

    Args:
        prefix: options are ``--PREFIX-model``, ``--PREFIX-base-url``, ... (``--concurrency``,
            ``--max-cost``, ``--price-per-mtok``, ``--temperature`` and the batch options have none).
        needed_by: what needs ``--PREFIX-model``, in the sentence when it is missing.
        unfinished: what ``--max-cost`` leaves behind when the budget runs out, for its help.
        recorded_in: where the command line is recorded (why keys never go on it).
        cache_name: the cache file's name under ``OUT/.moviellm/``.
        temperature, max_tokens: defaults of ``--temperature`` and ``--PREFIX-max-tokens``.
        batch_unit: what becomes one Batch API job, for the help of ``--batch-api``.
    """

    prefix: str
    needed_by: str
    unfinished: str
    recorded_in: str
    cache_name: str
    temperature: float
    max_tokens: int
    batch_unit: str


def add_chat_arguments(group: argparse._ArgumentGroup, role: ChatRole) -> None:
    """The chat-model options of ``role``: model, endpoint, key variable, limits, retries, cache, Batch API."""
    p = role.prefix
    group.add_argument(f"--{p}-model", metavar="MODEL",
                       help=f"Chat model for {role.needed_by}: an OpenAI model (gpt-4o-mini), an Azure deployment, or "
                            f"the name a vLLM/Ollama/llama.cpp server serves. Required with {role.needed_by}.")
    group.add_argument(f"--{p}-base-url", metavar="URL",
                       help="OpenAI-compatible API root, e.g. http://localhost:8000/v1 (vLLM), "
                            "http://localhost:11434/v1 (Ollama), https://RESOURCE.openai.azure.com/openai/v1 (Azure). "
                            f"Default: $OPENAI_BASE_URL, else {OPENAI_URL}.")
    group.add_argument(f"--{p}-api-key-env", metavar="NAME", default="OPENAI_API_KEY",
                       help="Name of the environment variable that holds the API key (keys are never taken on the "
                            f"command line, which is recorded in {role.recorded_in}). Local servers need none. "
                            "Default: OPENAI_API_KEY.")
    group.add_argument("--concurrency", type=int, default=16, metavar="K",
                       help="LLM requests in flight at once. Default: 16.")
    group.add_argument("--max-cost", type=float, metavar="USD",
                       help=f"Stop sending requests once this run has spent this many US dollars; {role.unfinished}. "
                            "Default: no limit.")
    group.add_argument("--price-per-mtok", metavar="IN,OUT",
                       help=f"Price of --{p}-model in USD per million input and output tokens, e.g. 0.15,0.60; "
                            "overrides the built-in table (needed for --max-cost with models it does not list).")
    group.add_argument("--temperature", type=float, default=role.temperature,
                       help=f"Sampling temperature. Default: {role.temperature:g}.")
    group.add_argument(f"--{p}-max-tokens", type=int, default=role.max_tokens, metavar="N",
                       help="Room for one answer; an answer cut off is asked again with up to 4 times as much. "
                            f"Default: {role.max_tokens}.")
    group.add_argument(f"--{p}-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="Seconds to wait for one answer before retrying it. Default: 120.")
    group.add_argument(f"--{p}-retries", type=int, default=6, metavar="N",
                       help="Retries of one request after 429, 5xx or a timeout, honouring Retry-After. Default: 6.")
    group.add_argument(f"--{p}-backoff", type=float, default=1.0, metavar="SECONDS",
                       help="Wait before the first retry when the server gives no Retry-After; doubles with every "
                            "retry, up to 60 s. Default: 1.")
    group.add_argument(f"--{p}-repairs", type=int, default=2, metavar="N",
                       help="Rounds in which the model sees why its answer was rejected and corrects it. Default: 2.")
    group.add_argument(f"--{p}-structured", choices=("auto", "json_schema", "json_object", "text"), default="auto",
                       help="How answers are constrained: auto tries JSON-schema structured outputs, then JSON mode, "
                            "then plain text (always validated). Default: auto.")
    group.add_argument(f"--{p}-cache", metavar="PATH",
                       help="SQLite cache of validated answers: reruns and resumed runs read them for free; 'off' "
                            f"disables it. Default: OUT/.moviellm/{role.cache_name}.")
    group.add_argument("--batch-api", action="store_true",
                       help="Send the requests through the OpenAI Batch API: half price, answers within 24 hours; a "
                            f"killed run picks up its pending batches instead of paying again. {role.batch_unit}")
    group.add_argument("--batch-poll", type=float, default=30.0, metavar="SECONDS",
                       help="Seconds between status checks of a pending batch (--batch-api). Default: 30.")
    group.add_argument("--batch-flush", type=float, default=2.0, metavar="SECONDS",
                       help="Seconds without a new request before the collected requests are submitted as one batch "
                            "(--batch-api). Default: 2.")


def resolve_api_key(env_name: str, base_url: str, prefix: str = "llm") -> str:
    """The key from ``$env_name``; a placeholder for local servers that need none."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name or ""):
        # Never echo the value: someone may have pasted the key itself here.
        raise ConfigError(f"--{prefix}-api-key-env takes the NAME of an environment variable such as OPENAI_API_KEY, "
                          "not a key; export the key in that variable.")
    key = os.environ.get(env_name, "").strip()
    if key:
        return key
    if base_url.rstrip("/") == OPENAI_URL:
        raise ConfigError(f"no API key for {OPENAI_URL}: export it as ${env_name} "
                          f"(or name another variable with --{prefix}-api-key-env).")
    return "no-key"  # vLLM, Ollama and llama.cpp servers accept any bearer token by default


def chat_settings_from_args(args: argparse.Namespace, role: ChatRole):
    """The :class:`~moviellm_data.llm.client.ChatSettings` the options of ``role`` describe, or a ConfigError."""
    from .client import ChatSettings
    from .retry import RetryPolicy

    p = role.prefix

    def opt(name: str):
        return getattr(args, f"{p}_{name}")

    model = opt("model")
    if not model:
        raise ConfigError(f"{role.needed_by} needs --{p}-model, e.g. --{p}-model gpt-4o-mini.")
    if importlib.util.find_spec("openai") is None:
        raise ConfigError(f"{role.needed_by} needs the llm extra (openai is missing); run pip install 'moviellm[llm]'.")
    base_url = opt("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
    source = f"--{p}-base-url" if opt("base_url") else "$OPENAI_BASE_URL"
    if not re.match(r"https?://[^/]+", base_url):
        raise ConfigError(f"{source} must be an http:// or https:// URL such as http://localhost:8000/v1.")
    if url_has_credentials(base_url):
        # Not echoed: the URL holds a credential.
        raise ConfigError(f"{source} must not carry a user, password or query string (it would be recorded in "
                          f"{role.recorded_in}); put the key in $OPENAI_API_KEY or the variable named by "
                          f"--{p}-api-key-env.")
    api_key = resolve_api_key(opt("api_key_env"), base_url, prefix=p)
    checks = [
        (args.concurrency >= 1, f"--concurrency must be at least 1, got {args.concurrency}."),
        (opt("max_tokens") >= 1, f"--{p}-max-tokens must be at least 1, got {opt('max_tokens')}."),
        (opt("timeout") > 0, f"--{p}-timeout must be positive, got {opt('timeout')}."),
        (opt("retries") >= 0, f"--{p}-retries must be 0 or more, got {opt('retries')}."),
        (opt("backoff") >= 0, f"--{p}-backoff must not be negative, got {opt('backoff')}."),
        (opt("repairs") >= 0, f"--{p}-repairs must be 0 or more, got {opt('repairs')}."),
        (0.0 <= args.temperature <= 2.0, f"--temperature must be between 0 and 2, got {args.temperature}."),
        (args.max_cost is None or args.max_cost > 0, f"--max-cost must be positive, got {args.max_cost}."),
        (args.batch_poll > 0, f"--batch-poll must be positive, got {args.batch_poll}."),
        (args.batch_flush >= 0, f"--batch-flush must not be negative, got {args.batch_flush}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if args.price_per_mtok:
        try:
            price = parse_price(args.price_per_mtok)
        except ValueError as err:
            raise ConfigError(f"--price-per-mtok: {err}.") from None
    else:
        price = price_for(model)
    if args.max_cost is not None and price is None:
        raise ConfigError(f"--max-cost needs the price of {model}, which the built-in table lacks; "
                          "add --price-per-mtok IN,OUT in USD per million tokens.")
    return ChatSettings(
        model=model,
        base_url=base_url,
        api_key=api_key,
        api_key_source=opt("api_key_env"),
        temperature=args.temperature,
        max_tokens=opt("max_tokens"),
        max_tokens_cap=4 * opt("max_tokens"),
        timeout=opt("timeout"),
        concurrency=args.concurrency,
        structured=opt("structured"),
        retry=RetryPolicy(max_retries=opt("retries"), backoff_base=opt("backoff")),
        max_repairs=opt("repairs"),
        price=price,
        max_cost=args.max_cost,
        batch=args.batch_api,
        batch_flush=args.batch_flush,
        batch_poll=args.batch_poll,
        option_prefix=p,
    )


def chat_cache_path(args: argparse.Namespace, role: ChatRole, out: str | Path) -> Path | None:
    """The cache file ``--PREFIX-cache`` names: None for 'off', else the path, by default ``OUT/.moviellm/NAME``."""
    value = getattr(args, f"{role.prefix}_cache")
    if value == "off":
        return None
    if value:
        return Path(value)
    from ..folder import WORK_DIR  # the output folder's hidden work folder

    return Path(out) / WORK_DIR / role.cache_name
