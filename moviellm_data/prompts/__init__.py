"""Versioned prompt templates of the LLM writer, one file each.

A template file starts with metadata comment lines (``# name: outline``, ``# version: 1``) followed by
a blank line and the body, which uses ``$name`` placeholders (:class:`string.Template`, so JSON braces
need no escaping). The sha256 of the whole file goes into every script's provenance and into the LLM
cache key (through the rendered text), so editing a template can never be mistaken for the old one.

Users can replace any template with ``--llm-prompts DIR`` holding files of the same names.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from ..script import PromptRecord

# The placeholders the writer fills in each template; a template may use any of them, and no others.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "system": frozenset(),
    "outline": frozenset({"theme", "genres", "locations", "acts", "scenes_per_act", "shots_per_scene", "constraints"}),
    "scenes": frozenset({"outline", "act_number", "acts", "act_title", "act_summary", "act_locations", "scenes",
                         "constraints"}),
    "shots": frozenset({"overview", "style", "characters", "act_number", "act_title", "act_summary", "previous",
                        "scene_number", "scene_title", "scene_location", "scene_summary", "shots", "dialogue", "verbs",
                        "locations", "names", "constraints"}),
    "movie_qa": frozenset({"title", "overview", "story", "plot", "constraints"}),
    "repair": frozenset({"problems"}),
    "json_mode": frozenset({"schema"}),
}
TEMPLATE_NAMES = tuple(PLACEHOLDERS)
_SUFFIX = ".txt"


@dataclass(frozen=True)
class PromptTemplate:
    """One template: its name, version, body and the sha256 of its file."""

    name: str
    version: str
    body: str
    sha256: str
    source: str

    def render(self, **values: object) -> str:
        """The body with every ``$placeholder`` filled; a missing value is a programming error."""
        # Placeholders were checked when the file was read, so this cannot miss one.
        return string.Template(self.body).substitute({k: str(v) for k, v in values.items()})

    def record(self) -> PromptRecord:
        return PromptRecord(name=self.name, version=self.version, sha256=self.sha256)


def parse_template(data: bytes, source: str, expected_name: str, placeholders: frozenset[str] | None = None,
                   filled_by: str = "the writer") -> PromptTemplate:
    """Split a template file into metadata and body and check its name, version and placeholders.

    ``placeholders`` are the names the caller fills (default: the writer's, from :data:`PLACEHOLDERS`);
    ``filled_by`` names that caller in the error about an unknown one.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"prompt template {source} is not UTF-8 text; save it as UTF-8.") from None
    meta: dict[str, str] = {}
    lines = text.splitlines(keepends=True)
    body_start = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#") and ":" in stripped:
            key, _, value = stripped.lstrip("#").partition(":")
            meta[key.strip().lower()] = value.strip()
            body_start = i + 1
            continue
        if not stripped and meta:
            body_start = i + 1
        break
    name, version = meta.get("name"), meta.get("version")
    if name != expected_name or not version:
        raise ConfigError(f"prompt template {source} must start with '# name: {expected_name}' and '# version: N' "
                          "lines; add them above the text.")
    body = "".join(lines[body_start:]).rstrip("\n")
    template = string.Template(body)
    if not template.is_valid():
        raise ConfigError(f"prompt template {source} has a malformed $placeholder; write $$ for a literal dollar sign.")
    known = PLACEHOLDERS[expected_name] if placeholders is None else placeholders
    unknown = sorted(set(template.get_identifiers()) - known)
    if unknown:
        allowed = ", ".join(f"${p}" for p in sorted(known)) or "none"
        raise ConfigError(f"prompt template {source} uses {', '.join('$' + u for u in unknown)}, which {filled_by} does "
                          f"not fill; use only {allowed}.")
    return PromptTemplate(name=name, version=version, body=body, sha256=hashlib.sha256(data).hexdigest(), source=source)


def load_prompts(override_dir: str | Path | None = None) -> dict[str, PromptTemplate]:
    """The built-in templates, each replaced by ``override_dir/<name>.txt`` where such a file exists."""
    templates: dict[str, PromptTemplate] = {}
    folder = Path(override_dir) if override_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"prompt folder {folder} does not exist; give a folder of <name>.txt templates.")
    for name in TEMPLATE_NAMES:
        custom = folder / f"{name}{_SUFFIX}" if folder is not None else None
        if custom is not None and custom.is_file():
            templates[name] = parse_template(custom.read_bytes(), str(custom), name)
        else:
            data = resources.files(__name__).joinpath(f"{name}{_SUFFIX}").read_bytes()
            templates[name] = parse_template(data, f"moviellm_data/prompts/{name}{_SUFFIX}", name)
    return templates
