"""Benchmark the LUT transformer: training-step speed, FLOP/s against this device's own matmul
peak, sampling time and peak memory, for each LUT head.

    python bench.py                                   # tiny on CPU (blog on CUDA), all three heads
    python bench.py --preset blog --lut dynamic --dtype bf16 --compile --steps 3
    python bench.py --threads 1 --json bench.json     # on a busy machine; figures also as JSON

Absolute timings drift on a shared machine, so the peak FLOP/s of a big square matmul is measured
in the same run, in fp32 and bf16, and the training step is reported as a fraction of it.
The sampling time is for 64 images x 64 Euler steps; every step is one identical forward pass, so
on CPU it is timed over --sample-steps steps and scaled to 64. On a CPU with bf16 instructions
(AVX512-BF16, AMX), --dtype bf16 --compile is the fastest path: docs/results.md has figures.
"""
import argparse
import copy
import json
import resource
import statistics
import time

import torch

from data import number, output_file
from model import (HEADS, PRESETS, LUTTransformer, autocast_for, best_device, default_preset, defaults, denoising_loss,
                   fast_dtype, make_config, sample)

BATCH = 64  # images per training step for every preset, so that figures compare (blog trains at 64)
COLUMNS = [("lut", "LUT head", ""), ("step_ms", "step ms", ".0f"), ("img_per_s", "img/s", ".1f"),
           ("train_gflop_per_img", "GFLOP/img", ".2f"), ("tflop_per_s", "TFLOP/s", ".3f"),
           ("vs_fp32_peak", "x fp32 peak", ".2f"), ("vs_bf16_peak", "x bf16 peak", ".2f"),
           ("sample_s", "sample s", ".1f"), ("memory_gb", "memory GB", ".2f")]


def flops_per_image(model):
    """Matmul FLOPs of one forward pass for one image; a multiply-add counts 2. With P = 64 patch
    tokens, S static tokens, T = P + S, width d and K LUT entries:

        patch embed    2 P (3*8*8) d             8x8x3 pixels -> d, per patch
        time MLP       2 (256 d + d d)           once per image
        per block      2 T d 3d                  fused q, k, v projection
                       2 T T d                   scores q k^T (all heads together)
                       2 T T d                   attention-weighted sum of v
                       2 T d d                   output projection
                       2 T d 2d                  gated MLP: gate and up (d -> 2d)
        score head     2 P d K
        dynamic head   2 S d (K/S) 48            static states -> u, v: 3 colours x (8 + 8) per entry
        LUT mix        2 P K 192                 weights (P, K) @ entries (K, 3*8*8)

    Norms, softmax, SiLU and the dynamic head's outer products u v^T are elementwise: they cost
    memory traffic, not matmul FLOPs. Training costs about 3x the forward pass: the backward pass
    computes one matmul for the input's gradient and one for the weights'."""
    cfg = model.cfg
    P, S, d, K = model.num_patches, cfg.static_tokens, cfg.width, cfg.dict_size
    T = P + S
    block = 2 * T * d * 3 * d + 2 * 2 * T * T * d + 2 * T * d * d + 2 * T * d * 2 * d
    head = 2 * d * K * 48 if cfg.lut == "dynamic" else 0  # S tokens x K/S entries each
    return (2 * P * 192 * d + 2 * (256 * d + d * d) + cfg.depth * block
            + 2 * P * d * K + head + 2 * P * K * 192)


def timed(fn, repeats, device):
    """Seconds of each of `repeats` calls of fn, as a list."""
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak(dtype, device, n=2048):
    """FLOP/s of an n x n matmul, the best of 10: the most that a training step's matmuls can reach.
    (Other jobs on the machine only ever slow a run down, so the fastest one is the peak.)"""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b  # warm-up: thread pools, kernel selection
    return 2 * n ** 3 / min(timed(lambda: a @ b, 10, device))


def train_step(model, ema, optimizer, autocast, gram):
    """One step as train.py takes it (t, noise, loss, Gram penalty, clip, AdamW, EMA), on a batch
    of random pixels: the speed does not depend on what the pictures show."""
    device = model.pos.device
    x = torch.rand(BATCH, 3, 64, 64, device=device) * 2 - 1  # (B, 3, 64, 64) in [-1, 1]
    t = torch.rand(BATCH, device=device)
    loss, _ = denoising_loss(model, x, t, torch.randn_like(x), autocast, gram=gram)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - 0.999)
    return loss.item()


