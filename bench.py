"""Benchmark the LUT transformer: training-step speed, FLOP/s against this device's own matmul
peak, sampling time and peak memory, for each LUT head.

    python bench.py                                   # tiny on CPU (blog on CUDA), all three heads
    python bench.py --preset blog --lut dynamic --dtype bf16 --compile --steps 3
    python bench.py --threads 1 --json bench.json     # on a busy machine; figures also as JSON
    python bench.py --reference cat_diffusion7.py     # the post's model against the blog preset

Absolute timings drift on a shared machine, so the peak FLOP/s of a square matmul is measured in
the same run, in fp32 and in bf16 where the device runs it natively (an emulated bf16 matmul is
so slow that timing it would stall the run), and the training step is reported as a fraction of it.
Every figure is printed as soon as it is measured; the default run takes seconds on 2 CPU cores.
The sampling time is for 64 images x model.SAMPLE_STEPS steps, as sample.py takes them; every
network call is one identical forward pass, so on CPU it is timed over --sample-steps steps and scaled
up by the number of calls.
train.py compiles a --minutes budget of 10 or more on x86 CPUs and CUDA; a CPU's default run is a
30-minute budget, so there --compile times the steps of a default training run; without it, the
plain model. docs/results.md has figures.
--reference runs the post's model as published (fp32) against blog.
"""
import argparse
import ast
import copy
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from atomic import save_atomically
from cli import available_device, number, output_file, stop_quietly
from machine import autocast_for, best_device, compile_problem, fast_dtype, synchronize
from model import (HEADS, PRESETS, SAMPLE_STEPS, LUTTransformer, defaults, make_config, make_optimizer, sample,
                   train_step)

BATCH = 64  # images per training step for every preset, so that figures compare (blog trains at 64)
COLUMNS = [("lut", "LUT head", ""), ("step_ms", "step ms", ".0f"), ("img_per_s", "img/s", ".1f"),
           ("train_gflop_per_img", "GFLOP/img", ".2f"), ("tflop_per_s", "TFLOP/s", ".3f"),
           ("vs_fp32_peak", "x fp32 peak", ".2f"), ("vs_bf16_peak", "x bf16 peak", ".2f"),
           ("sample_s", "sample s", ".1f"), ("memory_gb", "memory GB", ".2f"), ("params_m", "params M", ".1f")]


def flops_per_image(model):
    """Matmul FLOPs of one forward pass for one image; a multiply-add counts 2. With P = 64 patch
    tokens, S static tokens, T = P + S, width d and K LUT entries:

        patch embed    2 P (3*8*8) d             8x8x3 pixels -> d, per patch
        time MLP       2 (256 d + d d)           once per image
        per block      2 T d 3d                  fused q, k, v projection
                       2 T T d                   scores q k^T (all heads together)
                       2 T T d                   attention-weighted sum of v
                       2 T d d                   output projection
                       2 T in out                each of the MLP's linear layers, read from the model
        score head     2 P d K
        dynamic head   2 S d (K/S) 48            static states -> u, v: 3 colours x (8 + 8) per entry
        LUT mix        2 P K 192                 weights (P, K) @ entries (K, 3*8*8)

    Norms, softmax, SiLU and the dynamic head's outer products u v^T are elementwise: they cost
    memory traffic, not matmul FLOPs. Training costs about 3x the forward pass: the backward pass
    computes one matmul for the input's gradient and one for the weights'."""
    cfg = model.cfg
    P, S, d, K = model.num_patches, cfg.static_tokens, cfg.width, cfg.dict_size
    T = P + S
    linears = sum(2 * T * m.in_features * m.out_features for m in model.blocks[0].modules() if isinstance(m, nn.Linear))
    block = linears + 2 * 2 * T * T * d  # the projections, then scores and weighted sum
    head = 2 * d * K * 48 if cfg.lut == "dynamic" else 0  # S tokens x K/S entries each
    return (2 * P * 192 * d + 2 * (256 * d + d * d) + cfg.depth * block
            + 2 * P * d * K + head + 2 * P * K * 192)


