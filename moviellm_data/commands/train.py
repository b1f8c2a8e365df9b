"""``moviellm train``: stage-3 long-video tuning of LLaMA-VID from a recipe (`configs/*.yaml`)."""

from __future__ import annotations

import argparse
import os

from ..cli import verb
from ..errors import ConfigError, MovieLLMError
from ..options import add_progress_option

_EPILOG = """\
Any recipe key or transformers TrainingArguments field can be overridden as --KEY VALUE, e.g.
  moviellm train --config configs/tiny-cpu.yaml --output-dir runs/tiny --max-steps 40 --learning-rate 5e-4
Rerunning the same command continues from the newest checkpoint-* in the output folder, at the same step and the
same place in the data. Several GPUs: the same command under `accelerate launch --config_file
configs/accelerate/fsdp.yaml` (or zero2-offload.yaml, zero3.yaml) or `torchrun --nproc-per-node N`.
"""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("--config", required=True, metavar="RECIPE.yaml",
                        help="The training recipe: configs/tiny-cpu.yaml, configs/stage3-longvideo.yaml, "
                             "configs/movie-tuning.yaml or your own.")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="Where checkpoints and the final model go (default: the recipe's output_dir).")
    add_progress_option(parser)


def parse_overrides(words: list[str]) -> dict[str, str]:
    """``--KEY VALUE`` / ``--KEY=VALUE`` pairs of the command line (one sentence for anything else)."""
    overrides, index = {}, 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--") or len(word) == 2:
            raise ConfigError(f"{word!r} is not an option; give recipe overrides as --KEY VALUE.")
        if "=" in word:
            key, value = word[2:].split("=", 1)
            index += 1
        else:
            if index + 1 >= len(words) or words[index + 1].startswith("--"):
                raise ConfigError(f"{word} needs a value (--KEY VALUE).")
            key, value = word[2:], words[index + 1]
            index += 2
        overrides[key] = value
    return overrides


@verb("train", "Tune LLaMA-VID on long videos (stage 3) from a recipe; resumes by itself.", _arguments)
def run_train(args: argparse.Namespace) -> int:
    overrides = parse_overrides(list(args.extra_options))
    try:
        from moviellm_model.training import RecipeError, load_recipe, run_training
        from moviellm_model.training.records import DataError
    except ImportError as err:
        raise MovieLLMError(f"train needs the train extra ({err.name} is missing); install it with "
                            "`pip install 'moviellm[train]'` (after the CPU or CUDA build of torch).") from None
    try:
        recipe = load_recipe(args.config, overrides)
        result = run_training(recipe, output_dir=args.output_dir, progress=not args.no_progress)
    except (RecipeError, DataError) as err:
        raise ConfigError(str(err)) from None
    if os.environ.get("RANK", "0") != "0":
        return 0  # one summary per run, from the first process
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    resumed = f" (resumed from {result.resumed_from.name})" if result.resumed_from else ""
    print(f"{result.output_dir}: trained to step {result.global_step}{resumed}, final loss {loss}; "
          f"data: {result.data.summary()}.")
    return 0


run_train.accepts_extra_options = True
