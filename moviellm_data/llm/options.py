"""Command-line options of the ``openai`` writer backend and building the writer from them.

The API key is read from an environment variable (``OPENAI_API_KEY``, or the one named by
``--llm-api-key-env``) and never accepted on the command line, because the command line is recorded in
the dataset's ``pipeline.yaml``. This module imports no openai code: building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from pathlib import Path

from ..errors import ConfigError
from .cost import parse_price, price_for
from .redact import url_has_credentials

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_NAME = "llm-cache.sqlite"


def add_openai_writer_arguments(group: argparse._ArgumentGroup) -> None:
    """The ``--llm-*`` options (plus --concurrency, --max-cost, --temperature, --price-per-mtok)."""
    group.add_argument("--llm-model", metavar="MODEL",
                       help="Chat model for --writer openai: an OpenAI model (gpt-4o-mini), an Azure deployment, or "
                            "the name a vLLM/Ollama/llama.cpp server serves. Required with --writer openai.")
    group.add_argument("--llm-base-url", metavar="URL",
                       help="OpenAI-compatible API root, e.g. http://localhost:8000/v1 (vLLM), "
                            "http://localhost:11434/v1 (Ollama), https://RESOURCE.openai.azure.com/openai/v1 (Azure). "
                            f"Default: $OPENAI_BASE_URL, else {OPENAI_URL}.")
    group.add_argument("--llm-api-key-env", metavar="NAME", default="OPENAI_API_KEY",
                       help="Name of the environment variable that holds the API key (keys are never taken on the "
                            "command line, which is recorded in pipeline.yaml). Local servers need none. "
                            "Default: OPENAI_API_KEY.")
    group.add_argument("--concurrency", type=int, default=16, metavar="K",
                       help="LLM requests in flight at once. Default: 16.")
    group.add_argument("--max-cost", type=float, metavar="USD",
                       help="Stop sending requests once this run has spent this many US dollars; movies not finished "
                            "are reported failed and a rerun continues from the cache. Default: no limit.")
    group.add_argument("--price-per-mtok", metavar="IN,OUT",
                       help="Price of --llm-model in USD per million input and output tokens, e.g. 0.15,0.60; "
                            "overrides the built-in table (needed for --max-cost with models it does not list).")
    group.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature. Default: 0.7.")
    group.add_argument("--llm-max-tokens", type=int, default=4096, metavar="N",
                       help="Room for one answer; an answer cut off is asked again with up to 4 times as much. "
                            "Default: 4096.")
    group.add_argument("--llm-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="Seconds to wait for one answer before retrying it. Default: 120.")
    group.add_argument("--llm-retries", type=int, default=6, metavar="N",
                       help="Retries of one request after 429, 5xx or a timeout, honouring Retry-After. Default: 6.")
    group.add_argument("--llm-backoff", type=float, default=1.0, metavar="SECONDS",
                       help="Wait before the first retry when the server gives no Retry-After; doubles with every "
                            "retry, up to 60 s. Default: 1.")
    group.add_argument("--llm-repairs", type=int, default=2, metavar="N",
                       help="Rounds in which the model sees why its answer was rejected and corrects it. Default: 2.")
    group.add_argument("--llm-structured", choices=("auto", "json_schema", "json_object", "text"), default="auto",
                       help="How answers are constrained: auto tries JSON-schema structured outputs, then JSON mode, "
                            "then plain text (always validated). Default: auto.")
    group.add_argument("--llm-cache", metavar="PATH",
                       help="SQLite cache of validated answers: reruns and resumed runs read them for free; 'off' "
                            f"disables it. Default: OUT/.moviellm/{DEFAULT_CACHE_NAME}.")
    group.add_argument("--batch-api", action="store_true",
                       help="Send the requests through the OpenAI Batch API: half price, answers within 24 hours; a "
                            "killed run picks up its pending batches instead of paying again. Each level of all movies "
                            "becomes one batch, so plan for several batch turnarounds per run.")
    group.add_argument("--batch-poll", type=float, default=30.0, metavar="SECONDS",
                       help="Seconds between status checks of a pending batch (--batch-api). Default: 30.")
    group.add_argument("--batch-flush", type=float, default=2.0, metavar="SECONDS",
                       help="Seconds without a new request before the collected requests are submitted as one batch "
                            "(--batch-api). Default: 2.")
    group.add_argument("--llm-prompts", metavar="DIR",
                       help="A folder whose <name>.txt files replace the built-in prompt templates "
                            "(system, outline, scenes, shots, movie_qa, repair, json_mode).")


def resolve_api_key(env_name: str, base_url: str) -> str:
    """The key from ``$env_name``; a placeholder for local servers that need none."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name or ""):
        # Never echo the value: someone may have pasted the key itself here.
        raise ConfigError("--llm-api-key-env takes the NAME of an environment variable such as OPENAI_API_KEY, "
                          "not a key; export the key in that variable.")
    key = os.environ.get(env_name, "").strip()
    if key:
        return key
    if base_url.rstrip("/") == OPENAI_URL:
        raise ConfigError(f"no API key for {OPENAI_URL}: export it as ${env_name} "
                          "(or name another variable with --llm-api-key-env).")
    return "no-key"  # vLLM, Ollama and llama.cpp servers accept any bearer token by default


