"""LLaMA-VID inference speed at the real 7B sizes (random weights, bf16): reference and ours in one process.

Figures (the issue "LLaMA-VID as transformers classes"; speed targets of issue 6 printed last):
1. EVA-ViT-g frames/s at 224 px. Reference: the original (timm/LAVIS-style) EVA forward written plainly, explicit
   softmax attention. Ours: `LlamaVidVisionModel` with SDPA, `vision_config.fused_gelu` (fc1 + GELU in one cuBLASLt
   call) and `vision_config.fused_residual_norm` (each residual add done inside the next LayerNorm's kernel) with
   cuDNN attention first, through the model's own `get_vision_features`; the fastest of 256-, 128- and 64-frame
   calls (`visual_chunk_size`) and of the previous best (fused GELU alone) is ours, every rate is in the notes.
2. Visual tokens of a 2-hour movie (7,200 frames: Q-Former + context/content tokens). Reference: the original's
   64-frame chunks. Ours: 512-frame chunks (`config.visual_chunk_size`). Informative.
3. Prefill of the movie prompt (14,400 visual tokens + text) through the language model. Reference: transformers'
   SDPA attention, eager, logits for every position. Ours: `compile_blocks` (the whole decoder compiled once, with
   `config.fast_attention` keeping the causal mask implicit), `config.sdpa_backends` cuDNN first, logits for the last
   position only (what `generate` asks for).
4. Decode tokens/s at that context. Reference: `generate` with transformers' default (dynamic) cache. Ours:
   `generate(cache_implementation="static")` with `config.cuda_graph_decoding` (one CUDA graph per cache) and, with
   `--decode-autotune`, inductor's max-autotune kernels; transformers' own compiled step (CUDA-graph trees) is measured
   too; the fastest is ours.
5. Peak GPU memory of every phase.

Correctness: EVA features of both paths against a float32 run of the same weights; last-position prompt logits ours
vs reference; the decoded tokens and per-step logits ours vs reference; and a float32 run of the whole model,
teacher-forced on the reference's tokens, as the yardstick for both bf16 paths.

Usage:
    python3 benchmarks/bench_model.py --decode-autotune --time-budget 300   # on an H100: 7B sizes, 7,200 frames
    python3 benchmarks/bench_model.py --tiny          # CPU smoke run in seconds
    ... --record [--results PATH]                     # append the entry to benchmarks/RESULTS.md (or PATH)
The markdown entry is also printed, then the ratios (last).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks._common import (  # noqa: E402
    Peak,
    cuda_time,
    entry_header,
    failure,
    first_working,
    gpu_seconds,
    machine_card,
    parse_with_record_options,
    peak_tflops,
    profile_to,
    rel_err,
    report,
    timed,
)
from benchmarks._eva import RefEVA, eva_flops_per_frame  # noqa: E402
from benchmarks._llamavid import build_config, build_model  # noqa: E402
from moviellm_model import LlamaVidForConditionalGeneration  # noqa: E402
from moviellm_model.fast_paths import SDPA_BACKENDS, sdpa_priority  # noqa: E402

TARGETS = {"eva": 1200.0, "prefill": 0.45, "decode": 100.0}  # frames/s, seconds, tokens/s (issue)
ISSUE_REFERENCE = {"eva": 927.0, "prefill": 0.51, "decode": 11.5}


def float32_logits(model, embeds: torch.Tensor, tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions of [prompt embeddings; tokens] with the model in float32 (then back)."""
    dtype = model.dtype
    model.float()
    try:
        with torch.no_grad():
            sequence = torch.cat([embeds.float(), model.get_input_embeddings()(tokens[None])], dim=1)
            mask = torch.ones(sequence.shape[:2], dtype=torch.long, device=sequence.device)
            return model(inputs_embeds=sequence, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits[0]
    finally:
        model.to(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# The figures: one function each, reference and ours on the same model
# ---------------------------------------------------------------------------------------------------------------------


class Bench:
    """What every figure of one `run` shares: the model, its config, the options, and the results so far.

    (A plain class: the tests load this script with `importlib` without registering it, which dataclasses need.)
    """

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                 model: LlamaVidForConditionalGeneration, compile_blocks: bool, compile_kwargs: dict, started: float):
        self.args, self.device, self.dtype, self.model = args, device, dtype, model
        self.compile_blocks, self.compile_kwargs = compile_blocks, compile_kwargs
        self.started = started  # `--time-budget` counts from here
        self.rows: list[tuple[str, str, str, str]] = []  # (figure, reference, ours, unit)
        self.results: dict = {"device": device, "memory": {}, "notes": []}

    @property
    def config(self):  # the options are read from the model's own config object
        return self.model.config

    @property
    def notes(self) -> list[str]:
        return self.results["notes"]

    def reference_setup(self) -> None:
        """The language model as transformers runs it: eager blocks, its SDPA masks, PyTorch's kernel order."""
        self.model.uncompile_blocks()
        self.model.set_fast_attention(False)
        self.config.sdpa_backends = None


def measure_eva(bench: Bench) -> None:
    """Figure 1: EVA frames/s, the reference EVA against the model's own feature path (the fastest real option)."""
    args, device, dtype, model, config = bench.args, bench.device, bench.dtype, bench.model, bench.config
    vc = config.vision_config
    pixels = torch.randn(args.eva_batch, 3, vc.image_size, vc.image_size, device=device, dtype=dtype)
    check = pixels[:4]
    with torch.device(device):
        reference_eva = RefEVA(vc).to(dtype=dtype).eval().requires_grad_(False)
    reference_eva.load_from(model.model.vision_model)
    with torch.no_grad():
        # float32 copy of the same weights: the yardstick for both bf16 paths
        exact = copy.deepcopy(reference_eva).float()
        truth = exact(check.float())
        del exact
        ref_features = reference_eva(check)
        with Peak(device) as peak_ref:
            t_ref = timed(lambda: reference_eva(pixels), device, warmup=1, iters=args.iters)
        del reference_eva
        with Peak(device) as peak_ours:
            t_ours, best = _fastest_eva(bench, pixels)
        _set_eva_option(bench, best)
        ours_features = model.model.get_vision_features(pixels)[: check.shape[0]]  # the timed path and shapes
        profile_to(args.profile, "EVA ours, one batch", lambda: model.model.get_vision_features(pixels), device)
        model.uncompile_blocks()
        vc.fused_gelu = vc.fused_residual_norm = False
        config.sdpa_backends = None
        config.visual_chunk_size = 64
    bench.notes.append(
        f"EVA error vs float32 on the same weights (4 frames): reference {rel_err(ref_features, truth):.1e}, "
        f"ours {rel_err(ours_features, truth):.1e}; ours vs reference {rel_err(ours_features, ref_features):.1e}"
    )
    bench.results["errors"] = {"eva": (rel_err(ref_features, truth), rel_err(ours_features, truth))}
    eva_ref, eva_ours = args.eva_batch / t_ref, args.eva_batch / t_ours
    bench.results["eva"] = (eva_ref, eva_ours)
    bench.results["memory"]["eva"] = (peak_ref.gib, peak_ours.gib)
    flops = eva_flops_per_frame(vc)
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None

    def of_peak(rate):
        return f" ({rate * flops / 1e12 / peak:.0%} of {peak:.0f} TFLOP/s)" if peak else ""

    bench.rows.append(("EVA-ViT-g frames/s", f"{eva_ref:,.0f}{of_peak(eva_ref)}", f"{eva_ours:,.0f}{of_peak(eva_ours)}",
                       "frames/s"))


_CUDNN_FIRST = ["cudnn", "flash", "efficient", "math"]


def _set_eva_option(bench: Bench, option) -> None:
    label, compiled, fused_gelu, fused_residual, backends, chunk = option
    vc = bench.config.vision_config
    bench.model.uncompile_blocks()
    vc.fused_gelu, vc.fused_residual_norm = fused_gelu, fused_residual
    bench.config.sdpa_backends = backends
    bench.config.visual_chunk_size = chunk
    if compiled:
        bench.model.compile_blocks(vision=True, language_model=False, **bench.compile_kwargs)


def _fastest_eva(bench: Bench, pixels: torch.Tensor):
    """(seconds per batch, option) of the fastest real EVA configuration; the notes keep every rate.

    The compiled tower is measured only with --eva-compiled: inductor did not beat the eager kernels in earlier runs.
    """
    args, model = bench.args, bench.model

    def ours_eva():
        # the model's own feature path: `visual_chunk_size` frames per tower call
        return timed(lambda: model.model.get_vision_features(pixels), bench.device,
                     warmup=2 if bench.compile_blocks else 1, iters=args.iters)

    batch = args.eva_batch
    half = max(1, batch // 2)
    candidates = [(f"fused GELU, {half}-frame calls", False, True, False, None, half)]
    candidates += [(f"fused GELU + residual/norm, cuDNN attention, {chunk}-frame calls", False, True, True,
                    _CUDNN_FIRST, chunk) for chunk in dict.fromkeys((batch, half, max(1, batch // 4)))]
    if bench.compile_blocks and args.eva_compiled:
        candidates.append((f"compiled tower, fused GELU, {batch}-frame calls", True, True, False, None, batch))
    measured = []
    for option in candidates:
        try:
            _set_eva_option(bench, option)
            measured.append((ours_eva(), option))
        except Exception as error:  # noqa: BLE001 - reported in the results
            bench.notes.append(f"EVA {option[0]} failed ({failure(error)})")
    if not measured:
        option = ("eager", False, False, False, None, batch)
        _set_eva_option(bench, option)
        measured.append((ours_eva(), option))
    t_ours, best = min(measured, key=lambda item: item[0])
    bench.notes.append("EVA ours: " + ", ".join(f"{option[0]} {batch / t:,.0f} frames/s" for t, option in measured)
                       + f"; ours = {best[0]}")
    return t_ours, best


def measure_visual_tokens(bench: Bench) -> torch.Tensor:
    """Figure 2: visual tokens of the movie, the original's 64-frame chunks against 512-frame chunks; returns them."""
    args, device, dtype, model, config = bench.args, bench.device, bench.dtype, bench.model, bench.config
    vc, frames = config.vision_config, args.frames
    features = torch.randn(frames, vc.num_patches, vc.hidden_size, device=device, dtype=dtype)
    qformer_ids = torch.randint(1000 if not args.tiny else 5, 2000 if not args.tiny else 100, (1, 24), device=device)
    qformer_ids[:, 0], qformer_ids[:, -1] = 101 if not args.tiny else 3, 102 if not args.tiny else 4
    qformer_mask = torch.ones_like(qformer_ids)
    with torch.no_grad():
        def tokens():
            return model.model.get_long_video_features(features, [frames], qformer_ids, qformer_mask)

        with Peak(device) as peak_ref:
            config.visual_chunk_size = 64
            t_tok_ref = timed(tokens, device, warmup=1, iters=max(1, args.iters - 1))
        with Peak(device) as peak_ours:
            config.visual_chunk_size = 512
            t_tok_ours = timed(tokens, device, warmup=1, iters=max(1, args.iters - 1))
            visual = tokens()  # [2T, C]
    bench.results["tokens"] = (t_tok_ref, t_tok_ours)
    bench.results["memory"]["visual tokens"] = (peak_ref.gib, peak_ours.gib)
    bench.rows.append((f"visual tokens, {frames:,} frames", f"{t_tok_ref:.3f} s", f"{t_tok_ours:.3f} s", "s"))
    return visual


def measure_prefill(bench: Bench, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Figure 3: prefill of the movie prompt, transformers' defaults against ours; returns ours' last logits."""
    args, device, model, config = bench.args, bench.device, bench.model, bench.config
    with torch.no_grad():
        bench.reference_setup()
        with Peak(device) as peak_ref:
            t_pre_ref = timed(lambda: model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=0), device,
                              warmup=1, iters=args.iters)
        ref_last = model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()

        def prefill_with(backends, compiled):
            def run_variant():
                config.sdpa_backends = backends
                model.uncompile_blocks()
                model.set_fast_attention(True)
                if compiled:
                    model.compile_blocks(vision=False, language_model=True, **bench.compile_kwargs)
                return timed(lambda: model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=1), device,
                             warmup=2 if bench.compile_blocks else 1, iters=args.iters)

            return run_variant

        variants = [("cuDNN attention + compiled decoder", prefill_with(_CUDNN_FIRST, True)),
                    ("flash attention + compiled decoder", prefill_with(None, True))] if bench.compile_blocks else []
        variants += [("cuDNN attention", prefill_with(_CUDNN_FIRST, False)), ("SDPA defaults", prefill_with(None, False))]
        with Peak(device) as peak_ours:
            t_pre_ours = first_working(bench.notes, variants)
        ours_last = model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()
        profile_to(args.profile, "prefill ours", lambda: model(inputs_embeds=embeds, attention_mask=mask,
                                                               logits_to_keep=1), device)
    bench.results["errors"]["prefill"] = rel_err(ours_last, ref_last)
    bench.notes.append(f"prefill: last-position logits, ours vs reference: relative difference "
                       f"{rel_err(ours_last, ref_last):.1e}")
    bench.results["prefill"] = (t_pre_ref, t_pre_ours)
    bench.results["memory"]["prefill"] = (peak_ref.gib, peak_ours.gib)
    bench.rows.append((f"prefill, {embeds.shape[1]:,} tokens", f"{t_pre_ref:.3f} s", f"{t_pre_ours:.3f} s", "s"))
    return ours_last


class _Decoding:
    """`generate` over the movie prompt, and its decoding rate (tokens/s after the first token)."""

    def __init__(self, bench: Bench, embeds: torch.Tensor, mask: torch.Tensor):
        self.bench, self.embeds, self.mask = bench, embeds, mask

    def generate(self, max_new_tokens, **kwargs):
        return self.bench.model.generate(inputs_embeds=self.embeds, attention_mask=self.mask,
                                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                                         **kwargs)

    def rate(self, outputs: dict, **kwargs) -> float:
        new, device = self.bench.args.decode_tokens, self.bench.device
        # warm-up (compiles and captures graphs for the static cache); its tokens and logits are the ones compared
        result = self.generate(new + 1, return_dict_in_generate=True, output_logits=True, **kwargs)
        outputs.update(sequences=result.sequences, logits=result.logits)  # not the cache: it would stay allocated
        first = timed(lambda: self.generate(1, **kwargs), device, warmup=0, iters=1)
        full = timed(lambda: self.generate(new + 1, **kwargs), device, warmup=0, iters=1)
        return new / (full - first) if full > first else float("nan")  # nan: timing noise larger than decoding


def measure_decode(bench: Bench, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[dict, dict]:
    """Figure 4: decode tokens/s, transformers' dynamic cache against the fastest static-cache option of ours.

    Returns the reference's and ours' generated sequences and per-step logits.
    """
    args, device, config = bench.args, bench.device, bench.config
    decoding = _Decoding(bench, embeds, mask)
    ref_out = {}
    with torch.no_grad():
        bench.reference_setup()
        with Peak(device) as peak_ref:
            rate_ref = decoding.rate(ref_out)
        with Peak(device) as peak_ours:
            rate_ours, label, graphs, ours_out, extra = _fastest_decode(bench, decoding)
        _setup_decode(bench, graphs)
        static = dict(cache_implementation="static", **extra)
        profile_to(args.profile, "decode ours, 8 tokens (prefill included)",
                   lambda: decoding.generate(8, **static), device)
        profile_to(args.profile, "decode ours, host side, 8 tokens (prefill included)",
                   lambda: decoding.generate(8, **static), device, cpu=True)
        busy = (gpu_seconds(lambda: decoding.generate(9, **static), device)
                - gpu_seconds(lambda: decoding.generate(1, **static), device)) / 8
        config.cuda_graph_decoding = False
        bench.reference_setup()
    new = args.decode_tokens
    same = int((ref_out["sequences"] == ours_out["sequences"]).all(0).cumprod(0).sum())
    first_err = rel_err(ours_out["logits"][0], ref_out["logits"][0])
    steps = min(same + 1, len(ref_out["logits"]))  # step i reads tokens 0..i-1: equal inputs up to step `same`
    worst = max((rel_err(ours_out["logits"][i], ref_out["logits"][i]) for i in range(steps)), default=float("nan"))
    bench.notes.append(f"decode: ours generated the reference's first {same} of {new + 1} tokens; logits relative "
                       f"difference {first_err:.1e} at the first step, at most {worst:.1e} while the inputs agree")
    if busy == busy:  # not nan
        bench.notes.append(f"decode ours: GPU kernels {busy * 1e3:.2f} ms per token over 8 tokens of one generate call "
                           f"(a CUDA-graph capture included) against {1e3 / rate_ours:.2f} ms per token measured")
    bench.results["errors"]["decode"] = worst
    bench.results["decode"] = (rate_ref, rate_ours)
    bench.results["memory"]["decode"] = (peak_ref.gib, peak_ours.gib)
    bench.rows.append((f"decode at {embeds.shape[1]:,} tokens", f"{rate_ref:.1f}", f"{rate_ours:.1f}", "tokens/s"))
    bench.results["same_tokens"] = same
    return ref_out, ours_out


def _setup_decode(bench: Bench, graphs: bool) -> None:
    bench.reference_setup()
    bench.model.set_fast_attention(True)  # also the one-kernel decoding masks
    bench.config.cuda_graph_decoding = graphs


def _fastest_decode(bench: Bench, decoding: _Decoding):
    """(rate, label, graphs, outputs, generate options) of the fastest real decoding option; the notes keep every rate."""
    from transformers import CompileConfig

    args = bench.args
    candidates = [("static cache, CUDA graph per cache (cuda_graph_decoding)", True, {}),
                  ("static cache, compiled step with CUDA-graph trees", False, {})]
    if args.decode_autotune:
        candidates.append(("static cache, CUDA graph per cache, max-autotune kernels", True,
                           {"compile_config": CompileConfig(mode="max-autotune")}))
    measured = []
    for label, graphs, extra in candidates:
        if measured and args.time_budget and time.monotonic() - bench.started > args.time_budget:
            bench.notes.append(f"decode {label}: not measured (time budget)")
            continue
        try:
            _setup_decode(bench, graphs)
            outputs = {}
            measured.append((decoding.rate(outputs, cache_implementation="static", **extra), label, graphs, outputs,
                             extra))
        except Exception as error:  # noqa: BLE001 - reported in the results
            bench.notes.append(f"decode {label} failed ({failure(error)})")
    if not measured:
        _setup_decode(bench, False)
        outputs = {}
        measured.append((decoding.rate(outputs, cache_implementation="static", disable_compile=True),
                         "static cache, not compiled", False, outputs, {"disable_compile": True}))
    best = max(measured, key=lambda item: item[0])
    bench.notes.append("decode ours: " + ", ".join(f"{name} {rate:.1f} tokens/s" for rate, name, *_ in measured)
                       + f"; ours = {best[1]}")
    return best


def float32_yardstick(bench: Bench, embeds, ours_last, ref_out: dict, ours_out: dict) -> None:
    """The same weights in float32, teacher-forced on the reference's tokens: the error of both bf16 paths."""
    args = bench.args
    k = min(bench.results["same_tokens"], args.yardstick_steps, len(ref_out["logits"]) - 1)
    if args.yardstick_steps < 0:
        return
    exact = float32_logits(bench.model, embeds, ref_out["sequences"][0, :k], k + 1)  # steps 0..k
    pre = (rel_err(ref_out["logits"][0], exact[0]), rel_err(ours_last, exact[0]))
    dec_ref = max((rel_err(ref_out["logits"][i], exact[i]) for i in range(1, k + 1)), default=float("nan"))
    dec_ours = max((rel_err(ours_out["logits"][i], exact[i]) for i in range(1, k + 1)), default=float("nan"))
    bench.results["errors"]["float32"] = {"prefill": pre, "decode": (dec_ref, dec_ours)}
    bench.notes.append(f"float32 yardstick (same weights, teacher-forced on the reference's tokens): last prompt "
                       f"position logits error reference {pre[0]:.1e}, ours {pre[1]:.1e}; decoding steps 1-{k} at "
                       f"most reference {dec_ref:.1e}, ours {dec_ours:.1e}")


def run(args) -> dict:
    """Every figure, reference and ours in this process; returns the rows, notes, errors and memory peaks."""
    started = time.monotonic()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    compile_kwargs = {"mode": args.compile_mode} if args.compile_mode else {}
    if args.compile_backend:
        compile_kwargs["backend"] = args.compile_backend
    torch.manual_seed(0)
    config = build_config(args.tiny)
    config.visual_chunk_size = 64
    bench = Bench(args, device, dtype, build_model(config, device, dtype),
                  compile_blocks=args.compile if args.compile is not None else device.type == "cuda",
                  compile_kwargs=compile_kwargs, started=started)
    measure_eva(bench)
    visual = measure_visual_tokens(bench)

    # the movie prompt: system prompt + movie wrapper, the visual tokens, question + "ASSISTANT:"
    text_before, text_after = 64, 32
    length = text_before + visual.shape[0] + text_after
    ids = torch.randint(3, bench.config.text_config.vocab_size, (1, length), device=device)
    with torch.no_grad():
        embeds = bench.model.get_input_embeddings()(ids)
        embeds[0, text_before : text_before + visual.shape[0]] = visual.to(dtype)
    del visual
    mask = torch.ones(1, length, dtype=torch.long, device=device)

    ours_last = measure_prefill(bench, embeds, mask)
    ref_out, ours_out = measure_decode(bench, embeds, mask)
    float32_yardstick(bench, embeds, ours_last, ref_out, ours_out)
    bench.results["rows"] = bench.rows
    bench.results["length"] = length
    return bench.results


# ---------------------------------------------------------------------------------------------------------------------
# --explore: the probes behind the choices of "ours" (kernel rates, attention variants), one table
# ---------------------------------------------------------------------------------------------------------------------


class Probes:
    """The table `--explore` fills: each probe adds rows; a failing probe is reported, not fatal; a time budget."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device("cuda")
        self.dtype = torch.bfloat16
        self.deadline = time.monotonic() + args.explore_seconds
        self.table: list[tuple[str, str]] = []
        self.log = open(args.explore_log, "a", encoding="utf-8") if args.explore_log else None

    def add(self, name: str, value: str) -> None:
        self.table.append((name, value))
        line = f"{name}: {value}"
        print(line, flush=True)
        if self.log:
            self.log.write(line + "\n")
            self.log.flush()

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def run(self, name: str, probe) -> None:
        if self.args.explore_probes and name not in self.args.explore_probes:
            return
        if self.out_of_time():
            self.add(name, "skipped (time budget)")
            return
        try:
            probe(self)
        except Exception as error:  # noqa: BLE001 - reported in the table
            self.add(name, f"FAILED {failure(error, 200)}")
        finally:
            gc.collect()
            torch.cuda.empty_cache()

    def close(self) -> None:
        if self.log:
            self.log.close()


def probe_gemms(p: Probes) -> None:
    """Matrix products at the model's shapes (EVA, prefill) and matrix-vector products of decoding."""
    device, dtype = p.device, p.dtype
    shapes = [("8192^3", 8192, 8192, 8192)]
    m_eva = p.args.eva_batch * 257
    shapes += [(f"EVA {n}x{k}", m_eva, n, k) for n, k in ((4224, 1408), (1408, 1408), (6144, 1408), (1408, 6144))]
    shapes += [(f"LM prefill {n}x{k}", 14496, n, k) for n, k in ((4096, 4096), (11008, 4096), (4096, 11008))]
    for label, m, n, k in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype)
        t = cuda_time(lambda: F.linear(a, w), iters=10)
        p.add(f"GEMM {label} (M={m})", f"{2 * m * n * k / t / 1e12:.0f} TFLOP/s ({t * 1e3:.2f} ms)")
    for n, k in ((4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096)):
        ws = [torch.randn(n, k, device=device, dtype=dtype) for _ in range(8)]
        x = torch.randn(1, k, device=device, dtype=dtype)
        it = iter(range(10**9))
        t = cuda_time(lambda: F.linear(x, ws[next(it) % 8]), iters=40)
        p.add(f"GEMV decode {n}x{k}", f"{n * k * 2 / t / 1e9:.0f} GB/s ({t * 1e6:.0f} us)")


def _backend_times(p: Probes, label, q, k, v, flops, backends=("flash", "cudnn", "efficient", "math"), **kw) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in backends:
        try:
            with sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[name])]):
                t = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, **kw), iters=5, warmup=2)
            p.add(f"{label} {name}", f"{t * 1e3:.2f} ms ({flops / t / 1e12:.0f} TFLOP/s)")
        except Exception as error:  # noqa: BLE001
            p.add(f"{label} {name}", f"unavailable ({type(error).__name__})")


def probe_eva_attention(p: Probes) -> None:
    batch = p.args.eva_batch
    for tokens in (257, 256):
        q, k, v = (torch.randn(batch, 16, tokens, 88, device=p.device, dtype=p.dtype) for _ in range(3))
        _backend_times(p, f"EVA attention [{batch},16,{tokens},88]", q, k, v, 4 * batch * 16 * tokens * tokens * 88,
                       scale=88**-0.5)


def probe_prefill_attention(p: Probes) -> None:
    q, k, v = (torch.randn(1, 32, 14496, 128, device=p.device, dtype=p.dtype) for _ in range(3))
    _backend_times(p, "prefill attention causal [1,32,14496,128]", q, k, v, 2 * 32 * 14496**2 * 128,
                   backends=("flash", "cudnn", "efficient"), is_causal=True)


def probe_decode_attention(p: Probes) -> None:
    """One query over a 14.6k-token static cache: SDPA with the mask, without it (a bound), flex_attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device, dtype = p.device, p.dtype
    length, layers = 14625, 6
    caches = [(torch.randn(1, 32, length, 128, device=device, dtype=dtype),
               torch.randn(1, 32, length, 128, device=device, dtype=dtype)) for _ in range(layers)]
    q = torch.randn(1, 32, 1, 128, device=device, dtype=dtype)
    valid = torch.arange(length, device=device) < length - 120
    bool_mask = valid.view(1, 1, 1, length)
    nbytes = 2 * 32 * length * 128 * 2
    counter = iter(range(10**9))

    def rate(label, fn):
        t = cuda_time(lambda: fn(*caches[next(counter) % layers]), iters=60, warmup=5)
        p.add(f"decode attention L={length}: {label}", f"{t * 1e6:.0f} us/layer, {nbytes / t / 1e9:.0f} GB/s "
                                                        f"(x32 layers: {32 * t * 1e3:.2f} ms/token)")

    reference = F.scaled_dot_product_attention(q, caches[0][0], caches[0][1], attn_mask=bool_mask)
    rate("SDPA with the static-cache mask (transformers' path)",
         lambda k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        rate("SDPA flash, no mask (split-KV; ignores the mask, bound only)",
             lambda k, v: F.scaled_dot_product_attention(q, k, v))
    try:
        from torch.nn.attention.flex_attention import flex_attention

        limit = torch.tensor(length - 121, device=device)

        def score_mod(score, b, h, q_idx, kv_idx):
            return torch.where(kv_idx <= limit, score, -float("inf"))

        flex = torch.compile(lambda qq, k, v: flex_attention(qq, k, v, score_mod=score_mod))
        got = flex(q, *caches[0])
        p.add("decode attention: flex vs SDPA relative difference", f"{rel_err(got, reference):.1e}")
        rate("flex_attention (compiled)", lambda k, v: flex(q, k, v))
    except Exception as error:  # noqa: BLE001
        p.add("decode attention: flex_attention", f"FAILED {failure(error)}")


def probe_eva_variants(p: Probes) -> None:
    """The real-size tower eager, with compiled blocks (with and without cuDNN first), compiled whole, autotuned."""
    from moviellm_model.modeling_llamavid import LlamaVidVisionModel

    device, dtype, batch = p.device, p.dtype, p.args.eva_batch
    vc = build_config(False).vision_config
    with torch.device(device):
        tower = LlamaVidVisionModel(vc).to(dtype).eval().requires_grad_(False)
    tower.config._attn_implementation = "sdpa"
    pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    flops = eva_flops_per_frame(vc)

    def measure(label, cudnn=False):
        if p.out_of_time():
            p.add(f"EVA {label}", "skipped (time budget)")
            return
        started = time.monotonic()
        with torch.no_grad(), sdpa_priority(_CUDNN_FIRST if cudnn else None, device):
            tower(pixels)
            compile_s = time.monotonic() - started
            t = cuda_time(lambda: tower(pixels), iters=5, warmup=2)
        rate = batch / t
        p.add(f"EVA {label}", f"{rate:,.0f} frames/s ({rate * flops / 1e12:.0f} TFLOP/s; first call {compile_s:.0f} s)")

    def reset():
        torch._dynamo.reset()
        for module in [tower, *tower.layers]:
            module._compiled_call_impl = None

    measure("eager SDPA")
    for label, cudnn, compile_blocks in (
        ("compiled blocks (current ours)", False, lambda: [block.compile() for block in tower.layers]),
        ("compiled blocks, cuDNN attention first", True, lambda: [block.compile() for block in tower.layers]),
        ("whole tower compiled", False, tower.compile),
        ("compiled blocks, max-autotune-no-cudagraphs", False,
         lambda: [block.compile(mode="max-autotune-no-cudagraphs") for block in tower.layers]),
    ):
        compile_blocks()
        measure(label, cudnn=cudnn)
        reset()


def probe_decode_modes(p: Probes) -> None:
    """Decoding over a 14.5k-token static cache with transformers' compiled step, per torch.compile mode."""
    from transformers import CompileConfig

    device = p.device
    model = build_model(build_config(False), device, p.dtype)
    model.set_fast_attention(True)
    length = 14496
    embeds = torch.randn(1, length, 4096, device=device, dtype=p.dtype) * 0.02
    mask = torch.ones(1, length, dtype=torch.long, device=device)
    for mode in p.args.decode_modes:
        if p.out_of_time():
            p.add(f"decode, compile mode {mode}", "skipped (time budget)")
            continue
        compile_config = CompileConfig(fullgraph=True, mode=mode)

        def generate(count, cc=compile_config):
            return model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=count,
                                  min_new_tokens=count, do_sample=False, cache_implementation="static",
                                  compile_config=cc)

        started = time.monotonic()
        with torch.no_grad():
            generate(17)
            compile_s = time.monotonic() - started
            first = timed(lambda: generate(1), device, warmup=0, iters=1)
            full = timed(lambda: generate(129), device, warmup=0, iters=1)
            busy = (gpu_seconds(lambda: generate(9), device) - gpu_seconds(lambda: generate(1), device)) / 8
        rate = 128 / (full - first)
        p.add(f"decode at {length + 129:,} tokens, compile mode {mode}",
              f"{rate:.1f} tokens/s ({1e3 / rate:.2f} ms/token, GPU busy {busy * 1e3:.2f} ms; warm-up {compile_s:.0f} s)")


