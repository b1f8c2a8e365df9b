"""Style immobilization: a textual-inversion embedding of a movie's style keyword for SDXL.

A new placeholder token (``<keyword-style>``) is added to both SDXL text encoders and only its embedding
rows learn (every other weight is frozen; the rows are separate float32 parameters spliced into the
embedding lookup, so no other row can move). The images it learns from are rendered from the keyword and
the style phrases, augmented by horizontal flips; the loss is diffusers' noise-prediction loss on
VAE latents, the learning-rate schedule the reference's piecewise-constant one.

The result is saved in the portable format diffusers reads: a safetensors file with ``clip_l``
([n, width of text encoder 1]) and ``clip_g`` ([n, width of text encoder 2]), loaded with
``pipe.load_textual_inversion(sd["clip_l"], token=T, text_encoder=pipe.text_encoder,
tokenizer=pipe.tokenizer)`` and the same for ``clip_g`` / ``text_encoder_2`` / ``tokenizer_2``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MovieLLMError
from .presets import StyleTraining

logger = logging.getLogger(__name__)

FORMAT = "moviellm-style-embedding-v1"
METADATA_KEY = "moviellm_style"


def style_token(keyword: str) -> str:
    """The placeholder token a style keyword is learned as, e.g. ``<romantic-style>``."""
    return f"<{keyword.lower()}-style>"


def token_names(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries of a (multi-vector) token, named as diffusers' loader names them."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def style_key(parts: dict) -> str:
    """A content hash of everything that decides a style embedding (cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------ file format


def style_embedding_bytes(embedding: dict, token: str, keyword: str) -> bytes:
    """Serialise ``{"clip_l": [n, d1], "clip_g": [n, d2]}`` as safetensors bytes (float32).

    The metadata (one key, ``moviellm_style``, holding JSON: format, token, keyword) tells a reader how to
    use the file without our code. One key, because safetensors writes several in arbitrary order and
    the same embedding must always give the same bytes (its hash is recorded in provenance).
    """
    from safetensors.torch import save

    tensors = {k: embedding[k].detach().to("cpu").float().contiguous() for k in ("clip_l", "clip_g")}
    info = json.dumps({"format": FORMAT, "keyword": keyword, "token": token}, sort_keys=True)
    return save(tensors, metadata={METADATA_KEY: info})


def style_embedding_info(data: bytes) -> dict:
    """The metadata of a style file: ``{"format", "keyword", "token"}`` (empty if it has none)."""
    import struct

    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    text = (header.get("__metadata__") or {}).get(METADATA_KEY)
    return json.loads(text) if text else {}


def read_style_embedding(data: bytes, source: str = "style embedding") -> dict:
    """``{"clip_l", "clip_g"}`` tensors from safetensors bytes; one clear error if they are not that."""
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise MovieLLMError(f"{source} is not a safetensors file ({err}); delete it so it is learned again.") from None
    if set(tensors) != {"clip_l", "clip_g"} or tensors["clip_l"].ndim != 2 or tensors["clip_g"].ndim != 2:
        raise MovieLLMError(f"{source} does not hold clip_l and clip_g embedding matrices; delete it so it is learned again.")
    return tensors


# ----------------------------------------------------------------------------- installing a token


def _encoder_pairs(pipe) -> list[tuple[str, object, object]]:
    pairs = []
    for key, enc_name, tok_name in (("clip_l", "text_encoder", "tokenizer"), ("clip_g", "text_encoder_2", "tokenizer_2")):
        encoder, tokenizer = getattr(pipe, enc_name, None), getattr(pipe, tok_name, None)
        if encoder is None or tokenizer is None:
            raise ConfigError(
                f"style embeddings need an SDXL-type pipeline with two CLIP text encoders, but {type(pipe).__name__} "
                f"has no {enc_name}; use --style none with this model."
            )
        pairs.append((key, encoder, tokenizer))
    return pairs


def check_style_capable(pipe) -> None:
    """Raise :class:`ConfigError` unless ``pipe`` is an SDXL-type pipeline a style embedding can be learned in."""
    _encoder_pairs(pipe)
    unet = getattr(pipe, "unet", None)
    if not hasattr(pipe, "load_textual_inversion") or getattr(getattr(unet, "config", None), "addition_embed_type", None) != "text_time":
        raise ConfigError(
            f"style embeddings are learned for SDXL-type pipelines (two CLIP text encoders, a text_time UNet), "
            f"not for {type(pipe).__name__}; use --style none with this model."
        )


def install_style_embedding(pipe, embedding: dict, token: str) -> None:
    """Make ``token`` mean ``embedding`` in ``pipe``'s two text encoders.

    The first time, the token is added through diffusers' ``load_textual_inversion`` (exactly as a user
    would load our file); afterwards its rows are overwritten in place, so switching between movies'
    styles never grows the vocabulary.
    """
    import torch

    for key, encoder, tokenizer in _encoder_pairs(pipe):
        vectors = embedding[key]
        width = encoder.get_input_embeddings().weight.shape[1]
        if vectors.shape[1] != width:
            raise MovieLLMError(
                f"the style embedding's {key} vectors are {vectors.shape[1]}-d but this model's text encoder is "
                f"{width}-d; it was learned for another model, so delete it and learn it again."
            )
        names = token_names(token, vectors.shape[0])
        ids = tokenizer.convert_tokens_to_ids(names)
        unknown = tokenizer.unk_token_id
        if all(isinstance(i, int) and i != unknown and i < len(tokenizer) for i in ids) and token in tokenizer.get_vocab():
            weight = encoder.get_input_embeddings().weight
            with torch.no_grad():
                weight[torch.tensor(ids)] = vectors.to(device=weight.device, dtype=weight.dtype)
        else:
            pipe.load_textual_inversion(vectors, token=token, text_encoder=encoder, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------ training


class _RowSplice:
    """Replaces the embedding lookup of ``token_ids`` by trainable float32 ``rows`` (a forward hook).

    Gradients reach ``rows`` and nothing else, which is what "only the new rows learn" means, without
    touching the frozen embedding matrix at all.
    """

    def __init__(self, embedding_module, token_ids: list[int], rows) -> None:
        import torch

        self.ids = torch.tensor(token_ids)
        self.rows = rows
        self.handle = embedding_module.register_forward_hook(self)

    def __call__(self, module, args, output):
        import torch

        input_ids = args[0] if args else None
        if input_ids is None:
            return output
        ids = self.ids.to(input_ids.device)
        match = input_ids[..., None] == ids  # [B, L, n]
        if not bool(match.any()):
            return output
        spliced = match.to(self.rows.dtype) @ self.rows.to(output.device)  # [B, L, d]
        return torch.where(match.any(-1, keepdim=True), spliced.to(output.dtype), output)

    def remove(self) -> None:
        self.handle.remove()


def _initial_rows(pipe, keyword: str, config: StyleTraining, generator) -> dict:
    """Starting vectors: the keyword's own (mean sub-token) embedding, or small noise."""
    import torch

    rows = {}
    for key, encoder, tokenizer in _encoder_pairs(pipe):
        weight = encoder.get_input_embeddings().weight.detach()
        if config.init == "keyword":
            ids = tokenizer(keyword.lower(), add_special_tokens=False).input_ids or [tokenizer.eos_token_id]
            start = weight[torch.tensor(ids)].float().mean(0, keepdim=True).cpu()
        else:
            start = torch.randn((1, weight.shape[1]), generator=generator) * 0.01
        rows[key] = start.repeat(config.num_vectors, 1)
    return rows


def _latents_of(pipe, images: Sequence[np.ndarray], flips: bool, generator):
    """VAE latents (scaled as the UNet sees them) of the images and, optionally, their mirror images."""
    import torch

    vae = pipe.vae
    batch = [np.asarray(im) for im in images]
    if flips:
        batch += [np.ascontiguousarray(im[:, ::-1]) for im in batch]
    pixels = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    dtype = vae.dtype
    device = next(vae.parameters()).device
    latents = []
    with torch.no_grad():
        for chunk in pixels.split(4):
            dist = vae.encode(chunk.to(device=device, dtype=dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator).to(device=device, dtype=dist.mean.dtype)
            latents.append(dist.mean + dist.std * noise)
    latents = torch.cat(latents).float()
    config = vae.config
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
        return (latents - mean) * config.scaling_factor / std
    return latents * config.scaling_factor


def train_style_embedding(
    pipe,
    images: Sequence[np.ndarray],
    keyword: str,
    token: str,
    config: StyleTraining,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    added_cond: dict | None = None,
) -> dict:
    """Learn ``token`` from ``images`` (uint8 [H, W, 3]) in an SDXL pipeline; return ``{"clip_l", "clip_g"}``.

    The pipeline's UNet, VAE and text encoders stay frozen (the UNet runs its uncompiled ``forward``).
    Afterwards ``token`` is installed in ``pipe`` with the learned vectors. ``progress(step, total,
    loss)`` is called after each optimizer step. ``added_cond`` is passed to the UNet with the text and
    time conditioning (e.g. neutral ``image_embeds`` when an IP-Adapter is loaded).
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    pairs = _encoder_pairs(pipe)
    unet = pipe.unet
    # Frozen for real: no weight gradients are computed or kept (only the spliced rows learn).
    for module in (unet, pipe.vae, pairs[0][1], pairs[1][1]):
        module.requires_grad_(False)
    device = next(unet.parameters()).device
    generator = torch.Generator("cpu").manual_seed(seed)
    rng = random.Random(seed)

    start = _initial_rows(pipe, keyword, config, generator)
    install_style_embedding(pipe, start, token)  # adds the token to both tokenizers
    params = {key: torch.nn.Parameter(start[key].to(device)) for key in start}
    splices = []
    for key, encoder, tokenizer in pairs:
        ids = tokenizer.convert_tokens_to_ids(token_names(token, config.num_vectors))
        splices.append(_RowSplice(encoder.get_input_embeddings(), ids, params[key]))

    latents = _latents_of(pipe, images, config.flips, generator)
    height, width = images[0].shape[:2]
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=unet.dtype)
    captions = [template.format(token) for template in config.templates]
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.learning_rate(0), betas=(0.9, 0.999),
                                  weight_decay=config.weight_decay, eps=1e-8)
    # fp16 activations can underflow in the backward pass; bf16 and fp32 need no loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=unet.dtype == torch.float16)
    was_checkpointing = getattr(unet, "is_gradient_checkpointing", False)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    total = config.total_steps
    try:
        with torch.enable_grad():
            for step in range(total):
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate(step)
                step_loss = 0.0
                for _ in range(config.gradient_accumulation):
                    caption = captions[rng.randrange(len(captions))]
                    sample = latents[rng.randrange(len(latents))][None]
                    # Drawn on the CPU generator (the same numbers on any device), then moved to the latents.
                    timestep = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), generator=generator)
                    timestep = timestep.to(sample.device)
                    noise = torch.randn(sample.shape, generator=generator).to(sample.device, sample.dtype)
                    noisy = noise_scheduler.add_noise(sample, noise, timestep)
                    target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(sample, noise, timestep)
                    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
                        caption, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
                    )
                    pred = unet.forward(
                        noisy.to(device=device, dtype=unet.dtype),
                        timestep.to(device),
                        encoder_hidden_states=prompt_embeds.to(unet.dtype),
                        added_cond_kwargs={"text_embeds": pooled.to(unet.dtype), "time_ids": time_ids, **(added_cond or {})},
                        return_dict=False,
                    )[0]
                    loss = F.mse_loss(pred.float(), target.to(device).float()) / config.gradient_accumulation
                    scaler.scale(loss).backward()
                    step_loss += float(loss.detach())
                scaler.unscale_(optimizer)
                for param in params.values():
                    torch.nn.utils.clip_grad_norm_([param], config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if progress is not None:
                    progress(step + 1, total, step_loss)
    finally:
        for splice in splices:
            splice.remove()
        if gradient_checkpointing and not was_checkpointing:
            unet.disable_gradient_checkpointing()
    learned = {key: param.detach().float().cpu() for key, param in params.items()}
    install_style_embedding(pipe, learned, token)
    return learned


# -------------------------------------------------------------------------------------------- cache


class StyleCache:
    """Learned style embeddings on disk, one safetensors file per style hash (shared by all runs)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir() / "styles"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            read_style_embedding(data)
        except MovieLLMError:
            logger.warning("ignoring unreadable cached style embedding %s", path)
            return None
        return data

    def put(self, key: str, data: bytes) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def default_cache_dir() -> Path:
    """``$MOVIELLM_CACHE``, else ``$XDG_CACHE_HOME/moviellm``, else ``~/.cache/moviellm``."""
    if os.environ.get("MOVIELLM_CACHE"):
        return Path(os.environ["MOVIELLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moviellm"