def build_openai_writer(args: argparse.Namespace):
    """The :class:`~moviellm_data.writers.llm.LLMWriter` the options describe, or a ConfigError."""
    from ..writers.llm import LLMWriter
    from .client import ChatSettings
    from .retry import RetryPolicy

    if not args.llm_model:
        raise ConfigError("--writer openai needs --llm-model, e.g. --llm-model gpt-4o-mini.")
    if importlib.util.find_spec("openai") is None:
        raise ConfigError("the openai writer needs the llm extra (openai is missing); run pip install 'moviellm[llm]'.")
    base_url = args.llm_base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
    source = "--llm-base-url" if args.llm_base_url else "$OPENAI_BASE_URL"
    if not re.match(r"https?://[^/]+", base_url):
        raise ConfigError(f"{source} must be an http:// or https:// URL such as http://localhost:8000/v1.")
    if url_has_credentials(base_url):
        # Not echoed: the URL holds a credential.
        raise ConfigError(f"{source} must not carry a user, password or query string (it would be recorded with the "
                          "dataset); put the key in $OPENAI_API_KEY or the variable named by --llm-api-key-env.")
    api_key = resolve_api_key(args.llm_api_key_env, base_url)
    checks = [
        (args.concurrency >= 1, f"--concurrency must be at least 1, got {args.concurrency}."),
        (args.llm_max_tokens >= 1, f"--llm-max-tokens must be at least 1, got {args.llm_max_tokens}."),
        (args.llm_timeout > 0, f"--llm-timeout must be positive, got {args.llm_timeout}."),
        (args.llm_retries >= 0, f"--llm-retries must be 0 or more, got {args.llm_retries}."),
        (args.llm_backoff >= 0, f"--llm-backoff must not be negative, got {args.llm_backoff}."),
        (args.llm_repairs >= 0, f"--llm-repairs must be 0 or more, got {args.llm_repairs}."),
        (0.0 <= args.temperature <= 2.0, f"--temperature must be between 0 and 2, got {args.temperature}."),
        (args.max_cost is None or args.max_cost > 0, f"--max-cost must be positive, got {args.max_cost}."),
        (args.batch_poll > 0, f"--batch-poll must be positive, got {args.batch_poll}."),
        (args.batch_flush >= 0, f"--batch-flush must not be negative, got {args.batch_flush}."),
        (0.0 <= getattr(args, "dialogue_ratio", 0.5) <= 1.0,
         f"--dialogue-ratio must be between 0 and 1, got {getattr(args, 'dialogue_ratio', 0.5)}."),
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
        price = price_for(args.llm_model)
    if args.max_cost is not None and price is None:
        raise ConfigError(f"--max-cost needs the price of {args.llm_model}, which the built-in table lacks; "
                          "add --price-per-mtok IN,OUT in USD per million tokens.")
    if args.llm_cache == "off":
        cache_path = None
    elif args.llm_cache:
        cache_path = Path(args.llm_cache)
    else:
        from ..pipeline import WORK_DIR  # the dataset folder's hidden work folder

        cache_path = Path(args.out) / WORK_DIR / DEFAULT_CACHE_NAME
    settings = ChatSettings(
        model=args.llm_model,
        base_url=base_url,
        api_key=api_key,
        api_key_source=args.llm_api_key_env,
        temperature=args.temperature,
        max_tokens=args.llm_max_tokens,
        max_tokens_cap=4 * args.llm_max_tokens,
        timeout=args.llm_timeout,
        concurrency=args.concurrency,
        structured=args.llm_structured,
        retry=RetryPolicy(max_retries=args.llm_retries, backoff_base=args.llm_backoff),
        max_repairs=args.llm_repairs,
        price=price,
        max_cost=args.max_cost,
        batch=args.batch_api,
        batch_flush=args.batch_flush,
        batch_poll=args.batch_poll,
    )
    return LLMWriter(
        settings,
        size=args.size,
        dialogue_ratio=getattr(args, "dialogue_ratio", 0.5),
        cache_path=cache_path,
        prompts_dir=args.llm_prompts,
    )
