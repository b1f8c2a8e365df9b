"""PyTorch LLaMA-VID.

Every image or video frame becomes `1 + n` LLM tokens (llamavid-spec.md, sections 0-1):

1. EVA-ViT-g/14 turns the frame into `1 + P` features of width 1408 (class token first, no final norm).
2. The InstructBLIP Q-Former reads the user's question together with 32 learned queries and cross-attends to the
   layer-normed features; its 32 query outputs are projected to 1408 ("text queries").
3. Context token: the text queries attend over key-projected patches (values are the raw patches, the softmax
   temperature is sqrt(1408)); the result is averaged over the queries and projected to the LLM width.
4. Content tokens: the raw patches are pooled (`compress_type` "mean" -> 1 token, "grid:g" -> g*g tokens, None -> all
   patches) and projected by a 2-layer GELU MLP.
5. The `[context, content...]` tokens of each frame, frames in time order, replace the placeholder ids that the
   processor put in `input_ids`.

Three explicit visual inputs (no shape heuristics, no state kept between calls):

- `pixel_values` (images): one image per image placeholder group; the Q-Former sees the class token.
- `pixel_values_videos` + `video_num_frames` (short videos decoded at 1 fps): all frames of a video, same question.
- `video_features` + `video_features_num_frames` (long videos, e.g. movies): pre-extracted EVA patch features
  without the class token, so the Q-Former sees only the patches (the asymmetry of the original).
  `pixel_values_long_videos` gives long videos as frames instead: the tower runs first and its patch features (class
  token dropped) are used exactly like pre-extracted ones.

`qformer_input_ids` / `qformer_attention_mask` hold one question per visual input, in the order: images, then short
videos, then long videos.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, InstructBlipQFormerModel, LlamaModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.instructblip.modeling_instructblip import InstructBlipQFormerEmbeddings
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from . import fast_attention as _fast_attention
from . import fast_paths
from . import shared_prefix as _shared_prefix
from .fast_paths import sdpa_priority
from .losses import labelled_positions_lm_loss
from .vision_kernels import add_layer_norm_
from .configuration_llamavid import VISUAL_INPUT_NAMES, LlamaVidConfig, LlamaVidVisionConfig, parse_compress_type

_fast_attention.register()
_shared_prefix.register()

__all__ = [
    "LlamaVidForConditionalGeneration",
    "LlamaVidModel",
    "LlamaVidPreTrainedModel",
    "LlamaVidTokenGenerator",
    "LlamaVidVisionModel",
]


# --------------------------------------------------------------------------------------------------------------------
# EVA-ViT-g/14 (BLIP-2 / LAVIS variant)
# --------------------------------------------------------------------------------------------------------------------


class LlamaVidVisionEmbeddings(nn.Module):
    """Patch embedding, class token and absolute position embedding (no dropout: the rate is 0)."""

    def __init__(self, config: LlamaVidVisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.image_size = config.image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: [B, 3, H, W] -> [B, 1 + P, C]
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"The vision tower expects {self.image_size}x{self.image_size} pixels, got "
                f"{tuple(pixel_values.shape[-2:])}; use the LlamaVidProcessor of this checkpoint."
            )
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [B, P, C]
        cls = self.class_embedding.expand(patches.shape[0], -1, -1)
        return torch.cat((cls, patches), dim=1) + self.position_embedding


class LlamaVidVisionAttention(nn.Module):
    """EVA attention: one `qkv` projection without bias plus separate query and value biases (the key bias is 0).

    `config._attn_implementation` "eager" computes softmax(q k^T) v explicitly like the original; "sdpa" (and
    "flash_attention_2", which maps to the SDPA flash kernel on GPUs) uses `F.scaled_dot_product_attention`.
    """

    def __init__(self, config: LlamaVidVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(config.hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(hidden_states, self.qkv.weight, bias)  # [B, N, 3C]
        qkv = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each [B, heads, N, head_dim]
        if getattr(self.config, "_attn_implementation", None) == "eager":
            weights = ((query * self.scale) @ key.transpose(-2, -1)).softmax(dim=-1)
            attn = weights @ value
        else:
            attn = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        attn = attn.transpose(1, 2).reshape(batch, length, width)
        return self.proj(attn)


class LlamaVidVisionMLP(nn.Module):
    def __init__(self, config: LlamaVidVisionConfig):
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if getattr(self.config, "fused_gelu", False):
            # fc1 + bias + GELU in one call (cuBLASLt epilogue on CUDA): the [.., 6144] activations are written once
            flat = hidden_states.reshape(-1, hidden_states.shape[-1])
            hidden = torch._addmm_activation(self.fc1.bias, flat, self.fc1.weight.t(), use_gelu=True)
            return self.fc2(hidden.view(*hidden_states.shape[:-1], -1))
        return self.fc2(self.act(self.fc1(hidden_states)))


class LlamaVidVisionBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)); x + mlp(norm2(x)). No layer scale, no drop path."""

    def __init__(self, config: LlamaVidVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = LlamaVidVisionAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = LlamaVidVisionMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class LlamaVidVisionModel(nn.Module):
    """EVA-ViT-g/14 as LLaMA-VID uses it: output = hidden states after the last block, class token included, no norm."""

    def __init__(self, config: LlamaVidVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = LlamaVidVisionEmbeddings(config)
        self.layers = nn.ModuleList([LlamaVidVisionBlock(config) for _ in range(config.num_hidden_layers)])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # [B, 3, H, W] -> [B, 1 + P, C]
        hidden_states = self.embeddings(pixel_values)
        if getattr(self.config, "fused_residual_norm", False) and not self._needs_autograd(hidden_states):
            return self._forward_fused(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states

    def _needs_autograd(self, hidden_states: torch.Tensor) -> bool:
        """Whether this call records a graph (then the residual stream must not be updated in place).

        A frozen tower (e.g. stage-3 tuning, where only the language side learns) needs none even with grad enabled.
        """
        if not torch.is_grad_enabled():
            return False
        return hidden_states.requires_grad or any(param.requires_grad for param in self.parameters())

    def _forward_fused(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same blocks with each residual add done inside the next LayerNorm's kernel (`add_layer_norm_`).

        Without autograd only: the residual stream (the embeddings' own fresh output) is updated in place.
        """
        batch, length, width = hidden_states.shape
        stream = hidden_states.reshape(batch * length, width)
        branch = None  # output of the last residual branch, not yet added to `stream`
        for layer in self.layers:
            normed = add_layer_norm_(stream, branch, layer.norm1)
            branch = layer.attn(normed.view(batch, length, width)).view(batch * length, width)
            normed = add_layer_norm_(stream, branch, layer.norm2)
            branch = layer.mlp(normed)
        if branch is not None:
            stream.add_(branch)
        return stream.view(batch, length, width)


# --------------------------------------------------------------------------------------------------------------------
# Context and content tokens
# --------------------------------------------------------------------------------------------------------------------


class LlamaVidContentProjector(nn.Module):
    """`mm_projector`: "linear", "mlp<N>x_gelu" (Linear, then N-1 times GELU + Linear) or "identity"."""

    def __init__(self, config: LlamaVidConfig):
        super().__init__()
        vision_width = config.vision_config.hidden_size
        text_width = config.text_config.hidden_size
        kind = config.projector_type
        if kind == "identity":
            if vision_width != text_width:
                raise ValueError("projector_type 'identity' needs equal vision and text widths.")
            depth = 0
        elif kind == "linear":
            depth = 1
        else:
            depth = int(kind[len("mlp") : -len("x_gelu")])
        layers = [nn.Linear(vision_width, text_width)] if depth else []
        layers += [nn.Linear(text_width, text_width) for _ in range(depth - 1)]
        self.layers = nn.ModuleList(layers)
        self.act = nn.GELU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            if index:
                hidden_states = self.act(hidden_states)
            hidden_states = layer(hidden_states)
        return hidden_states


class LlamaVidTokenGenerator(nn.Module):
    """Q-Former, context attention and content pooling: frame features + question -> `[context, content...]` tokens.

    Names in the original (`llamavid_arch.py`): `vlm_att_query` = `query_tokens`, `vlm_att_ln` = `qformer_layernorm`,
    `vlm_att_encoder.bert` = `qformer`, `vlm_att_projector` = `context_query_projector`, `vlm_att_key_projector` =
    `context_key_projector`, `vlm_att_val_projector` = `context_projector`, `mm_projector` = `content_projector`.
    """

    def __init__(self, config: LlamaVidConfig):
        super().__init__()
        self.config = config
        vision_width = config.vision_config.hidden_size
        qformer_width = config.qformer_config.hidden_size
        if config.qformer_config.encoder_hidden_size != vision_width:
            raise ValueError(
                f"qformer_config.encoder_hidden_size ({config.qformer_config.encoder_hidden_size}) must equal the "
                f"vision width ({vision_width})."
            )
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, qformer_width))
        self.qformer_layernorm = nn.LayerNorm(vision_width, eps=config.qformer_layernorm_eps)
        self.qformer = InstructBlipQFormerModel(config.qformer_config)
        self.context_query_projector = nn.Linear(qformer_width, vision_width)
        self.context_key_projector = nn.Linear(vision_width, vision_width)
        self.context_projector = nn.Linear(vision_width, config.text_config.hidden_size)
        self.content_projector = LlamaVidContentProjector(config)
        self.compress_kind, self.grid_size = parse_compress_type(config.compress_type)

    def text_queries(
        self,
        features: torch.Tensor,
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Q-Former query outputs projected to the vision width.

        features: [R, S, Cv] (what the Q-Former cross-attends to); qformer_input_ids / mask: [R, L].
        Returns [R, num_query_tokens, Cv].
        """
        dtype = self.qformer_layernorm.weight.dtype
        encoder_states = self.qformer_layernorm(features.to(dtype))  # [R, S, Cv]
        rows = features.shape[0]
        queries = self.query_tokens.expand(rows, -1, -1)  # [R, Q, Cq]
        attention_mask = torch.cat(
            [
                torch.ones(queries.shape[:2], dtype=qformer_attention_mask.dtype, device=queries.device),
                qformer_attention_mask.to(queries.device),
            ],
            dim=1,
        )  # [R, Q + L]
        output = self.qformer(
            input_ids=qformer_input_ids.to(queries.device),
            attention_mask=attention_mask,
            query_embeds=queries,
            encoder_hidden_states=encoder_states,
            return_dict=True,
        ).last_hidden_state[:, : queries.shape[1]]  # [R, Q, Cq]
        return self.context_query_projector(output)  # [R, Q, Cv]

    def context_tokens(self, text_queries: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """[R, Q, Cv] queries over [R, N, Cv] patches -> [R, 1, C] context tokens."""
        keys = self.context_key_projector(patches)  # [R, N, Cv]
        scores = text_queries @ keys.transpose(-1, -2)  # [R, Q, N]
        scores = scores / (patches.shape[-1] ** 0.5)  # temperature: the feature width, as in the original
        context = (scores.softmax(dim=-1) @ patches).mean(dim=1)  # [R, Cv]
        return self.context_projector(context[:, None])  # [R, 1, C]

    def content_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """[R, N, Cv] patches -> [R, n, C] content tokens."""
        if self.compress_kind == "grid":
            rows, count, width = patches.shape
            side = int(count**0.5)
            stride = side // self.grid_size
            grid = patches.reshape(rows, side, side, width).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(grid, kernel_size=stride, stride=stride, padding=0)
            patches = pooled.permute(0, 2, 3, 1).flatten(1, 2)
        elif self.compress_kind == "mean":
            patches = patches.mean(dim=1, keepdim=True)
        return self.content_projector(patches)

    def forward(
        self,
        features: torch.Tensor,
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor,
        has_class_token: bool,
    ) -> torch.Tensor:
        """Tokens of R frames.

        Args:
            features: [R, S, Cv] EVA features, with the class token first when `has_class_token`.
            qformer_input_ids, qformer_attention_mask: [R, L], the question of each frame.
            has_class_token: pixel inputs have it (the Q-Former reads it, the token paths drop it when
                `select_feature == "patch"`); pre-extracted long-video features do not.

        Returns:
            [R, 1 + n, C]: the context token then the content tokens of every frame.
        """
        device = self.query_tokens.device
        features = features.to(device)
        queries = self.text_queries(features, qformer_input_ids, qformer_attention_mask)  # [R, Q, Cv]
        patches = features[:, 1:] if has_class_token and self.config.select_feature == "patch" else features
        patches = patches.to(self.context_key_projector.weight.dtype)
        context = self.context_tokens(queries.to(patches.dtype), patches)  # [R, 1, C]
        content = self.content_tokens(patches)  # [R, n, C]
        return torch.cat([context, content.to(context.dtype)], dim=1)


class LlamaVidOriginalRotaryEmbedding(LlamaRotaryEmbedding):
    """RoPE as transformers 4.31 computed it after a sequence exceeded `max_position_embeddings` (opt-in).

    The 4.31 cache was rebuilt from the checkpoint's stored `inv_freq` (rounded to its storage dtype), with positions
    created in the model dtype and divided by the linear factor in that dtype (llamavid-spec.md, section 9).
    """

    def __init__(self, config, compute_dtype: torch.dtype, inv_freq_dtype: torch.dtype):
        super().__init__(config)
        self.compute_dtype = compute_dtype
        self.inv_freq_dtype = inv_freq_dtype
        parameters = getattr(config, "rope_parameters", None) or {}
        self.linear_factor = float(parameters.get("factor", 1.0)) if parameters.get("rope_type") == "linear" else 1.0

    @torch.no_grad()
    def forward(self, x, position_ids):
        # Undo the linear scaling that transformers folds into inv_freq, round like the original did.
        inv_freq = (self.inv_freq.float() * self.linear_factor).to(self.inv_freq_dtype).to(self.compute_dtype)
        positions = position_ids.to(self.compute_dtype) / self.linear_factor  # [B, T]
        freqs = positions[..., None] * inv_freq.to(x.device)  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Pretrained base, base model and generation head
# --------------------------------------------------------------------------------------------------------------------


class LlamaVidPreTrainedModel(PreTrainedModel):
    config_class = LlamaVidConfig
    config: LlamaVidConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "LlamaVidVisionBlock", "LlamaVidTokenGenerator"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.vision_config.initializer_range
        if isinstance(module, LlamaVidVisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, LlamaVidVisionAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, LlamaVidTokenGenerator):
            init.normal_(module.query_tokens, mean=0.0, std=self.config.qformer_config.initializer_range)
        elif isinstance(module, InstructBlipQFormerEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


def _placeholder_mask(input_ids: torch.LongTensor, config: LlamaVidConfig) -> torch.Tensor:
    return (input_ids == config.image_token_index) | (input_ids == config.video_token_index)


class LlamaVidModel(LlamaVidPreTrainedModel):
    """LLaMA-VID without the language-modelling head: vision tower, token generator and Llama decoder."""

    def __init__(self, config: LlamaVidConfig):
        super().__init__(config)
        self.vision_model = LlamaVidVisionModel(config.vision_config)
        self.token_generator = LlamaVidTokenGenerator(config)
        self.language_model = LlamaModel(config.text_config)
        if config.original_rope_precision is not None:
            self.language_model.rotary_emb = LlamaVidOriginalRotaryEmbedding(
                config.text_config,
                compute_dtype=getattr(torch, config.original_rope_precision),
                inv_freq_dtype=getattr(torch, config.original_rope_inv_freq_dtype),
            )
        self.post_init()
        self.set_fast_attention(config.fast_attention)

    def set_fast_attention(self, enabled: bool = True) -> None:
        """Switch `config.fast_attention` (implicit causal masks for a compiled decoder) on or off.

        See [`fast_paths.set_fast_attention`]: with "eager" or "flash_attention_2" requested, the language model keeps
        them.
        """
        fast_paths.set_fast_attention(self, enabled)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    # ---- visual features ------------------------------------------------------------------------------------------

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """EVA features of images or frames, class token included: [B, 3, H, W] -> [B, 1 + P, Cv].

        Runs in chunks of `config.visual_chunk_size` frames, in the tower's dtype.
        """
        weight = self.vision_model.embeddings.patch_embedding.weight
        chunk = max(1, self.config.visual_chunk_size)
        with sdpa_priority(self.config.sdpa_backends, weight.device):
            outputs = [
                self.vision_model(pixel_values[start : start + chunk].to(device=weight.device, dtype=weight.dtype))
                for start in range(0, pixel_values.shape[0], chunk)
            ]
        return torch.cat(outputs) if outputs else pixel_values.new_zeros(0)

    def extract_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Long-video features for `video_features`: EVA patch features without the class token, [T, P, Cv].

        This is what the original `.pkl` files hold after `feats[:, 1:]`; store them (e.g. as safetensors) once per
        movie and pass them to `forward`/`generate` as `video_features` to skip the vision tower.
        """
        return self.get_vision_features(pixel_values_videos)[:, 1:]

    def _tokens_for_rows(
        self,
        features: torch.Tensor,
        rows_per_input: Sequence[int],
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor,
        has_class_token: bool,
    ) -> torch.Tensor:
        """Tokens of all rows (frames), each row conditioned on the question of the input it belongs to.

        features: [R, S, Cv]; rows_per_input: frames of each visual input (sum = R); qformer_*: [V, L].
        Returns [R, 1 + n, C].
        """
        total = int(sum(rows_per_input))
        if total != features.shape[0]:
            raise ValueError(f"{features.shape[0]} frames of features but the frame counts add up to {total}.")
        if qformer_input_ids.shape[0] != len(rows_per_input):
            raise ValueError(
                f"{qformer_input_ids.shape[0]} Q-Former questions for {len(rows_per_input)} visual inputs: pass one "
                "question per image, video and long video (in that order)."
            )
        device = qformer_input_ids.device
        owner = torch.repeat_interleave(
            torch.arange(len(rows_per_input), device=device),
            torch.as_tensor(list(rows_per_input), device=device),
        )  # [R]: index of the question of each row
        chunk = max(1, self.config.visual_chunk_size)
        outputs = []
        for start in range(0, total, chunk):
            rows = owner[start : start + chunk]
            outputs.append(
                self.token_generator(
                    features[start : start + chunk],
                    qformer_input_ids[rows],
                    qformer_attention_mask[rows],
                    has_class_token=has_class_token,
                )
            )
        return torch.cat(outputs)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of images: [I, 3, H, W] + one question per image -> [I, 1 + n, C]."""
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        features = self.get_vision_features(pixel_values)  # [I, 1 + P, Cv]
        return self._tokens_for_rows(
            features, [1] * features.shape[0], qformer_input_ids, qformer_attention_mask, has_class_token=True
        )

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_num_frames: Sequence[int] | torch.Tensor,
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of short videos: [sum F, 3, H, W] + one question per video -> [sum F * (1 + n), C]."""
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        counts = [int(n) for n in video_num_frames]
        features = self.get_vision_features(pixel_values_videos)  # [sum F, 1 + P, Cv]
        tokens = self._tokens_for_rows(features, counts, qformer_input_ids, qformer_attention_mask, True)
        return tokens.flatten(0, 1)

    def get_long_video_features(
        self,
        video_features: torch.Tensor,
        video_features_num_frames: Sequence[int] | torch.Tensor,
        qformer_input_ids: torch.LongTensor,
        qformer_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of long videos from EVA patch features: [sum T, P, Cv] + one question per video -> [sum T*(1+n), C]."""
        expected = self.config.vision_config.num_patches
        if video_features.ndim != 3 or video_features.shape[-1] != self.config.vision_config.hidden_size:
            raise ValueError(
                f"video_features must be [frames, {expected}, {self.config.vision_config.hidden_size}], got "
                f"{tuple(video_features.shape)}."
            )
        if video_features.shape[1] == expected + 1:
            raise ValueError(
                f"video_features have {expected + 1} tokens per frame: drop the class token first "
                "(features[:, 1:]), as the original does when it loads a .pkl."
            )
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        counts = [int(n) for n in video_features_num_frames]
        tokens = self._tokens_for_rows(video_features, counts, qformer_input_ids, qformer_attention_mask, False)
        return tokens.flatten(0, 1)

    def get_visual_tokens(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_num_frames: Sequence[int] | torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_features_num_frames: Sequence[int] | torch.Tensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        pixel_values_long_videos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Image tokens [sum, C] and video tokens [sum, C] (short or long videos) in placeholder order."""
        if qformer_input_ids is None:
            raise ValueError(
                "LLaMA-VID conditions its visual tokens on the question: pass qformer_input_ids (the processor makes "
                "them from `qformer_text` or from the prompt)."
            )
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        if pixel_values_long_videos is not None:
            if video_features is not None:
                raise ValueError("Pass long videos either as frames (pixel_values_long_videos) or as features "
                                 "(video_features), not both.")
            video_features = self.extract_video_features(pixel_values_long_videos)
        if pixel_values_videos is not None and video_features is not None:
            raise ValueError(
                "Pass either short videos (pixel_values_videos) or long videos (video_features) in one call, not both."
            )
        if pixel_values_videos is not None and video_num_frames is None:
            video_num_frames = [pixel_values_videos.shape[0]]
        if video_features is not None and video_features_num_frames is None:
            video_features_num_frames = [video_features.shape[0]]

        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        num_videos = 0 if pixel_values_videos is None else len(video_num_frames)
        num_long = 0 if video_features is None else len(video_features_num_frames)
        if qformer_input_ids.shape[0] != num_images + num_videos + num_long:
            raise ValueError(
                f"{qformer_input_ids.shape[0]} Q-Former questions for {num_images} images, {num_videos} videos and "
                f"{num_long} long videos: pass one question per visual input (images, then videos)."
            )
        image_tokens = video_tokens = None
        if num_images:
            image_tokens = self.get_image_features(
                pixel_values, qformer_input_ids[:num_images], qformer_attention_mask[:num_images]
            ).flatten(0, 1)
        rest = slice(num_images, None)
        if num_videos:
            video_tokens = self.get_video_features(
                pixel_values_videos, video_num_frames, qformer_input_ids[rest], qformer_attention_mask[rest]
            )
        elif num_long:
            video_tokens = self.get_long_video_features(
                video_features, video_features_num_frames, qformer_input_ids[rest], qformer_attention_mask[rest]
            )
        return image_tokens, video_tokens

    @staticmethod
    def _scatter(inputs_embeds, mask, tokens, what):
        count = int(mask.sum())
        if tokens is None:
            if count:
                raise ValueError(f"input_ids hold {count} {what} placeholders but no {what} input was given.")
            return inputs_embeds
        if count != tokens.shape[0]:
            raise ValueError(
                f"input_ids hold {count} {what} placeholders but the {what} inputs make {tokens.shape[0]} tokens; "
                "build input_ids with LlamaVidProcessor (one placeholder per visual token)."
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, tokens.to(inputs_embeds.device, inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_features: torch.Tensor | None = None,
        video_features_num_frames: torch.LongTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values_long_videos: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids with one placeholder (`config.image_token_index` / `config.video_token_index`) per visual
                token, as made by [`LlamaVidProcessor`].
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, H, W)`, *optional*):
                Images, in placeholder order.
            pixel_values_videos (`torch.FloatTensor` of shape `(total_frames, 3, H, W)`, *optional*):
                Frames of all short videos, concatenated; `video_num_frames` (`(num_videos,)`) splits them.
            video_features (`torch.FloatTensor` of shape `(total_frames, P, Cv)`, *optional*):
                Pre-extracted EVA patch features (class token removed) of long videos; `video_features_num_frames`
                splits them.
            pixel_values_long_videos (`torch.FloatTensor` of shape `(total_frames, 3, H, W)`, *optional*):
                Long videos as frames instead of `video_features`: the vision tower makes their features (class token
                dropped), then they are treated exactly like pre-extracted features (`video_features_num_frames`
                splits them).
            qformer_input_ids / qformer_attention_mask (`(num_visual_inputs, L)`, *optional*):
                BERT ids of the question of each visual input: images first, then videos.
            Other arguments (attention mask, position ids, cache, `use_cache`, ...) go to the Llama decoder.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if inputs_embeds is None:
            placeholders = _placeholder_mask(input_ids, self.config)
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholders, 0))

        has_visual = any(
            visual is not None
            for visual in (pixel_values, pixel_values_videos, video_features, pixel_values_long_videos)
        )
        if has_visual:
            if input_ids is None:
                raise ValueError("Visual inputs need input_ids to find their placeholders.")
            image_tokens, video_tokens = self.get_visual_tokens(
                pixel_values=pixel_values,
                pixel_values_videos=pixel_values_videos,
                video_num_frames=video_num_frames,
                video_features=video_features,
                video_features_num_frames=video_features_num_frames,
                qformer_input_ids=qformer_input_ids,
                qformer_attention_mask=qformer_attention_mask,
                pixel_values_long_videos=pixel_values_long_videos,
            )
            inputs_embeds = self._scatter(
                inputs_embeds, input_ids == self.config.image_token_index, image_tokens, "image"
            )
            inputs_embeds = self._scatter(
                inputs_embeds, input_ids == self.config.video_token_index, video_tokens, "video"
            )

        # the speed options' eager-side work (fast_paths): an all-ones mask dropped, a static cache allocated, the
        # compiled or the eager decoder chosen
        attention_mask = fast_paths.prepare_decoder_inputs(self, attention_mask, inputs_embeds, kwargs)
        decoder = fast_paths.decoder_for(self.language_model, inputs_embeds, kwargs)
        with sdpa_priority(self.config.sdpa_backends, inputs_embeds.device):
            return decoder(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            )


class LlamaVidForConditionalGeneration(LlamaVidPreTrainedModel, GenerationMixin):
    """LLaMA-VID with a language-modelling head; `generate` works for images, short videos and long videos.

    Example:

    ```python
    >>> import moviellm_model  # registers the Auto classes
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> model = AutoModelForImageTextToText.from_pretrained("path/to/llamavid-7b-long-video", dtype="bfloat16")
    >>> processor = AutoProcessor.from_pretrained("path/to/llamavid-7b-long-video")
    >>> inputs = processor(text=prompt, videos=["movie.mp4"], qformer_text=[question], return_tensors="pt")
    >>> output = model.generate(**inputs, max_new_tokens=256)
    ```

    Fast inference on a GPU (each option is measured in `benchmarks/bench_model.py`; results stay within bf16 rounding):

    ```python
    >>> from transformers import CompileConfig
    >>> model.config.vision_config.fused_gelu = True  # EVA: fc1 + GELU in one cuBLASLt call
    >>> model.config.vision_config.fused_residual_norm = True  # EVA: residual add + LayerNorm in one kernel
    >>> model.config.cuda_graph_decoding = True  # decoding: one CUDA graph per static cache
    >>> model.compile_blocks(vision=False)  # prefill: the whole decoder compiled once (switches on fast_attention)
    >>> output = model.generate(**inputs, max_new_tokens=256, cache_implementation="static",
    ...                         compile_config=CompileConfig(mode="max-autotune"))
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: LlamaVidConfig):
        super().__init__(config)
        self.model = LlamaVidModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.model.language_model

    # ---- speed options (fast_paths.py) --------------------------------------------------------------------------------

    def compile_blocks(self, vision: bool = True, language_model: bool = True, **compile_kwargs) -> None:
        """`torch.compile` the EVA tower and/or the whole decoder stack, each as one region.

        Compiling the decoder also switches on `config.fast_attention` (so a compiled prefill keeps SDPA's causal
        kernels). `compile_kwargs` go to `torch.compile` (e.g. `mode`, `dynamic`); see [`fast_paths.compile_blocks`].
        Undo with `uncompile_blocks()`.
        """
        fast_paths.compile_blocks(self, vision=vision, language_model=language_model, **compile_kwargs)

    def uncompile_blocks(self) -> None:
        """Drop what `compile_blocks` set up (eager blocks again)."""
        fast_paths.uncompile_blocks(self)

    def set_fast_attention(self, enabled: bool = True) -> None:
        """See [`LlamaVidModel.set_fast_attention`]."""
        self.model.set_fast_attention(enabled)

    # Convenience wrappers of the base model's feature methods.
    def get_vision_features(self, pixel_values):
        return self.model.get_vision_features(pixel_values)

    def extract_video_features(self, pixel_values_videos):
        return self.model.extract_video_features(pixel_values_videos)

    def get_image_features(self, pixel_values, qformer_input_ids, qformer_attention_mask=None):
        return self.model.get_image_features(pixel_values, qformer_input_ids, qformer_attention_mask)

    def get_visual_tokens(self, **kwargs):
        return self.model.get_visual_tokens(**kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_features: torch.Tensor | None = None,
        video_features_num_frames: torch.LongTensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values_long_videos: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        See [`LlamaVidModel.forward`] for the inputs. Additionally:

        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; placeholder positions are always ignored (set to `config.ignore_index`).
        logits_to_keep (`int` or `torch.Tensor`, defaults to 0):
            Compute logits only for the last `logits_to_keep` positions (0 = all); `generate` passes 1 for the
            prefill, which avoids a `[batch, 14k, 32000]` logits tensor for a movie.
        """
        return_dict = kwargs.pop("return_dict", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            video_num_frames=video_num_frames,
            video_features=video_features,
            video_features_num_frames=video_features_num_frames,
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            pixel_values_long_videos=pixel_values_long_videos,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # [B, T, C]
        if labels is not None and input_ids is not None:
            labels = labels.masked_fill(_placeholder_mask(input_ids, self.config), self.config.ignore_index)
        chunk = getattr(self.config, "loss_chunk_size", None)
        if labels is not None and chunk and isinstance(logits_to_keep, int) and logits_to_keep == 0:
            # Training: logits of the labelled positions only, chunk by chunk (a 64K-token movie never gets its
            # [64K, 32K] logits); `logits` is not returned.
            loss = labelled_positions_lm_loss(
                hidden_states, self.lm_head, labels, ignore_index=self.config.ignore_index, chunk_size=int(chunk),
                num_items_in_batch=kwargs.get("num_items_in_batch"),
            )
            logits = None
        else:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])
            loss = None
            if labels is not None:
                loss = self.loss_function(
                    logits=logits,
                    labels=labels,
                    vocab_size=self.config.text_config.vocab_size,
                    ignore_index=self.config.ignore_index,
                    **kwargs,
                )

        # The cache field is `past_key_values` up to transformers 5.2x and `cache` later: copy whatever is there.
        extra = {key: value for key, value in outputs.items() if key != "last_hidden_state"}
        output = CausalLMOutputWithPast(loss=loss, logits=logits, **extra)
        return output.to_tuple() if return_dict is False else output

    def get_compiled_call(self, compile_config):
        """The decoding step `generate` uses with a static cache; a `CudaGraphDecoder` with `config.cuda_graph_decoding`.

        Without the option, or off CUDA, transformers' own `torch.compile` of `__call__` (CUDA-graph trees on GPUs).
        """
        decoder = fast_paths.cuda_graph_decoder(self, compile_config)
        return decoder if decoder is not None else super().get_compiled_call(compile_config)

    def create_masks_for_generate(self, config, inputs_embeds, attention_mask, *args, **kwargs):
        """The mask `generate` builds eagerly before every compiled decoding step over a static cache.

        With `config.fast_attention`, one token over a plain static cache gets its mask from the 2D mask in one kernel
        ([`fast_paths.create_masks_for_generate`]); everything else gets transformers' construction.
        """
        return fast_paths.create_masks_for_generate(self.model, config, inputs_embeds, attention_mask, *args, **kwargs)

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, is_first_iteration: bool | None = False, past_key_values=None, cache=None,
        **kwargs,
    ):
        # The cache is named here because `generate` accepts a caller's cache (e.g. a prefilled shared prefix) only when
        # this signature names it; it goes on under whichever name the caller used.
        kwargs.update({name: value for name, value in (("past_key_values", past_key_values), ("cache", cache))
                       if value is not None})
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        # Visual inputs are consumed by the prefill; later steps read the cache.
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in VISUAL_INPUT_NAMES:
                model_inputs.pop(name, None)
        return model_inputs