def bench_head(lut_name, args, device, peaks):
    torch.manual_seed(0)
    settings = defaults(args.preset, lut_name)  # as train.py trains it, but at batch BATCH
    model = LUTTransformer(make_config(args.preset, lut_name)).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=1e-2, betas=(0.9, 0.95),
                                  fused=device.type in ("cuda", "cpu"))
    run_model = torch.compile(model) if args.compile else model
    autocast = autocast_for(device, args.dtype)

    step = lambda: train_step(run_model, ema, optimizer, autocast, settings["gram"])
    for _ in range(args.warmup):  # compilation, allocator and oneDNN caches warm up here
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = statistics.median(timed(step, args.steps, device))  # the median shrugs off one slow step

    noise = torch.randn(BATCH, 3, 64, 64, device=device)
    with autocast:
        sample(run_model, noise, 1, "logit-normal")  # warm-up: under no_grad, a compiled model compiles anew
        seconds = timed(lambda: sample(run_model, noise, args.sample_steps, "logit-normal"), 1, device)[0]
    sample_s = seconds * 64 / args.sample_steps

    train_flops = 3 * flops_per_image(model)  # forward + backward, per image
    flops = train_flops * BATCH / step_s
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"  # ru_maxrss is in KiB on Linux
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"lut": lut_name, "step_ms": 1e3 * step_s, "img_per_s": BATCH / step_s,
            "train_gflop_per_img": train_flops / 1e9, "tflop_per_s": flops / 1e12,
            "vs_fp32_peak": flops / peaks["fp32"], "vs_bf16_peak": flops / peaks["bf16"],
            "sample_s": sample_s, "memory_gb": memory / 1e9}


def main():
    parser = argparse.ArgumentParser(description="Benchmark training and sampling speed of the LUT transformer.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), help="model size (default: blog on CUDA, else tiny)")
    parser.add_argument("--lut", choices=list(HEADS), help="one head (default: all three)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="autocast dtype (default: as train.py, bf16 "
                        "where the device runs it natively)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, as train.py --compile")
    parser.add_argument("--steps", type=number(int, 1), default=5, help="timed training steps (the median is reported)")
    parser.add_argument("--warmup", type=number(int, 0), default=2, help="untimed training steps first")
    parser.add_argument("--sample-steps", type=number(int, 1),
                        help="Euler steps timed, scaled to 64 (default: 64 on CUDA, else 4)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--threads", type=number(int, 1), help="CPU threads (default: torch's); on a busy machine 1 is "
                        "often faster, since threads that wait for each other wait for the other jobs too")
    parser.add_argument("--json", type=output_file, help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device or best_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = args.preset or default_preset(device)
    args.dtype = args.dtype or fast_dtype(device)
    args.sample_steps = args.sample_steps or (64 if device.type == "cuda" else 4)

    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    print(f"{device.type}, {torch.get_num_threads()} threads: 2048^2 matmul peak "
          f"{peaks['fp32'] / 1e12:.3f} TFLOP/s fp32, {peaks['bf16'] / 1e12:.3f} TFLOP/s bf16")
    print(f"preset {args.preset}, batch {BATCH}, {args.dtype}{' + compile' if args.compile else ''}")
    heads = [args.lut] if args.lut else list(HEADS)
    rows = [bench_head(name, args, device, peaks) for name in heads]

    print("".join(f"{header:>12}" for _, header, _ in COLUMNS))
    for row in rows:
        print("".join(f"{row[key]:>12{form}}" for key, _, form in COLUMNS))
    if device.type == "cpu":
        print("memory: peak RSS of the whole process so far, so it only grows down the table")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.type, "threads": torch.get_num_threads(), "preset": args.preset,
                       "dtype": args.dtype, "compile": args.compile, "batch": BATCH,
                       "peak_tflop_per_s": {k: v / 1e12 for k, v in peaks.items()}, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
