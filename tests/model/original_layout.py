"""Test helpers: a synthetic checkpoint laid out exactly like the original LLaMA-VID release, and a reference
computation of the original's formulas (llamavid-spec.md, sections 1.2-1.7) written independently of moviellm_model.

Key names follow section 1.11 of the spec; sizes are scaled down. The reference works on the *original* key names,
so it also checks the conversion's key mapping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from .conftest import NUM_QUERY, QFORMER_FFN, QFORMER_HEADS, QFORMER_HIDDEN, QFORMER_LAYERS, TEXT, VISION

IMAGE_TOKEN_INDEX = -200
EVA_FILE_GRID = 3  # eva file made for 42 px: the converter must interpolate to the 2x2 grid of 28 px


def _randn(generator, *shape, std=0.2):
    return torch.randn(*shape, generator=generator) * std


def eva_state(generator, blocks: int, grid: int) -> dict[str, torch.Tensor]:
    width, ffn, patch = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    state = {
        "cls_token": _randn(generator, 1, 1, width),
        "pos_embed": _randn(generator, 1, grid * grid + 1, width),
        "patch_embed.proj.weight": _randn(generator, width, 3, patch, patch, std=0.05),
        "patch_embed.proj.bias": _randn(generator, width),
    }
    for i in range(blocks):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + _randn(generator, width, std=0.1), b + "norm1.bias": _randn(generator, width),
            b + "attn.q_bias": _randn(generator, width), b + "attn.v_bias": _randn(generator, width),
            b + "attn.qkv.weight": _randn(generator, 3 * width, width, std=0.1),
            b + "attn.proj.weight": _randn(generator, width, width, std=0.1), b + "attn.proj.bias": _randn(generator, width),
            b + "norm2.weight": 1 + _randn(generator, width, std=0.1), b + "norm2.bias": _randn(generator, width),
            b + "mlp.fc1.weight": _randn(generator, ffn, width, std=0.1), b + "mlp.fc1.bias": _randn(generator, ffn),
            b + "mlp.fc2.weight": _randn(generator, width, ffn, std=0.1), b + "mlp.fc2.bias": _randn(generator, width),
        })
    return state


def bert_state(generator, prefix: str, vocab: int) -> dict[str, torch.Tensor]:
    h, ffn, enc = QFORMER_HIDDEN, QFORMER_FFN, VISION["hidden_size"]
    state = {
        prefix + "embeddings.word_embeddings.weight": _randn(generator, vocab, h, std=1.0),
        prefix + "embeddings.position_embeddings.weight": _randn(generator, 64, h, std=0.5),
        prefix + "embeddings.LayerNorm.weight": 1 + _randn(generator, h, std=0.1),
        prefix + "embeddings.LayerNorm.bias": _randn(generator, h),
        prefix + "embeddings.position_ids": torch.arange(64)[None],
    }

    def linear(name, out_dim, in_dim, std=0.3):
        state[name + ".weight"] = _randn(generator, out_dim, in_dim, std=std)
        state[name + ".bias"] = _randn(generator, out_dim)

    def layer_norm(name):
        state[name + ".weight"] = 1 + _randn(generator, h, std=0.1)
        state[name + ".bias"] = _randn(generator, h)

    for i in range(QFORMER_LAYERS):
        p = f"{prefix}encoder.layer.{i}."
        for part in ("query", "key", "value"):
            linear(p + "attention.self." + part, h, h)
        linear(p + "attention.output.dense", h, h, std=0.2)
        layer_norm(p + "attention.output.LayerNorm")
        if i % 2 == 0:
            linear(p + "crossattention.self.query", h, h)
            linear(p + "crossattention.self.key", h, enc, std=0.1)
            linear(p + "crossattention.self.value", h, enc, std=0.1)
            linear(p + "crossattention.output.dense", h, h, std=0.2)
            layer_norm(p + "crossattention.output.LayerNorm")
        for suffix in ("", "_query"):
            linear(p + "intermediate" + suffix + ".dense", ffn, h, std=0.2)
            linear(p + "output" + suffix + ".dense", h, ffn, std=0.2)
            layer_norm(p + "output" + suffix + ".LayerNorm")
    return state


def llama_state(generator, vocab: int) -> dict[str, torch.Tensor]:
    h, ffn = TEXT["hidden_size"], TEXT["intermediate_size"]
    head_dim = h // TEXT["num_attention_heads"]
    inv_freq = (1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))).to(torch.bfloat16)
    state = {"model.embed_tokens.weight": _randn(generator, vocab, h, std=0.5), "model.norm.weight": 1 + _randn(generator, h, std=0.1),
             "lm_head.weight": _randn(generator, vocab, h, std=0.2)}
    for i in range(TEXT["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{name}.weight"] = _randn(generator, h, h, std=0.15)
        state[p + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        state[p + "mlp.gate_proj.weight"] = _randn(generator, ffn, h, std=0.15)
        state[p + "mlp.up_proj.weight"] = _randn(generator, ffn, h, std=0.15)
        state[p + "mlp.down_proj.weight"] = _randn(generator, h, ffn, std=0.15)
        state[p + "input_layernorm.weight"] = 1 + _randn(generator, h, std=0.1)
        state[p + "post_attention_layernorm.weight"] = 1 + _randn(generator, h, std=0.1)
    return state


def build_original(root: Path, llama_tokenizer_dir: Path, bert_dir: Path, qformer_vocab: int, seed: int = 0,
                   with_qformer: bool = True, sentencepiece_model: Path | None = None,
                   sentencepiece_legacy: bool | None = False, llm_dtype: torch.dtype = torch.float32,
                   eva_dtype: torch.dtype = torch.float32, image_processor_size: int | None = None) -> dict[str, Path]:
    """Write SRC/, eva_vit_g.pth, instruct_blip_vicuna7b_trimmed.pth; return their paths.

    The Llama tokenizer is the tiny `tokenizer.json` or, with `sentencepiece_model`, a `tokenizer.model` with a
    transformers-4.31 `tokenizer_config.json` (what the releases ship; `sentencepiece_legacy=None` leaves out its
    `legacy` key, as the releases do). `llm_dtype` / `eva_dtype` are the precisions of the checkpoint shards and of
    eva_vit_g.pth (the releases: bfloat16 and float16). With `image_processor_size`, SRC/clip-patch14-224 holds a
    preprocessor_config.json of that size, which the config's `image_processor` path names.
    """
    generator = torch.Generator().manual_seed(seed)
    src = root / "llama-vid-7b-full-224-long-video"
    src.mkdir(parents=True)
    if sentencepiece_model is None:
        vocab_size = len(json.loads((llama_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    else:
        vocab_size = 420  # tests/model/data/tiny_llama_spm.model
    width, text_width = VISION["hidden_size"], TEXT["hidden_size"]

    state = llama_state(generator, vocab_size)
    state.update({
        "model.mm_projector.0.weight": _randn(generator, text_width, width, std=0.1),
        "model.mm_projector.0.bias": _randn(generator, text_width),
        "model.mm_projector.2.weight": _randn(generator, text_width, text_width, std=0.1),
        "model.mm_projector.2.bias": _randn(generator, text_width),
    })
    eva_file = eva_state(generator, blocks=VISION["num_hidden_layers"] + 1, grid=EVA_FILE_GRID)
    eva_file["norm.weight"] = torch.ones(width)  # EVA-CLIP keys the LAVIS tower does not build
    eva_file["norm.bias"] = torch.zeros(width)
    # the release carries a (39-block, already interpolated) copy of the tower
    copy = eva_state(generator, blocks=VISION["num_hidden_layers"], grid=2)
    state.update({"model.vision_tower.vision_tower." + k: v for k, v in copy.items()})
    if with_qformer:
        state.update(bert_state(generator, "model.vlm_att_encoder.bert.", qformer_vocab))
        state["model.vlm_att_query"] = _randn(generator, 1, NUM_QUERY, QFORMER_HIDDEN, std=1.0)
        state["model.vlm_att_ln.weight"] = 1 + _randn(generator, width, std=0.1)
        state["model.vlm_att_ln.bias"] = _randn(generator, width)
    state.update({
        "model.vlm_att_projector.weight": _randn(generator, width, QFORMER_HIDDEN, std=0.3),
        "model.vlm_att_projector.bias": _randn(generator, width),
        "model.vlm_att_key_projector.weight": _randn(generator, width, width, std=0.3),
        "model.vlm_att_key_projector.bias": _randn(generator, width),
        "model.vlm_att_val_projector.weight": _randn(generator, text_width, width, std=0.1),
        "model.vlm_att_val_projector.bias": _randn(generator, text_width),
    })

    state = {k: v.to(llm_dtype) if v.is_floating_point() and not k.endswith("inv_freq") else v for k, v in state.items()}
    eva_file = {k: v.to(eva_dtype) for k, v in eva_file.items()}
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map = {}
    for index, part in enumerate(halves, start=1):
        name = f"pytorch_model-0000{index}-of-00002.bin"
        torch.save({k: state[k] for k in part}, src / name)
        weight_map.update({k: name for k in part})
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (src / "config.json").write_text(json.dumps({
        "_name_or_path": "./work_dirs/llama-vid-7b-full-224-video-fps-1-freeze-compress-meancat-imgsp-v1-b4-g4",
        "architectures": ["LlavaLlamaAttForCausalLM"], "model_type": "llava", "bert_type": "qformer_pretrain_freeze",
        "compress_type": "mean_concat", "cross_att_freq": 2, "debug_use": False, "fusion_type": "attention_concat_all_query",
        "image_processor": "./llamavid/processor/clip-patch14-224" if image_processor_size
        else "./model_zoo/OpenAI/clip-vit-large-patch14", "mm_vision_tower": "./model_zoo/LAVIS/eva_vit_g.pth",
        "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": width, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad", "image_grid_pinpoints": None, "max_token": 65536, "num_qformer": 32,
        "position_type": None, "use_raw_query_trans": False, "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False, "use_mm_proj": True, "use_cache": True,
        "hidden_act": "silu", "hidden_size": text_width, "intermediate_size": TEXT["intermediate_size"],
        "initializer_range": 0.02, "max_position_embeddings": TEXT["max_position_embeddings"],
        "num_attention_heads": TEXT["num_attention_heads"], "num_hidden_layers": TEXT["num_hidden_layers"],
        "num_key_value_heads": TEXT["num_key_value_heads"], "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": 16.0, "type": "linear"}, "tie_word_embeddings": False, "vocab_size": vocab_size,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
        "transformers_version": "4.31.0",
    }))
    (src / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 4096, "temperature": 0.9,
        "top_p": 0.6, "transformers_version": "4.31.0",
    }))
    if sentencepiece_model is None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(llama_tokenizer_dir / name, src / name)
    else:
        shutil.copy(sentencepiece_model, src / "tokenizer.model")
        tokenizer_config = {
            "add_bos_token": True, "add_eos_token": False, "bos_token": {"__type": "AddedToken", "content": "<s>",
            "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
            "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": sentencepiece_legacy,
            "model_max_length": 65536, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        }
        if sentencepiece_legacy is None:
            del tokenizer_config["legacy"]
        (src / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        (src / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}))

    if image_processor_size:
        folder = src / "clip-patch14-224"  # the config names ./llamavid/processor/clip-patch14-224
        folder.mkdir()
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "crop_size": image_processor_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": image_processor_size,
        }))
    eva_path = root / "eva_vit_g.pth"
    torch.save(eva_file, eva_path)
    blip = bert_state(generator, "Qformer.bert.", qformer_vocab)
    blip.update({
        "query_tokens": _randn(generator, 1, NUM_QUERY, QFORMER_HIDDEN, std=1.0),
        "ln_vision.weight": 1 + _randn(generator, width, std=0.1), "ln_vision.bias": _randn(generator, width),
        "llm_proj.weight": _randn(generator, text_width, QFORMER_HIDDEN), "llm_proj.bias": _randn(generator, text_width),
    })
    blip_path = root / "instruct_blip_vicuna7b_trimmed.pth"
    torch.save({"model": blip}, blip_path)
    return {"src": src, "eva": eva_path, "qformer": blip_path, "bert": bert_dir}


# ---------------------------------------------------------------------------------------------------------------------
# Reference computation (plain torch on the original key names)
# ---------------------------------------------------------------------------------------------------------------------


def ref_interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    old_grid = int((pos_embed.shape[-2] - 1) ** 0.5)
    if old_grid == new_grid:
        return pos_embed
    tokens = pos_embed[:, 1:].reshape(-1, old_grid, old_grid, pos_embed.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat((pos_embed[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def ref_eva(sd: dict, pixels: torch.Tensor, layers: int) -> torch.Tensor:
    """EVAVisionTowerLavis: [B,3,H,W] -> [B,1+P,C], class token kept, no final norm."""
    width = sd["cls_token"].shape[-1]
    heads = width // 88
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=VISION["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat((sd["cls_token"].expand(x.shape[0], -1, -1), x), dim=1)
    x = x + ref_interpolate_pos_embed(sd["pos_embed"], pixels.shape[-1] // VISION["patch_size"])
    for i in range(layers):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (width,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        bias = torch.cat((sd[b + "attn.q_bias"], torch.zeros_like(sd[b + "attn.v_bias"]), sd[b + "attn.v_bias"]))
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], bias).reshape(x.shape[0], x.shape[1], 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q = q * (width // heads) ** -0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x = x + F.linear(h, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(x, (width,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"],
                     sd[b + "mlp.fc2.bias"])
        x = x + h
    return x


def ref_qformer(sd: dict, p: str, input_ids, text_mask, query, encoder_states) -> torch.Tensor:
    """LAVIS BERT Q-Former (qformer.py): returns last_hidden_state[:, :num_query]."""
    h = QFORMER_HIDDEN
    heads = QFORMER_HEADS

    def ln(x, name):
        return F.layer_norm(x, (h,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-12)

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    def attention(x, kv, name, mask):
        b = x.shape[0]
        split = lambda t: t.view(b, -1, heads, h // heads).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = split(lin(x, name + ".query")), split(lin(kv, name + ".key")), split(lin(kv, name + ".value"))
        scores = q @ k.transpose(-1, -2) / (h // heads) ** 0.5
        if mask is not None:
            scores = scores + mask
        return (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(b, -1, h)

    length = input_ids.shape[1]
    text = sd[p + "embeddings.word_embeddings.weight"][input_ids] + sd[p + "embeddings.position_embeddings.weight"][:length]
    x = ln(torch.cat((query, text), dim=1), p + "embeddings.LayerNorm")
    nq = query.shape[1]
    mask = torch.cat((torch.ones(x.shape[0], nq), text_mask.float()), dim=1)
    extended = (1.0 - mask[:, None, None, :]) * -10000.0
    for i in range(QFORMER_LAYERS):
        L = f"{p}encoder.layer.{i}."
        x = ln(lin(attention(x, x, L + "attention.self", extended), L + "attention.output.dense") + x,
               L + "attention.output.LayerNorm")
        q_part, t_part = x[:, :nq], x[:, nq:]
        if i % 2 == 0:
            c = attention(q_part, encoder_states, L + "crossattention.self", None)
            q_part = ln(lin(c, L + "crossattention.output.dense") + q_part, L + "crossattention.output.LayerNorm")
        q_part = ln(lin(F.gelu(lin(q_part, L + "intermediate_query.dense")), L + "output_query.dense") + q_part,
                    L + "output_query.LayerNorm")
        t_part = ln(lin(F.gelu(lin(t_part, L + "intermediate.dense")), L + "output.dense") + t_part,
                    L + "output.LayerNorm")
        x = torch.cat((q_part, t_part), dim=1)
    return x[:, :nq]


def ref_tokens(sd: dict, features: torch.Tensor, qformer_ids, qformer_mask) -> torch.Tensor:
    """vlm_attention + token_generation for rows of one prompt: [R,S,C] -> [R,2,text_width] (compress 'mean')."""
    rows = features.shape[0]
    ids, mask = qformer_ids.expand(rows, -1), qformer_mask.expand(rows, -1)
    bert_feat = features.clone()
    patches = features[:, 1:] if features.shape[1] % 2 == 1 else features  # "patch": drop CLS if odd
    ln_in = F.layer_norm(bert_feat, (bert_feat.shape[-1],), sd["model.vlm_att_ln.weight"], sd["model.vlm_att_ln.bias"],
                         eps=1e-5)
    query = sd["model.vlm_att_query"].expand(rows, -1, -1)
    out = ref_qformer(sd, "model.vlm_att_encoder.bert.", ids, mask, query, ln_in)
    text_q = F.linear(out, sd["model.vlm_att_projector.weight"], sd["model.vlm_att_projector.bias"])
    keys = F.linear(patches, sd["model.vlm_att_key_projector.weight"], sd["model.vlm_att_key_projector.bias"])
    ctx = text_q @ keys.transpose(-1, -2)
    ctx = ctx / (patches.shape[-1] ** 0.5)
    ctx = (ctx.softmax(-1) @ patches).mean(1)
    ctx = F.linear(ctx[:, None], sd["model.vlm_att_val_projector.weight"], sd["model.vlm_att_val_projector.bias"])
    content = patches.mean(dim=1, keepdim=True)
    content = F.linear(F.gelu(F.linear(content, sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"])),
                       sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"])
    return torch.cat([ctx, content], dim=1)


def ref_llm(sd: dict, config: dict):
    """The original's language model is transformers' LlamaForCausalLM; load it from the original keys."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama_config = LlamaConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"], num_key_value_heads=config["num_key_value_heads"],
        max_position_embeddings=config["max_position_embeddings"], rms_norm_eps=config["rms_norm_eps"],
        rope_parameters={"rope_type": "linear", "factor": config["rope_scaling"]["factor"], "rope_theta": 10000.0},
        tie_word_embeddings=False, attn_implementation="eager",
    )
    model = LlamaForCausalLM(llama_config).eval()
    llm_keys = {k: v for k, v in sd.items() if (k.startswith("model.layers.") or k in (
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")) and not k.endswith("inv_freq")}
    missing, unexpected = model.load_state_dict(llm_keys, strict=False)
    assert not [m for m in missing if "inv_freq" not in m] and not unexpected
    return model


def ref_splice_short(embed, input_ids: list[int], visual: list[torch.Tensor]) -> torch.Tensor:
    """Short path: the k-th -200 is replaced by visual[k] (any length)."""
    pieces, k, start = [], 0, 0
    for pos, token in enumerate(input_ids + [None]):
        if token == IMAGE_TOKEN_INDEX or token is None:
            if pos > start:
                pieces.append(embed(torch.tensor(input_ids[start:pos])))
            if token is not None:
                pieces.append(visual[k])
                k += 1
            start = pos + 1
    return torch.cat(pieces)[None]


def ref_splice_long(embed, input_ids: list[int], visual: torch.Tensor) -> torch.Tensor:
    """Long path: same length; -200 positions are filled with the [2T, C] visual sequence in order."""
    ids = torch.tensor(input_ids)
    out = torch.empty(len(input_ids), visual.shape[-1])
    text = ids != IMAGE_TOKEN_INDEX
    out[text] = embed(ids[text])
    assert int((~text).sum()) == visual.shape[0]
    out[~text] = visual
    return out[None]
