"""Named samplers: which diffusers scheduler a preset denoises with, configured how.

A sampler is part of the keyframe recipe (it decides what a frame looks like), so presets name one and the
dataset recipe records the name. ``model`` keeps the scheduler the model ships with (SDXL 1.0: Euler with
"leading" timesteps, what the reference and ``fast`` presets use); the others build a scheduler from the model's
own scheduler config (its betas and prediction type) with the options below, as the weights' authors prescribe:

- ``dpmsolver++``: DPM-Solver++ (2M) with Karras sigmas, the ``solver`` preset's 20-25-step ODE solver;
- ``euler-trailing``: Euler with "trailing" timesteps, what the SDXL-Lightning cards prescribe;
- ``ddim-trailing``: DDIM with "trailing" timesteps (no sample clipping, alpha of the last step not forced to 1),
  what the Hyper-SD and PCM cards prescribe;
- ``lcm``: the latent-consistency sampler of LCM-LoRA, also what the DMD2 card samples with (at its own timesteps).

Importing this module imports neither torch nor diffusers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class and the options it is built with (on top of the model's scheduler config)."""

    name: str
    scheduler: str | None  # diffusers class name; None keeps the model's own scheduler
    options: dict = field(default_factory=dict)
    description: str = ""


SAMPLERS: dict[str, Sampler] = {
    "model": Sampler("model", None, {}, "the scheduler the model ships with (SDXL 1.0: Euler, leading timesteps)"),
    "dpmsolver++": Sampler(
        "dpmsolver++", "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM-Solver++ 2M with Karras sigmas"),
    "euler-trailing": Sampler("euler-trailing", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                              "Euler, trailing timesteps (SDXL-Lightning)"),
    "ddim-trailing": Sampler(
        "ddim-trailing", "DDIMScheduler",
        {"timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": False},
        "DDIM, trailing timesteps (Hyper-SD, PCM)"),
    "lcm": Sampler("lcm", "LCMScheduler", {}, "latent-consistency sampler (LCM-LoRA, DMD2)"),
}


def get_sampler(name: str) -> Sampler:
    """The sampler called ``name``; one sentence listing the known ones otherwise."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.") from None


def with_sampler(pipe, name: str):
    """``pipe`` denoising with sampler ``name``: a shallow copy with its own scheduler (``pipe`` itself is unchanged).

    The copy shares every model with ``pipe``; only its scheduler (and the config entry naming it) is its own, so
    a pipeline handed to the renderer keeps the scheduler its owner gave it.
    """
    sampler = get_sampler(name)
    if sampler.scheduler is None or pipe is None:
        return pipe
    import diffusers

    scheduler_class = getattr(diffusers, sampler.scheduler)
    configured = copy.copy(pipe)
    configured.scheduler = scheduler_class.from_config(pipe.scheduler.config, **sampler.options)
    return configured


__all__ = ["SAMPLERS", "Sampler", "get_sampler", "with_sampler"]
