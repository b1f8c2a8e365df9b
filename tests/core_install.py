"""Run code as on the core install (`pip install -e .`): the optional packages are not installed at all.

Putting `None` into `sys.modules` only makes an import fail; libraries that ask whether a package is installed
(`importlib.util.find_spec`, `importlib.metadata`) or look for it in `sys.modules` (datasets does both) then still
believe it is there. Here the interpreter starts without its site-packages (`-S`) and sees a copy of them made of
symbolic links that leaves the optional packages and their metadata out, so they are as absent as on a fresh
machine.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: What `pip install -e .` does not install (the extras); distributions named by their import names.
OPTIONAL = ("torch", "torchcodec", "transformers", "diffusers", "openai", "accelerate", "peft", "safetensors",
            "deepspeed", "sentencepiece", "matplotlib", "lmms_eval", "tokenizers", "triton", "nvidia")


def _is_optional(name: str) -> bool:
    base = name.split("-")[0].split(".")[0].lower().replace("_", "")
    return any(base == opt.replace("_", "") for opt in OPTIONAL)


def core_site_packages(folder: Path) -> Path:
    """A folder of links to this environment's site-packages entries, the optional packages left out."""
    folder.mkdir(parents=True, exist_ok=True)
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            target = folder / entry.name
            if _is_optional(entry.name) or entry.suffix == ".pth" or target.exists():
                continue
            target.symlink_to(entry)
    return folder


def core_python(code: str, workdir: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that has only the core install's packages (and this checkout)."""
    packages = core_site_packages(workdir / ".core-site-packages")
    environment = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO), str(packages)]),
                   "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=workdir, env=environment, timeout=timeout)
