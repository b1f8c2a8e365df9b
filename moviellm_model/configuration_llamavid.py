"""LLaMA-VID model configuration.

LLaMA-VID (Li et al., "LLaMA-VID: An Image is Worth 2 Tokens in Large Language Models") turns every image or
video frame into a *context* token (the user's question, read by a Q-Former, attends over the frame's patches) and
one or more *content* tokens (pooled patches through an MLP), and splices them into a Vicuna/Llama-2 prompt.

The configuration has three sub-configurations and a few top-level fields:

- `vision_config` (`LlamaVidVisionConfig`): the EVA-ViT-g/14 tower of BLIP-2 (39 blocks, width 1408, q/v bias only,
  class token kept, no final norm).
- `qformer_config` (`InstructBlipQFormerConfig`): the InstructBLIP Q-Former (BERT-base with 32 learned queries and
  cross-attention to the image every second layer, `[DEC]` added to the vocabulary: 30,523 entries).
- `text_config` (`LlamaConfig`): the language model (Vicuna-7B/13B v1.5; the long-video release uses linear RoPE
  scaling with factor 16, i.e. `rope_parameters={"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0}`).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import InstructBlipQFormerConfig, LlamaConfig, PretrainedConfig

from .input_format import VISUAL_INPUT_NAMES

__all__ = [
    "VISUAL_INPUT_NAMES",
    "LlamaVidConfig",
    "LlamaVidVisionConfig",
    "parse_compress_type",
    "content_tokens_per_frame",
]


class LlamaVidVisionConfig(PretrainedConfig):
    r"""Configuration of the EVA-ViT-g/14 vision tower used by LLaMA-VID (the BLIP-2 / LAVIS variant).

    Args:
        image_size (`int`, *optional*, defaults to 224):
            Input resolution (224 or 336 in the released models). The position embedding holds
            `(image_size // patch_size) ** 2 + 1` entries.
        patch_size (`int`, *optional*, defaults to 14):
            Side of a square patch.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels.
        hidden_size (`int`, *optional*, defaults to 1408):
            Width of the tower (`mm_hidden_size` of the original configs).
        num_hidden_layers (`int`, *optional*, defaults to 39):
            Number of blocks. `eva_vit_g.pth` holds 40 blocks; BLIP-2 and LLaMA-VID build 39 and ignore the last one.
        num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads (head dimension 88).
        intermediate_size (`int`, *optional*, defaults to 6144):
            MLP width, `int(1408 * 4.3637)`.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            MLP activation (exact, erf-based GELU).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the pre-norms.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the attention has query and value biases (the key bias is always zero).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the (truncated) normal initialisation.
        fused_gelu (`bool`, *optional*, defaults to `False`):
            Compute `fc1` + bias + GELU of every MLP in one `torch._addmm_activation` call instead of a matrix product
            and a separate GELU pass over the [frames, 257, 6144] activations. On CUDA that is cuBLASLt's GELU
            epilogue, which evaluates the tanh approximation of GELU: at most 4.7e-4 from the exact GELU (at x = 2.7,
            where a bfloat16 rounding step is 1.6e-2), so bf16 results stay within their own rounding. On CPU it is
            the exact GELU. Speed option for feature extraction; `hidden_act` must be "gelu".
        fused_residual_norm (`bool`, *optional*, defaults to `False`):
            When the call records no autograd graph (no grad mode, or a frozen tower), add each residual branch to
            the residual stream inside the next LayerNorm's kernel (Triton on CUDA), updating the stream in place: one
            pass fewer over the [frames x 257, 1408] activations per residual. Same arithmetic as the unfused blocks
            (only the reduction order inside the norm differs). Speed option for feature extraction and frozen-tower
            training.
    """

    model_type = "llamavid_vision"
    base_config_key = "vision_config"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        num_channels: int = 3,
        hidden_size: int = 1408,
        num_hidden_layers: int = 39,
        num_attention_heads: int = 16,
        intermediate_size: int = 6144,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        initializer_range: float = 0.02,
        fused_gelu: bool = False,
        fused_residual_norm: bool = False,
        **kwargs: Any,
    ):
        if fused_gelu and hidden_act != "gelu":
            raise ValueError(f"fused_gelu needs hidden_act='gelu' (the exact GELU of EVA), not {hidden_act!r}.")
        self.fused_gelu = bool(fused_gelu)
        self.fused_residual_norm = bool(fused_residual_norm)
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"vision hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})."
            )

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (the class token excluded)."""
        return (self.image_size // self.patch_size) ** 2


def parse_compress_type(compress_type: str | None) -> tuple[str, int | None]:
    """Parse LLaMA-VID's `compress_type` the way the original does (substring match, "grid" before "mean").

    Returns `("grid", g)`, `("mean", None)` or `("none", None)`. Released names such as `"mean_concat"` parse as
    `"mean"`, exactly like `llamavid_arch.py` does.
    """
    if compress_type is None:
        return "none", None
    if "grid" in compress_type:
        grid = int(compress_type.split("grid:")[-1])
        if grid <= 1:
            raise ValueError(f"compress_type {compress_type!r}: the grid size must be larger than 1.")
        return "grid", grid
    if "mean" in compress_type:
        return "mean", None
    return "none", None


def content_tokens_per_frame(compress_type: str | None, num_patches: int) -> int:
    """Number of content tokens one frame produces (the context token not included)."""
    kind, grid = parse_compress_type(compress_type)
    if kind == "mean":
        return 1
    if kind == "grid":
        side = int(num_patches**0.5)
        stride = side // grid
        if stride < 1:
            raise ValueError(f"compress_type grid:{grid} is larger than the {side}x{side} patch grid.")
        return (side // stride) ** 2
    return num_patches


class LlamaVidConfig(PretrainedConfig):
    r"""Configuration of [`LlamaVidForConditionalGeneration`].

    Args:
        vision_config (`dict` or `LlamaVidVisionConfig`, *optional*):
            EVA-ViT-g/14 tower.
        qformer_config (`dict` or `InstructBlipQFormerConfig`, *optional*):
            Q-Former (BERT-base, InstructBLIP layout). Defaults to bert-base-uncased plus `[DEC]` (vocabulary 30,523),
            `encoder_hidden_size` = the vision width and cross-attention every second layer.
        text_config (`dict` or `LlamaConfig`, *optional*):
            Language model. Defaults to Vicuna-7B v1.5.
        num_query_tokens (`int`, *optional*, defaults to 32):
            Learned Q-Former queries (`num_query` of the original).
        qformer_max_length (`int`, *optional*, defaults to 256):
            Maximum Q-Former text length in BERT tokens (used by the processor).
        qformer_truncation_side (`str`, *optional*, defaults to `"left"`):
            Which side of an over-long question is cut (used by the processor).
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`):
            Content projector: `"linear"`, `"mlp{N}x_gelu"` or `"identity"` (`mm_projector_type`).
        compress_type (`str`, *optional*, defaults to `"mean"`):
            How patches become content tokens: `"mean"` (1 token), `"grid:g"` (g*g tokens) or `None` (all patches).
        select_feature (`str`, *optional*, defaults to `"patch"`):
            `"patch"` drops the class token of pixel inputs before the context and content tokens (the Q-Former
            still reads it), `"cls_patch"` keeps it (`mm_vision_select_feature`).
        qformer_layernorm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorm applied to the vision features before the Q-Former (InstructBLIP `ln_vision`,
            torch's default epsilon).
        image_token_index (`int`, *optional*, defaults to 32000):
            Placeholder id of image tokens in `input_ids` (not a row of the embedding matrix).
        video_token_index (`int`, *optional*, defaults to 32001):
            Placeholder id of video tokens (short videos from pixels and long videos from features).
        ignore_index (`int`, *optional*, defaults to -100):
            Label value ignored by the loss; placeholder positions always get it.
        visual_chunk_size (`int`, *optional*, defaults to 64):
            Frames per chunk when running the vision tower, the Q-Former and the context attention (the original
            uses 64 for long videos). Only memory changes with it.
        original_rope_precision (`str`, *optional*):
            `None` (default): exact linear RoPE (positions divided by the factor in float32). `"float16"` or
            `"bfloat16"`: reproduce how transformers 4.31 computed RoPE angles once a sequence exceeded
            `max_position_embeddings` (inverse frequencies and positions rounded to that dtype), which is what the
            original long-video inference computed for every movie longer than 4,096 tokens.
        original_rope_inv_freq_dtype (`str`, *optional*, defaults to `"bfloat16"`):
            Dtype in which the original checkpoint stored `rotary_emb.inv_freq` (bf16 for the LLaMA-VID releases,
            float32 for MovieLLM's); only used with `original_rope_precision`.
        sdpa_backends (`list[str]`, *optional*):
            Priority order of PyTorch's scaled-dot-product-attention kernels for the language model and the vision
            tower on CUDA, from "cudnn", "flash", "efficient", "math" (e.g. `["cudnn", "flash", "efficient", "math"]`, the fastest
            prefill on Hopper). `None` keeps PyTorch's default order. Only the kernel changes, not the result.
        fast_attention (`bool`, *optional*, defaults to `False`):
            Keep the language model's causal mask implicit (SDPA `is_causal`, flash/cuDNN kernels) when the decoder is
            compiled (`compile_blocks`) and the batch has no padding: transformers materialises the mask under
            `torch.compile`, which forces a slower SDPA kernel. Eager calls are unchanged. Only applies when the
            language model uses `attn_implementation="sdpa"` (see `moviellm_model.fast_attention`).
        cuda_graph_decoding (`bool`, *optional*, defaults to `False`):
            On CUDA, `generate`'s compiled decoding steps (static cache) replay one CUDA graph captured by LLaMA-VID per
            cache (`moviellm_model.cuda_graph_decoding`) instead of torch.compile's CUDA-graph trees, which cuts the host
            time between tokens. Same kernels and results; the `compile_config` of `generate` still chooses the
            kernels (its CUDA-graph modes map to their inductor-only counterparts). Fastest measured on an H100 (2-hour
            movie, 14.5k tokens): `compile_config=CompileConfig(mode="max-autotune")`, 115 tokens/s against 85 with
            transformers' default; it autotunes for about a minute on first use.
        loss_chunk_size (`int`, *optional*):
            With labels, compute the loss from the labelled positions only, `loss_chunk_size` rows of logits at a time
            (recomputed in the backward pass), and return no logits: the training memory of a long movie no longer
            holds [tokens, vocabulary] logits. `None` (default): the standard loss over full logits.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether `lm_head` shares the input embeddings (not in Llama-2).

    Example:

    ```python
    >>> from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration
    >>> config = LlamaVidConfig()  # LLaMA-VID 7B, 224 px, 2 tokens per frame
    >>> model = LlamaVidForConditionalGeneration(config)  # random weights
    ```
    """

    model_type = "llamavid"
    sub_configs = {
        "text_config": LlamaConfig,
        "vision_config": LlamaVidVisionConfig,
        "qformer_config": InstructBlipQFormerConfig,
    }
    attribute_map = {"image_token_id": "image_token_index", "video_token_id": "video_token_index"}

    def __init__(
        self,
        vision_config: dict | LlamaVidVisionConfig | None = None,
        qformer_config: dict | InstructBlipQFormerConfig | None = None,
        text_config: dict | LlamaConfig | None = None,
        num_query_tokens: int = 32,
        qformer_max_length: int = 256,
        qformer_truncation_side: str = "left",
        projector_type: str = "mlp2x_gelu",
        compress_type: str | None = "mean",
        select_feature: str = "patch",
        qformer_layernorm_eps: float = 1e-5,
        image_token_index: int = 32000,
        video_token_index: int = 32001,
        ignore_index: int = -100,
        visual_chunk_size: int = 64,
        original_rope_precision: str | None = None,
        original_rope_inv_freq_dtype: str = "bfloat16",
        sdpa_backends: list[str] | None = None,
        fast_attention: bool = False,
        cuda_graph_decoding: bool = False,
        loss_chunk_size: int | None = None,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ):
        if isinstance(vision_config, dict):
            vision_config = {k: v for k, v in vision_config.items() if k != "model_type"}
            vision_config = LlamaVidVisionConfig(**vision_config)
        elif vision_config is None:
            vision_config = LlamaVidVisionConfig()

        if isinstance(qformer_config, dict):
            qformer_config = {k: v for k, v in qformer_config.items() if k != "model_type"}
            qformer_config = InstructBlipQFormerConfig(**qformer_config)
        elif qformer_config is None:
            qformer_config = InstructBlipQFormerConfig(
                vocab_size=30523, encoder_hidden_size=vision_config.hidden_size, cross_attention_frequency=2
            )

        if isinstance(text_config, dict):
            text_config = {k: v for k, v in text_config.items() if k != "model_type"}
            text_config = LlamaConfig(**text_config)
        elif text_config is None:
            text_config = LlamaConfig(
                vocab_size=32000,
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                max_position_embeddings=4096,
                rms_norm_eps=1e-5,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                tie_word_embeddings=False,
            )

        if projector_type != "identity" and projector_type != "linear":
            if not (projector_type.startswith("mlp") and projector_type.endswith("x_gelu")):
                raise ValueError(
                    f"projector_type {projector_type!r} is not one of 'linear', 'mlp<N>x_gelu', 'identity'."
                )
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"select_feature must be 'patch' or 'cls_patch', not {select_feature!r}.")
        if qformer_truncation_side not in ("left", "right"):
            raise ValueError("qformer_truncation_side must be 'left' or 'right'.")
        if original_rope_precision not in (None, "float16", "bfloat16", "float32"):
            raise ValueError("original_rope_precision must be None, 'float16', 'bfloat16' or 'float32'.")
        parse_compress_type(compress_type)  # validates
        if sdpa_backends is not None:
            unknown = set(sdpa_backends) - {"cudnn", "flash", "efficient", "math"}
            if unknown or not sdpa_backends:
                raise ValueError("sdpa_backends must list some of 'cudnn', 'flash', 'efficient', 'math'.")
            sdpa_backends = list(sdpa_backends)

        self.vision_config = vision_config
        self.qformer_config = qformer_config
        self.text_config = text_config
        self.num_query_tokens = num_query_tokens
        self.qformer_max_length = qformer_max_length
        self.qformer_truncation_side = qformer_truncation_side
        self.projector_type = projector_type
        self.compress_type = compress_type
        self.select_feature = select_feature
        self.qformer_layernorm_eps = qformer_layernorm_eps
        self.image_token_index = image_token_index
        self.video_token_index = video_token_index
        self.ignore_index = ignore_index
        self.visual_chunk_size = visual_chunk_size
        self.original_rope_precision = original_rope_precision
        self.original_rope_inv_freq_dtype = original_rope_inv_freq_dtype
        self.sdpa_backends = sdpa_backends
        self.fast_attention = bool(fast_attention)
        self.cuda_graph_decoding = bool(cuda_graph_decoding)
        if loss_chunk_size is not None and int(loss_chunk_size) < 1:
            raise ValueError("loss_chunk_size must be a positive number of rows or None.")
        self.loss_chunk_size = None if loss_chunk_size is None else int(loss_chunk_size)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def content_tokens_per_frame(self) -> int:
        """Content tokens per image or frame (1 for "mean", g*g for "grid:g", all patches for None)."""
        num_patches = self.vision_config.num_patches + (1 if self.select_feature == "cls_patch" else 0)
        return content_tokens_per_frame(self.compress_type, num_patches)

    @property
    def tokens_per_frame(self) -> int:
        """LLM tokens per image or frame: one context token plus the content tokens (2 for the video models)."""
        return 1 + self.content_tokens_per_frame

    @property
    def attention_scale(self) -> float:
        """Softmax temperature of the context attention: 1 / sqrt(vision width), as in the original."""
        return 1.0 / math.sqrt(self.vision_config.hidden_size)