PROBES = [("GEMMs", probe_gemms), ("EVA attention", probe_eva_attention), ("prefill attention", probe_prefill_attention),
          ("decode attention", probe_decode_attention), ("EVA variants", probe_eva_variants),
          ("decode modes", probe_decode_modes)]


def explore(args) -> list[tuple[str, str]]:
    """Kernel-level probes on the GPU (7B sizes). Each probe is independent; a failing one is reported, not fatal."""
    probes = Probes(args)
    props = torch.cuda.get_device_properties(probes.device)
    probes.add("device", f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
                         f"cuDNN {torch.backends.cudnn.version()}")
    for name, probe in PROBES:
        probes.run(name, probe)
    probes.close()
    return probes.table


def render(results, args) -> str:
    device = results["device"]
    lines = entry_header("bench_model", machine_card(device), args.argv) + [
        f"- LLaMA-VID {'tiny' if args.tiny else '7B'} with random weights, "
        f"{'bf16' if device.type == 'cuda' else 'fp32'}; {args.frames:,} movie frames "
        f"({2 * args.frames:,} visual tokens), EVA batch {args.eva_batch}, {args.decode_tokens} decoded tokens",
        "",
        "| figure | reference | ours | unit |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results["rows"]]
    memory = ", ".join(f"{k} {r:.1f} / {o:.1f}" for k, (r, o) in results["memory"].items())
    if device.type == "cuda":
        lines += ["", f"peak GPU memory, GiB (reference / ours): {memory}"]
    lines += [f"- note: {note}" for note in results.get("notes", [])]
    if args.tiny:
        lines += ["- note: tiny CPU run (smoke test of the script); its timings mean nothing"]
    lines += ["", ratios(results, args)]
    return "\n".join(lines) + "\n"


def render_explore(table, args) -> str:
    lines = entry_header("bench_model", torch.cuda.get_device_name(), args.argv, title="bench_model --explore") + [
        "- kernel probes at the 7B sizes (bf16, random data) behind the choices of 'ours'",
        "",
        "| probe | result |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in table]
    return "\n".join(lines) + "\n"


def ratios(results, args) -> str:
    eva_r, eva_o = results["eva"]
    pre_r, pre_o = results["prefill"]
    dec_r, dec_o = results["decode"]
    tok_r, tok_o = results["tokens"]
    text = (
        f"ratios (ours vs reference): EVA {eva_o / eva_r:.2f}x frames/s; visual tokens {tok_r / tok_o:.2f}x faster; "
        f"prefill {pre_r / pre_o:.2f}x faster; decode {dec_o / dec_r:.2f}x tokens/s"
    )
    if not args.tiny:
        text += (
            f"\ntargets: EVA {eva_o:,.0f} >= {TARGETS['eva']:,.0f} frames/s "
            f"{'met' if eva_o >= TARGETS['eva'] else 'NOT met'}; prefill {pre_o:.3f} <= {TARGETS['prefill']} s "
            f"{'met' if pre_o <= TARGETS['prefill'] else 'NOT met'}; decode {dec_o:.1f} >= {TARGETS['decode']:.0f} "
            f"tokens/s {'met' if dec_o >= TARGETS['decode'] else 'NOT met'} (issue's references: "
            f"{ISSUE_REFERENCE['eva']:.0f} frames/s, {ISSUE_REFERENCE['prefill']} s, {ISSUE_REFERENCE['decode']} tokens/s)"
        )
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (seconds); a smoke test of this script")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    parser.add_argument("--frames", type=int, help="movie frames (default 7,200 = 2 hours at 1 fps; tiny: 32)")
    parser.add_argument("--eva-batch", type=int, help="frames per EVA call (default 256; tiny: 8)")
    parser.add_argument("--decode-tokens", type=int, help="decoded tokens timed (default 128; tiny: 8)")
    parser.add_argument("--iters", type=int, default=None, help="timed repetitions (default 5; tiny: 3)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="compile the blocks (default on CUDA)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-mode", help="torch.compile mode for the blocks (e.g. max-autotune-no-cudagraphs)")
    parser.add_argument("--compile-backend", help="torch.compile backend for the blocks (tests use 'eager')")
    parser.add_argument("--explore", action="store_true",
                        help="GPU only: kernel probes behind the choices of 'ours' (GEMM/attention rates, variants)")
    parser.add_argument("--explore-seconds", type=float, default=420.0, help="time budget of --explore")
    parser.add_argument("--explore-log", help="also append each --explore line to this file as it is measured")
    parser.add_argument("--explore-probes", type=lambda text: text.split(","),
                        help="comma-separated probe names to run (default: all)")
    parser.add_argument("--decode-modes", type=lambda text: text.split(","), default=["reduce-overhead", "max-autotune"],
                        help="torch.compile modes of the 'decode modes' probe")
    parser.add_argument("--yardstick-steps", type=int, default=16,
                        help="decoding steps compared with a float32 run of the same weights (-1: no float32 run)")
    parser.add_argument("--decode-autotune", action="store_true",
                        help="also measure decoding with max-autotune kernels (inductor autotuning: a minute or more)")
    parser.add_argument("--eva-compiled", action="store_true",
                        help="also measure the compiled EVA tower (slower than eager in earlier runs)")
    parser.add_argument("--time-budget", type=float,
                        help="seconds after which optional candidates (beyond the first of a figure) are skipped")
    parser.add_argument("--profile", type=Path, help="write the top GPU kernels of ours (EVA, prefill, decode) here")
    args = parse_with_record_options(parser, argv)
    args.frames = args.frames or (32 if args.tiny else 7200)
    args.eva_batch = args.eva_batch or (8 if args.tiny else 256)
    args.decode_tokens = args.decode_tokens or (8 if args.tiny else 128)
    args.iters = args.iters or (3 if args.tiny else 5)
    if args.tiny:
        args.cpu = True
    if args.explore:
        if not torch.cuda.is_available():
            parser.error("--explore needs a CUDA GPU.")
        table = explore(args)
        entry = render_explore(table, args)
        print("\n" + entry)
        if args.record:
            with open(args.results, "a", encoding="utf-8") as handle:
                handle.write("\n" + entry)
        return 0
    results = run(args)
    entry = render(results, args)
    report(entry, args.record, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
