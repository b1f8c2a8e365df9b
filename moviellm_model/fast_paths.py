"""LLaMA-VID's speed options, apart from what the model computes.

Each option leaves the model's function unchanged (results within bf16 rounding) and is measured in
`benchmarks/bench_model.py`:

- attention priorities (`config.sdpa_backends`): the order in which SDPA tries its CUDA kernels;
- implicit causal masks under `torch.compile` (`config.fast_attention`, see `fast_attention.py` for the mask function):
  an all-ones padding mask is dropped eagerly, before the decoder, so that a traced decoder keeps SDPA's causal kernels;
- compiled blocks (`compile_blocks`): the EVA tower and the whole decoder stack, each compiled as one region;
- static decoding: the one-kernel mask of a single-token step over a static cache (`create_masks_for_generate`) and one
  CUDA graph per static cache (`config.cuda_graph_decoding`, see `cuda_graph_decoding.py`).

The model classes keep the public methods (`compile_blocks`, `uncompile_blocks`, `set_fast_attention`,
`create_masks_for_generate`, `get_compiled_call`); they call the functions here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_masks_for_generate as _transformers_masks_for_generate

from .cuda_graph_decoding import CudaGraphDecoder
from .fast_attention import FAST_ATTENTION
from .shared_prefix import SHARED_PREFIX_ATTENTION

__all__ = [
    "SDPA_BACKENDS",
    "compile_blocks",
    "create_masks_for_generate",
    "cuda_graph_decoder",
    "decoder_for",
    "enable_fast_inference",
    "prepare_decoder_inputs",
    "sdpa_priority",
    "set_fast_attention",
    "static_decoding_mask",
    "uncompile_blocks",
    "uses_fast_attention",
]

#: `config.sdpa_backends` names -> `torch.nn.attention.SDPBackend` members.
SDPA_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH"}


# ---------------------------------------------------------------------------------------------- attention priorities


def sdpa_priority(backends: Sequence[str] | None, device: torch.device):
    """Context that makes SDPA try `backends` in this order on CUDA (`config.sdpa_backends`); a no-op otherwise."""
    if not backends or device.type != "cuda" or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = [getattr(SDPBackend, SDPA_BACKENDS[name]) for name in backends]
    try:
        return sdpa_kernel(chosen, set_priority=True)
    except TypeError:  # torch < 2.6: no priority order, only a set of allowed kernels
        return sdpa_kernel(chosen)


# ------------------------------------------------------------------------------------------- implicit causal masks


def set_fast_attention(model, enabled: bool = True) -> None:
    """Switch `config.fast_attention` of a `LlamaVidModel` on or off.

    It replaces transformers' "sdpa" implementation of the language model by the same SDPA function with LLaMA-VID's
    mask function, and nothing else: with "eager" or "flash_attention_2" requested, the language model keeps them.
    """
    model.config.fast_attention = bool(enabled)
    text_config = model.language_model.config
    current = text_config._attn_implementation
    if enabled and current == "sdpa":
        text_config._attn_implementation = FAST_ATTENTION
    elif not enabled and current == FAST_ATTENTION:
        text_config._attn_implementation = "sdpa"


def uses_fast_attention(model) -> bool:
    """Whether the language model of a `LlamaVidModel` runs with LLaMA-VID's mask function."""
    return model.language_model.config._attn_implementation == FAST_ATTENTION


