"""JSON schemas for structured outputs, and reading JSON out of what a model wrote."""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel, ValidationError


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a pydantic model in the form OpenAI's strict structured outputs accept.

    Strict mode wants every object closed (``additionalProperties: false``) with all its properties
    required, and no ``default`` values; ``$defs``/``$ref``, ``enum``, ``anyOf`` and array bounds are fine.
    String length bounds are not part of the subset strict mode accepts everywhere: ``maxLength`` becomes a sentence
    in the field's description (validation still enforces it and a repair round names the field).
    """
    schema = copy.deepcopy(model.model_json_schema())
    _make_strict(schema)
    return schema


def _make_strict(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("default", None)
        if "maxLength" in node:
            limit = node.pop("maxLength")
            note = f"At most {limit} characters."
            node["description"] = f"{node['description']} {note}" if node.get("description") else note
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        for value in node.values():
            _make_strict(value)
    elif isinstance(node, list):
        for value in node:
            _make_strict(value)


class AnswerInvalid(Exception):
    """A model's answer cannot be used; ``problems`` are short sentences to show the model in a repair."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems or ["the answer is not usable"]
        super().__init__("; ".join(self.problems))


def extract_json(text: str | None) -> Any:
    """Parse the JSON object a model answered, tolerating code fences and prose around it.

    Raises :class:`AnswerInvalid` describing why nothing could be parsed.
    """
    if text is None or not text.strip():
        raise AnswerInvalid(["the answer was empty; answer with one JSON object"])
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as err:
        first_error = err
    # Servers without structured outputs often wrap the object in ```json fences or a sentence.
    start = stripped.find("{")
    if start >= 0:
        decoder = json.JSONDecoder()
        try:
            value, _ = decoder.raw_decode(stripped[start:])
            return value
        except json.JSONDecodeError:
            pass
    raise AnswerInvalid([
        f"the answer is not valid JSON ({first_error.msg} at line {first_error.lineno} column {first_error.colno}); "
        "answer with one complete JSON object and nothing else"
    ])


def validation_problems(err: ValidationError, limit: int = 12) -> list[str]:
    """Pydantic errors as short 'where: what' sentences, at most ``limit`` of them."""
    problems = []
    for item in err.errors()[:limit]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "answer"
        message = item.get("msg", "invalid value").removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    extra = len(err.errors()) - limit
    if extra > 0:
        problems.append(f"and {extra} more problems of the same kinds")
    return problems
