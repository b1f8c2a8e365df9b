"""The shape of the code: imports go one way, no module looks another up by name, functions stay short.

Read from the source with `ast` (nothing is imported), so every import counts, also those inside functions that
keep heavy dependencies off the import path. docs/architecture.md explains the layers listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# moviellm_data's modules and subpackages from the bottom up: a unit imports units of its own layer or lower ones, and
# the units import each other without circles.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "limits", "fileio", "argtypes", "sizes", "script", "video", "features"},  # foundations
    {"shards"},  # the WebDataset shard format and its manifest entries
    {"folder"},  # the dataset folder: file names, recipe, locks, resumable packing, manifest
    {"llm", "prompts"},  # the chat client (its cache lives in a folder's work files), chat prompt templates
    {"writers", "renderers"},  # who writes scripts and who draws frames
    {"card", "preview", "scoring"},  # what a folder shows: its card, contact sheet, HTML pages and quality scores
    {"export", "pipeline"},  # training formats; the generate job
    {"backends"},  # writer and renderer backends the command line chooses between
    {"options"},  # option definitions shared by several verbs
    {"builders"},  # `datasets` builders of what moviellm publishes
    {"kinds"},  # dataset kinds and their card writers (builders' cards among them)
    {"hub"},  # push and pull
    {"cli"},  # the `moviellm` command and its verb registry
    {"commands", "__main__"},  # one module per verb
]
# The one import against the layers: the command line finds the verb modules in `commands/` and imports them so that
# they register themselves (`cli.verb`); the verbs import `cli`, never the other way round.
DISCOVERY = ("moviellm_data.cli", "moviellm_data.commands")

# The model classes import nothing from the data side (from_pretrained users need none of the generator).
MODEL_CLASSES = ["configuration_llamavid", "modeling_llamavid", "processing_llamavid", "image_processing_llamavid",
                 "convert_llamavid_original", "fast_paths", "fast_attention", "cuda_graph_decoding",
                 "vision_kernels", "vision_tower", "input_format", "convert_llamavid_options"]

MAX_FUNCTION_LINES = 120


def _modules(package: str) -> dict[str, Path]:
    root = REPO / package
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement of a module, wherever it stands."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` names the submodule when there is one
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.append((name, node.lineno))
    return found


def _graph(package: str) -> tuple[dict[str, Path], dict[str, set[str]], dict[tuple[str, str], int]]:
    known = {**_modules("moviellm_data"), **_modules("moviellm_model")}
    modules = {m: p for m, p in known.items() if m.split(".")[0] == package}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    lines = {}
    for module, path in modules.items():
        for target, line in _imports(module, path, known):
            if target != module:
                edges[module].add(target)
                lines.setdefault((module, target), line)
    return modules, edges, lines


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_moviellm_data_unit_has_a_layer():
    units = {_unit(m) for m in _modules("moviellm_data")}
    placed = set().union(*LAYERS)
    assert units <= placed, f"give these a layer in LAYERS (and in docs/architecture.md): {sorted(units - placed)}"


def test_moviellm_data_imports_go_down_the_layers():
    modules, edges, lines = _graph("moviellm_data")
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    wrong = []
    for module, targets in edges.items():
        for target in targets:
            if not target.startswith("moviellm_data") or (module, target) == DISCOVERY:
                continue
            a, b = _unit(module), _unit(target)
            if layer[b] > layer[a]:
                wrong.append(f"{modules[module].relative_to(REPO)}:{lines[module, target]} imports {target} "
                             f"({b}, layer {layer[b]}) from {a} (layer {layer[a]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan): each is an import circle."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return circles


def test_no_circles_between_moviellm_data_units():
    _, edges, _ = _graph("moviellm_data")
    units: dict[str, set[str]] = {}
    for module, targets in edges.items():
        units.setdefault(_unit(module), set()).update(
            _unit(t) for t in targets if t.startswith("moviellm_data") and (module, t) != DISCOVERY and _unit(t) != _unit(module))
    assert not _circles(units), f"import circles between subpackages/modules: {_circles(units)}"


@pytest.mark.parametrize("package", ["moviellm_data", "moviellm_model"])
def test_no_import_circles(package):
    _, edges, _ = _graph(package)
    edges = {m: {t for t in ts if t in edges and (m, t) != DISCOVERY} for m, ts in edges.items()}
    circles = _circles(edges)
    assert not circles, f"import circles: {circles}"


def test_the_model_classes_import_nothing_from_the_data_side():
    _, edges, lines = _graph("moviellm_model")
    wrong = [f"{m} imports {t}" for m, ts in edges.items() for t in ts
             if m.split(".")[-1] in MODEL_CLASSES and t.startswith("moviellm_data")]
    assert not wrong, wrong


def _own_submodule(call: ast.Call) -> bool:
    """`importlib.import_module(".name", __name__)`: a package loading one of its own submodules lazily (PEP 562)."""
    if len(call.args) != 2 or ast.unparse(call.args[1]) != "__name__":
        return False
    first = call.args[0]
    if isinstance(first, ast.JoinedStr):
        first = first.values[0] if first.values else first
    return isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith(".")


def test_no_project_module_is_looked_up_by_name():
    """Only the verb discovery of the command line imports another package's modules by name.

    Everything else imports them statically, where readers and tools see the dependency; a package may load its own
    submodules lazily by relative name (`moviellm_model.inference` keeps `--help` free of torch that way).
    """
    calls = []
    for package in ("moviellm_data", "moviellm_model"):
        for module, path in _modules(package).items():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and not _own_submodule(node):
                    name = ast.unparse(node.func)
                    if name in ("importlib.import_module", "import_module", "__import__", "importlib.__import__"):
                        calls.append(f"{module}:{node.lineno}")
    assert calls == ["moviellm_data.cli:" + str(_discovery_line())], calls


def _discovery_line() -> int:
    tree = ast.parse((REPO / "moviellm_data" / "cli.py").read_text(encoding="utf-8"))
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_load_command_modules")
    return next(n.lineno for n in ast.walk(function) if isinstance(n, ast.Call)
                and ast.unparse(n.func) == "importlib.import_module")


@pytest.mark.parametrize("package", ["moviellm_data", "moviellm_model"])
def test_functions_fit_in_one_head(package):
    long = []
    for module, path in _modules(package).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines (split them along their seams): {long}"


def test_shared_options_are_defined_once():
    """`--shard-size`, `--crf` and `--no-progress` come from moviellm_data.options; the shard size default is the folder's."""
    from moviellm_data.argtypes import byte_size
    from moviellm_data.folder import DEFAULT_SHARD_BYTES
    from moviellm_data.options import DEFAULT_SHARD_SIZE

    defined = []
    for module, path in _modules("moviellm_data").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("add_argument") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and first.value in ("--shard-size", "--crf", "--no-progress"):
                    defined.append((module, first.value))
    assert sorted(defined) == [("moviellm_data.options", "--crf"), ("moviellm_data.options", "--no-progress"),
                               ("moviellm_data.options", "--shard-size")]
    assert byte_size(DEFAULT_SHARD_SIZE) == DEFAULT_SHARD_BYTES