def _is_compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def prepare_decoder_inputs(model, attention_mask, inputs_embeds, kwargs):
    """Eager-side preparation for a compiled language model (`compile_blocks`) and for `fast_attention`.

    - An all-ones padding mask is dropped: it means "no padding", and without it the causal mask stays implicit
      (SDPA `is_causal`) even inside a compiled decoder, where transformers cannot look at the mask's values.
    - A static cache that the compiled decoder will fill is allocated here, eagerly, so that its tensors get static
      addresses (CUDA graphs of the decoding steps need them; allocating inside a traced graph skips that). Prompts
      into a static cache skip the compiled decoder (`decoder_for`), single tokens use it.

    Returns the attention mask to pass on.
    """
    if torch.compiler.is_compiling():
        return attention_mask
    if (
        uses_fast_attention(model)
        and attention_mask is not None
        and attention_mask.ndim == 2
        and bool(attention_mask.all())
    ):
        attention_mask = None
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if _is_compiled(model.language_model) and cache is not None and getattr(cache, "is_compileable", False):
        layers = getattr(cache, "layers", [])
        if hasattr(cache, "early_initialization") and not all(getattr(x, "is_initialized", True) for x in layers):
            text = model.config.text_config
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            cache.early_initialization(
                batch_size=inputs_embeds.shape[0],
                num_heads=text.num_key_value_heads,
                head_dim=head_dim,
                dtype=inputs_embeds.dtype,
                device=inputs_embeds.device,
            )
    return attention_mask


def decoder_for(language_model: torch.nn.Module, inputs_embeds: torch.Tensor, kwargs) -> Callable:
    """The callable that runs the decoder for these inputs: the compiled region, or its eager `forward`.

    A prompt into a static cache runs eagerly even when `compile_blocks` compiled the decoder: only eagerly can
    transformers read the cache position and keep the causal mask implicit (flash/cuDNN kernels).
    """
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if (
        _is_compiled(language_model)
        and not torch.compiler.is_compiling()
        and inputs_embeds.shape[1] > 1
        and getattr(cache, "is_compileable", False)
    ):
        return language_model.forward
    return language_model


# ---------------------------------------------------------------------------------------------------- compiled blocks


def compile_blocks(model, vision: bool = True, language_model: bool = True, **compile_kwargs) -> None:
    """`torch.compile` the vision tower and/or the decoder of a `LlamaVidForConditionalGeneration`, each as one region.

    - Vision: the EVA tower is compiled as one region: norms, biases, GELU and residual adds are fused around the
      matrix products, across block boundaries too. Use it for feature extraction over many frames (a new batch size
      recompiles once, then the tower is compiled with a dynamic batch).
    - Language model: the whole decoder stack is compiled as one region, for long prefills. Per-layer regions would be
      recompiled once per layer (each decoder layer reads its own cache slot, which dynamo guards on) and stop being
      compiled after `torch._dynamo.config.recompile_limit` layers. This also switches on `config.fast_attention`, so
      that the compiled prefill keeps SDPA's flash/cuDNN causal kernels (a traced transformers mask would force a
      slower kernel). Another prompt length recompiles once, then the decoder is compiled with dynamic shapes.

    `generate(cache_implementation="static")` compiles its decoding step itself. `compile_kwargs` go to
    `torch.compile` (e.g. `mode`, `dynamic`). Undo with `uncompile_blocks`.
    """
    if vision:
        model.model.vision_model.compile(**compile_kwargs)
    if language_model:
        set_fast_attention(model.model, True)
        model.model.language_model.compile(**compile_kwargs)


def uncompile_blocks(model) -> None:
    """Drop what `compile_blocks` set up (eager blocks again)."""
    vision, language = model.model.vision_model, model.model.language_model
    for module in [vision, *vision.layers, language, *language.layers]:
        module._compiled_call_impl = None


# ------------------------------------------------------------------------------------------------------ inference

#: Frames per chunk of the vision tower, Q-Former and context attention when answering on a GPU: a 2-hour movie's
#: visual tokens in 0.46 s instead of 2.2 s with the original's 64 (8,192 frames, H200, benchmarks/RESULTS.md).
INFERENCE_VISUAL_CHUNK = 512


def enable_fast_inference(model, compile: bool = True) -> bool:
    """Switch on the speed options measured fastest for answering on a CUDA GPU (no-op elsewhere; returns whether
    anything changed): cuDNN-first attention, 512-frame visual chunks, one CUDA graph per decoding cache and, with
    `compile`, the decoder compiled for prefills (a minute of compilation on the first video, worth it for a benchmark,
    not for one question). The answers are the model's; only rounding may differ."""
    if model.device.type != "cuda":
        return False
    config = model.config
    config.sdpa_backends = config.sdpa_backends or ["cudnn", "flash", "efficient", "math"]
    config.visual_chunk_size = max(int(config.visual_chunk_size), INFERENCE_VISUAL_CHUNK)
    config.cuda_graph_decoding = True
    if compile:
        compile_blocks(model, vision=False)
    return True