def timed(fn, repeats, device):
    """Seconds of each of `repeats` calls of fn, as a list."""
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak(dtype, device, n=2048):
    """FLOP/s of an n x n matmul, the best of 5: the most that a training step's matmuls can reach.
    (Other jobs on the machine only ever slow a run down, so the fastest one is the peak.) On 2 CPU
    cores an fp32 one takes about 0.15 s; n = 1024 read 20% lower there, too small to fill the cores."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b  # warm-up: thread pools, kernel selection
    return 2 * n ** 3 / min(timed(lambda: a @ b, 5, device))


def one_step(model, ema, optimizer, autocast, settings):
    """One step as train.py takes it (model.train_step, with train.py's defaults), on a batch of random pixels: the
    speed does not depend on what the pictures show."""
    device = next(model.parameters()).device
    x = torch.rand(BATCH, 3, 64, 64, device=device) * 2 - 1  # (B, 3, 64, 64) in [-1, 1]
    t = torch.rand(BATCH, device=device)
    loss, _ = train_step(model, ema, optimizer, x, t, torch.randn_like(x), autocast, settings["grad_clip"],
                         settings["ema"], gram=settings["gram"])
    return loss.item()


def bench_head(lut_name, args, device, peaks):
    torch.manual_seed(0)
    settings = defaults(args.preset, lut_name)  # as train.py trains it, but at batch BATCH
    model = LUTTransformer(make_config(args.preset, lut_name)).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, settings["lr"], settings["weight_decay"], device)
    run_model = torch.compile(model) if args.compile else model
    autocast = autocast_for(device, args.dtype)

    step = lambda: one_step(run_model, ema, optimizer, autocast, settings)
    for _ in range(args.warmup):  # compilation, allocator and oneDNN caches warm up here
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = statistics.median(timed(step, args.steps, device))  # the median shrugs off one slow step

    noise = torch.randn(BATCH, 3, 64, 64, device=device)
    with autocast:
        sample(model, noise, 1, "logit-normal")  # warm-up; the plain model, as sample.py runs it
        # with the model as its own guide: the cost of sample.py's guided calls
        seconds = timed(lambda: sample(model, noise, args.sample_steps, "logit-normal", guide=model), 1, device)[0]
    sample_s = seconds * (2 * SAMPLE_STEPS - 1) / (2 * args.sample_steps - 1)  # network calls of model.sample

    train_flops = 3 * flops_per_image(model)  # forward + backward, per image
    flops = train_flops * BATCH / step_s
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"  # ru_maxrss: KiB on Linux, bytes on macOS
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
    return {"lut": lut_name, "step_ms": 1e3 * step_s, "img_per_s": BATCH / step_s,
            "train_gflop_per_img": train_flops / 1e9, "tflop_per_s": flops / 1e12,
            "vs_fp32_peak": flops / peaks["fp32"], "vs_bf16_peak": flops / peaks["bf16"] if "bf16" in peaks else None,
            "sample_s": sample_s, "memory_gb": memory / 1e9,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def rearrange(tensor, pattern):
    """einops.rearrange for the one pattern the reference uses, where einops is not installed."""
    if pattern != "b c h x w y -> b c (h x) (w y)":
        raise ValueError(f"the stand-in for einops knows one pattern, not '{pattern}': pip install einops")
    b, c, h, x, w, y = tensor.shape  # (B, 3, 8, 8, 8, 8): patch row, pixel row, patch column, pixel column
    return tensor.reshape(b, c, h * x, w * y)


def load_reference(path):
    """The post author's model class from its published file (cat_diffusion7.py), as written. The file
    imports CUDA-only and third-party modules at the top and trains at module level, so it is not
    run: only its class and function definitions and constant assignments are, with torch, nn, F,
    math and rearrange at hand. Returns the namespace; its Diffusion() builds the model."""
    try:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path} as Python ({type(e).__name__}); it is tests/torch/cat_diffusion7.py "
                         "of github.com/aschrein/pyd3d12") from None
    constant = lambda node: isinstance(node, ast.Assign) and not any(
        isinstance(n, (ast.Name, ast.Call, ast.Attribute, ast.Subscript)) for n in ast.walk(node.value))
    tree.body = [node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef)) or constant(node)]
    try:
        from einops import rearrange as einops_rearrange
    except ImportError:
        einops_rearrange = rearrange
    namespace = {"torch": torch, "nn": nn, "F": F, "math": math, "rearrange": einops_rearrange}
    try:
        exec(compile(tree, str(path), "exec"), namespace)
    except Exception as e:  # whatever its definitions raise when run
        raise ValueError(f"running its definitions raised {type(e).__name__}: {first_line(e)}") from None
    if "Diffusion" not in namespace:
        raise ValueError(f"{path} defines no Diffusion class: is it cat_diffusion7.py?")
    return namespace


def first_line(error):
    """An exception's message, first line only, for a one-line error."""
    return (str(error).strip().splitlines() or [""])[0]


def counted_flops(model, *inputs):
    """Matmul FLOPs of model(*inputs) as PyTorch's FLOP counter sees them (a multiply-add counts 2);
    the math attention backend, since the counter misses fused attention kernels."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()


def reference_step(model, optimizer):
    """One step of the post's training loop as published (fp32), less its LPIPS term:
    x_t = x + (noise - x)(1 - t) with t (B, 1, 1, 1), the MSE of the prediction to x, backward, AdamW."""
    device = next(model.parameters()).device
    x = torch.rand(BATCH, 3, 64, 64, device=device) * 2 - 1
    t = torch.rand(BATCH, 1, 1, 1, device=device)
    x_hat = model(x + (torch.randn_like(x) - x) * (1 - t), t)
    loss = (x_hat - x).square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def bench_reference(args, device, dtypes):
    """The post's model, run as published (fp32), against this project's blog preset with the dynamic
    head (one_step: also clipping and the EMA) in each dtype, at batch BATCH, in the same run;
    prints as it goes."""
    try:
        namespace = load_reference(args.reference)
        reference = namespace["Diffusion"]().to(device)
    except ValueError as e:
        sys.exit(f"error: {args.reference}: {e}")
    except Exception as e:  # the file's own code may raise anything
        sys.exit(f"error: {args.reference}: its Diffusion() raised {type(e).__name__}: {first_line(e)}")
    torch.manual_seed(0)
    ours = LUTTransformer(make_config("blog", "dynamic")).to(device)
    x = torch.randn(1, 3, 64, 64, device=device)
    t = torch.rand(1, device=device)
    for name, model, flops in [("reference", reference, counted_flops(reference, x, t.view(1, 1, 1, 1))),
                               ("blog dynamic", ours, counted_flops(ours, x, t))]:
        print(f"{name:>12}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
              f"{flops / 1e9:.2f} GFLOP per image forward", flush=True)
    ema = copy.deepcopy(ours).requires_grad_(False)
    settings = defaults("blog", "dynamic")
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=3e-4, weight_decay=settings["weight_decay"],
                                            fused=device.type in ("cuda", "cpu"))  # as its file trains it
    our_optimizer = make_optimizer(ours, settings["lr"], settings["weight_decay"], device)

    def img_per_s(name, step):
        for _ in range(args.warmup):
            step()
        seconds = statistics.median(timed(step, args.steps, device))
        print(f"batch {BATCH}: {name} {seconds:.2f} s per step, {BATCH / seconds:.2f} img/s", flush=True)
        return BATCH / seconds

    run_ours = torch.compile(ours) if args.compile else ours
    reference_speed = img_per_s("reference, fp32 as published", lambda: reference_step(reference, reference_optimizer))
    for dtype in dtypes:
        autocast = autocast_for(device, dtype)
        speed = img_per_s(f"blog dynamic, {dtype}{' + compile' if args.compile else ''}",
                          lambda: one_step(run_ours, ema, our_optimizer, autocast, settings))
        print(f"{dtype}: blog dynamic runs {speed / reference_speed:.2f}x the reference's img/s", flush=True)


def main():
    parser = argparse.ArgumentParser(description="Benchmark training and sampling speed of the LUT transformer.",
                                     usage=argparse.SUPPRESS)  # a bad flag: one line of error, no usage block
    parser.add_argument("--preset", choices=list(PRESETS), help="model size (default: blog on CUDA, else tiny)")
    parser.add_argument("--lut", choices=list(HEADS), help="one head (default: all three)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="autocast dtype (default: as train.py, bf16 "
                        "where the device runs it natively)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model, as train.py does for a --minutes budget of 10 or more "
                        "on x86 CPUs and CUDA")
    parser.add_argument("--steps", type=number(int, 1), default=3,
                        help="timed training steps, the median reported (default: %(default)s)")
    parser.add_argument("--warmup", type=number(int, 0), default=1,
                        help="untimed training steps first (default: %(default)s)")
    parser.add_argument("--sample-steps", type=number(int, 1),
                        help=f"sampling steps timed, scaled up to the sampler's {SAMPLE_STEPS} "
                        "(default: all on CUDA, else 4)")
    parser.add_argument("--device", type=available_device, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--threads", type=number(int, 1), help="CPU threads (default: torch's); on a busy machine 1 is "
                        "often faster, since threads that wait for each other wait for the other jobs too")
    parser.add_argument("--json", type=output_file, help="also write the figures to this JSON file")
    parser.add_argument("--reference", help="the post's cat_diffusion7.py: time its model against the blog preset "
                        "with the dynamic head instead (fp32, and bf16 where native, or --dtype)")
    args = parser.parse_args()
    device = torch.device(args.device or best_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = args.preset or ("blog" if device.type == "cuda" else "tiny")  # as train.py
    native = ["fp32", "bf16"] if fast_dtype(device) == "bf16" else ["fp32"]
    if args.dtype and args.dtype not in native:
        sys.exit(f"error: {args.dtype} is emulated on this {device.type}, far slower than fp32: use --dtype fp32")
    args.sample_steps = args.sample_steps or (SAMPLE_STEPS if device.type == "cuda" else 4)
    problem = compile_problem(device) if args.compile else None
    if problem:
        sys.exit(f"error: --compile: {problem}; drop --compile")

    if args.reference:
        bench_reference(args, device, [args.dtype] if args.dtype else native)
        return
    args.dtype = args.dtype or native[-1]  # as train.py: bf16 where native; --dtype fp32 times fp32 alone

    print(f"{device.type}, {torch.get_num_threads()} threads, 2048^2 matmul peak:", flush=True)
    peaks = {}
    for dtype, torch_dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:
        if dtype not in native:  # an emulated bf16 matmul runs at a few GFLOP/s: timing it took minutes
            print(f"{dtype}: emulated on this {'CPU' if device.type == 'cpu' else device.type}, not timed", flush=True)
        elif dtype == "fp32" or args.dtype == "bf16":  # the fp32 peak always: every row is compared with it
            peaks[dtype] = matmul_peak(torch_dtype, device)
            print(f"{dtype}: {peaks[dtype] / 1e12:.3f} TFLOP/s", flush=True)
    print(f"preset {args.preset}, batch {BATCH}, {args.dtype}{' + compile' if args.compile else ''}")
    print("".join(f"{header:>12}" for _, header, _ in COLUMNS), flush=True)
    rows = []
    for name in [args.lut] if args.lut else list(HEADS):
        rows.append(bench_head(name, args, device, peaks))
        print("".join(f"{'-':>12}" if rows[-1][key] is None else f"{rows[-1][key]:>12{form}}"
                      for key, _, form in COLUMNS), flush=True)
    if device.type == "cpu":
        print("memory: peak RSS of the whole process so far, so it only grows down the table")
    if args.json:
        figures = {"device": device.type, "threads": torch.get_num_threads(), "preset": args.preset, "dtype": args.dtype,
                   "compile": args.compile, "batch": BATCH, "peak_tflop_per_s": {k: v / 1e12 for k, v in peaks.items()},
                   "rows": rows}
        try:
            save_atomically(figures, args.json, write=lambda figures, file: file.write(json.dumps(figures, indent=2)
                                                                                         .encode()))
        except OSError as e:  # a full disk, say: the figures above are printed all the same
            sys.exit(f"error: cannot write {args.json}: {e.strerror or e}")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    stop_quietly("interrupted")
    main()