# -------------------------------------------------------------------------------------------------- static decoding


def cuda_graph_decoder(model, compile_config) -> CudaGraphDecoder | None:
    """The decoding step for `generate` over a static cache with `config.cuda_graph_decoding` on CUDA, else None.

    The decoder is built once per compile settings and kept on the model; None tells the caller to use transformers'
    own `torch.compile` of `__call__` (CUDA-graph trees on GPUs).
    """
    if not getattr(model.config, "cuda_graph_decoding", False) or model.device.type != "cuda":
        return None
    compile_config = compile_config or model._default_compile_config()
    # the decoder captures the graph itself: inductor's CUDA-graph modes become their plain counterparts
    mode = {"reduce-overhead": None, "max-autotune": "max-autotune-no-cudagraphs"}.get(
        compile_config.mode, compile_config.mode
    )
    settings = dict(fullgraph=compile_config.fullgraph, dynamic=compile_config.dynamic,
                    backend=compile_config.backend, mode=mode, options=compile_config.options)
    if settings["options"] is not None:
        settings["mode"] = None  # torch.compile takes one of the two
    if getattr(model, "_cuda_graph_decoder_settings", None) != settings:
        model._cuda_graph_decoder = CudaGraphDecoder(torch.compile(model.__call__, **settings), model.lm_head.weight)
        model._cuda_graph_decoder_settings = settings
    return model._cuda_graph_decoder


def static_decoding_mask(model, inputs_embeds, attention_mask, cache, kwargs):
    """The [B, 1, 1, max_cache_len] mask of one token over a plain static cache, or None where it does not apply.

    `model` is the `LlamaVidModel`. Applies with `config.fast_attention` or while decoding over a shared prefix
    (`shared_prefix.py`), a 2D padding mask, a compileable cache whose layers share one length and none slides, and no
    special token patterns.
    """
    implementation = model.language_model.config._attn_implementation
    if implementation not in (FAST_ATTENTION, SHARED_PREFIX_ATTENTION) or inputs_embeds.shape[1] != 1:
        return None
    if attention_mask is None or attention_mask.ndim != 2 or not getattr(cache, "is_compileable", False):
        return None
    if any(kwargs.get(name) is not None for name in ("or_mask_function", "and_mask_function", "block_sequence_ids")):
        return None
    lengths = {getattr(layer, "max_cache_len", None) for layer in getattr(cache, "layers", [])}
    if len(lengths) != 1 or any(getattr(layer, "is_sliding", True) for layer in cache.layers):
        return None
    (length,) = lengths
    if not isinstance(length, int) or attention_mask.shape[1] > length:
        return None
    mask = F.pad(attention_mask.to(device=inputs_embeds.device, dtype=torch.bool), (0, length - attention_mask.shape[1]))
    return mask[:, None, None, :]


def create_masks_for_generate(model, config, inputs_embeds, attention_mask, *args, **kwargs):
    """The mask `generate` builds eagerly before every compiled decoding step over a static cache.

    With `config.fast_attention`, a step of one token over a plain static cache (no sliding window, no special token
    patterns) gets its mask by padding the 2D mask (one kernel): the keys seen so far that are not padding.
    transformers' generic construction is the same mask from several kernels and more Python, paid on every token
    while the GPU waits; it is used for everything else.
    """
    cache = kwargs.get("cache", kwargs.get("past_key_values", args[0] if args else None))
    mask = static_decoding_mask(model, inputs_embeds, attention_mask, cache, kwargs)
    if mask is not None:
        return mask
    return _transformers_masks_for_generate(config, inputs_embeds, attention_mask, *args, **kwargs)
