"""Train the LUT patch transformer to turn noise into cat faces.

Usage:
    python train.py --lut dynamic                  # built-in toy cats; CUDA, MPS or CPU
    python train.py --lut tanh --data data/cats    # any folder of cat pictures
    python train.py --minutes 60                   # a time budget (default on a CPU: 30 minutes)
    python train.py --resume                       # continue out/ckpt.pt exactly where it stopped
    torchrun --standalone --nproc_per_node=4 train.py ...  # several GPUs (or CPU processes), DDP

One training step: draw t in [0, 1] (JiT's logit-normal, leaning towards the noise), make
x_t = t x + (1 - t) noise, predict x, take the loss (JiT's: the error of the implied velocity, and
of its differences between neighbouring pixels) plus the Gram penalty, clip gradients, step AdamW,
update the EMA weights. The learning rate warms up, then follows a cosine to the end of the run: its
last step, or the end of a --minutes budget, which the run reaches by the clock (pictures and
checkpoints included) rather than by a step count. A third of the way in, a copy of the EMA weights
becomes the guide, the weaker model that sampling steers away from (autoguidance, model.sample).

Written to --out (default out/): ckpt.pt every --save-every steps and at the end; log.csv, a row per
log line; every --sample-every steps samples_000500.png (EMA weights, fixed noise, unguided: 35 network
calls, where sample.py's guided sampling takes 53), a frame of progress.gif, loss.png, lut.png, gram.png
and a row of lut.csv (logbook.py). Keeping the run safe (resume, Ctrl-C, full disks, a lock, torchrun) is safety.py's.
"""
import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

START = time.time()  # a --minutes budget counts from here: importing torch takes seconds

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import safety
from data import get_batch, load_images, number, output_folder, training_folder
from logbook import BINS, append_row, keep_up_to, record_pictures
from machine import autocast_for, available_device, best_device, compile_problem, compile_tested, fast_dtype
from model import (DEFAULT_HEAD, HEADS, PRESETS, SAMPLE_STEPS, LUTTransformer, defaults, denoising_loss, draw_t,
                   make_config, make_optimizer, sample)
from safety import checkpoint, fail, load_weights, master, rank, stop_if, world, written

DEFAULT_MINUTES = 30  # on a CPU (or MPS) a run is a time budget; on CUDA the preset's steps, as the post
COMPILE_MINUTES = 10  # a budget this long is compiled by default: 20-25 s of compiling pays for itself
GUIDE_AT = 1 / 3  # how far into the run the EMA weights are copied as the guide that sampling steers by

# ----------------------------------------------------------------------------- settings
parser = argparse.ArgumentParser(description="Train a LUT patch transformer on 64x64 cat faces.",
                                 usage=argparse.SUPPRESS)  # a bad flag: one line of error, no usage block
arg = parser.add_argument
arg("--lut", default=DEFAULT_HEAD, choices=list(HEADS), help="LUT head (default: %(default)s)")
arg("--data", type=training_folder, help="folder of cat images (default: the built-in toy cats)")
arg("--out", default="out", type=output_folder, help="folder for the checkpoint and pictures (default: %(default)s)")
arg("--preset", choices=list(PRESETS), help="model size (default: blog on CUDA, tiny elsewhere)")
arg("--width", type=number(int, 1), help="override the preset's width")
arg("--depth", type=number(int, 1), help="override the preset's number of blocks")
arg("--heads", type=number(int, 1), help="override the preset's number of attention heads")
arg("--dict-size", type=number(int, 2), help="LUT entries K (default: the head's)")
arg("--static-tokens", type=number(int, 0), help="learned extra tokens (default: the head's)")
arg("--gram", type=number(float, 0), help="Gram penalty weight (default: the head's)")
arg("--steps", type=number(int, 1), help="training steps (default on CUDA: the preset's)")
arg("--minutes", type=number(float, 0, low_allowed=False),
    help=f"train for this many minutes, everything included (default on a CPU or MPS: {DEFAULT_MINUTES})")
arg("--batch-size", type=number(int, 1), help="images per step, over all processes (default: the preset's)")
arg("--lr", type=number(float, 0, low_allowed=False), help="AdamW learning rate (default: the preset's)")
arg("--warmup", type=number(int, 0), default=200, help="linear learning-rate warm-up steps (default: %(default)s)")
arg("--min-lr", type=number(float, 0, 1), default=0.1,
    help="the cosine ends at this fraction of --lr (default: %(default)s; 1 with --warmup 0: constant, as the post)")
arg("--weight-decay", type=number(float, 0), default=1e-2, help="AdamW weight decay (default: %(default)s)")
arg("--grad-clip", type=number(float, 0, low_allowed=False), default=1.0, help="max gradient norm (default: 1.0)")
arg("--ema", type=number(float, 0, 1), default=0.999,
    help="EMA decay of the sampling weights, at most (1 + n)/(10 + n) at step n (default: %(default)s)")
arg("--t-sampling", default="logit-normal", choices=["uniform", "logit-normal"],
    help="t drawn as sigmoid(N(-0.8, 0.8)) as in JiT (5%% uniform in [0, 0.1]), or uniformly as in the post "
    "(default: %(default)s)")
arg("--loss", default="v", choices=["x", "v"],
    help="v: the image error weighted 1/(1-t)^2, the velocity's error (JiT); x: the post's plain MSE (default: v)")
arg("--edges", type=number(float, 0), default=1.0,
    help="weight of the error of neighbouring pixels' differences in the loss (default: %(default)s; 0: as the post)")
arg("--log-every", type=number(int, 1), default=10, help="steps between log lines (default: %(default)s)")
arg("--sample-every", type=number(int, 1), default=500, help="steps between pictures (default: %(default)s)")
arg("--save-every", type=number(int, 1), default=500, help="steps between checkpoints (default: %(default)s)")
arg("--seed", type=number(int, 0, 2**32 - 1), default=0, help="seed of weights, batches and noise (default: 0)")
arg("--device", type=available_device, help="cuda, mps or cpu (default: the best available)")
arg("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default: bf16 where the device runs it natively)")
arg("--compile", action=argparse.BooleanOptionalAction,
    help=f"torch.compile the model (default: for a budget of {COMPILE_MINUTES} minutes or more, on CUDA and x86 CPUs)")
arg("--resume", action="store_true", help="continue --out/ckpt.pt; only the run's length, the intervals, "
    "--device, --dtype and --compile may change")
safety.say_once(parser)
args = parser.parse_args()
if args.steps and args.minutes:
    fail("give --steps or --minutes, not both")

# ----------------------------------------------------------------------------- setup
safety.on_signals(safety.before_training)
sys.excepthook = safety.out_of_memory  # out of memory: one line naming the flags to lower
saved = None
if args.resume:
    saved, args = safety.resume(parser, args)
out = Path(args.out)
ckpt_path = out / "ckpt.pt"
safety.claim(out, args.resume, args.data)
device = torch.device(args.device or best_device())
if safety.ddp:
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
log = (lambda *a: print(*a, flush=True)) if master else (lambda *a: None)

if args.preset is None:
    args.preset = "blog" if device.type == "cuda" else "tiny"
    log(f"preset: {args.preset} on {device.type} (choose with --preset {'|'.join(PRESETS)})")
if not (args.steps or args.minutes):
    args.minutes = None if device.type == "cuda" else DEFAULT_MINUTES
for key, value in defaults(args.preset, args.lut).items():  # what the command line leaves open
    if getattr(args, key) is None and not (key == "steps" and args.minutes):
        setattr(args, key, value)
# A resume keeps its dtype and compiling, unless this device would emulate the run's bf16
args.dtype = args.dtype or ("fp32" if fast_dtype(device) == "fp32" else saved["args"]["dtype"] if saved
                            else fast_dtype(device))
asked = args.compile  # --compile, --no-compile or None
if asked is None:
    args.compile = saved["args"]["compile"] if saved else (args.minutes or 0) >= COMPILE_MINUTES and \
        compile_tested(device)
problem = compile_problem(device) if args.compile else None
if problem and asked:
    fail(f"--compile: {problem}; drop --compile")
elif problem:
    log(f"compile: off, as {problem}")
    args.compile = False
if args.batch_size % world:
    fail(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
try:
    cfg = saved["config"] if saved else make_config(args.preset, args.lut, width=args.width, depth=args.depth,
                                                    heads=args.heads, dict_size=args.dict_size,
                                                    static_tokens=args.static_tokens)
    images = load_images(args.data, seed=args.seed)  # (N, 3, 64, 64) uint8 on the CPU
except ValueError as e:
    fail(e)
log(f"data: {len(images)} images from {args.data or 'the built-in toy cats'}")
if len(images) < 64:
    log(f"warning: only {len(images)} images in {args.data}; the model will memorise them")

torch.manual_seed(args.seed)  # the same initial weights on every rank
model = LUTTransformer(cfg).to(device)
log(f"model: {args.preset} preset, {args.lut} head, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
ema = copy.deepcopy(model).requires_grad_(False)
guide = None  # the EMA weights at GUIDE_AT of the run: a weaker model for autoguidance (model.sample)
optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
# One generator draws everything random in training (batches, flips, t, noise): its state in the
# checkpoint makes a resumed run exact. Each rank gets its own stream.
generator = torch.Generator().manual_seed(args.seed + rank)
step, seconds_before = 0, 0.0  # the minutes of the runs this one resumes count against its budget
if saved:
    try:
        load_weights(model, saved["model"])
        load_weights(ema, saved["ema"])
        if saved.get("guide") is not None:
            guide = copy.deepcopy(ema)
            load_weights(guide, saved["guide"])
        optimizer.load_state_dict(saved["optimizer"])
    except ValueError as e:
        fail(f"{ckpt_path}: {e}")
    generator.set_state(saved["generators"][rank])
    step, seconds_before, safety.saved_step = saved["step"], saved["seconds"], saved["step"]
    log(f"resuming from step {step}")
train_model = torch.compile(model) if args.compile else model
if safety.ddp:
    train_model = DistributedDataParallel(train_model)
autocast = autocast_for(device, args.dtype)
fixed_noise = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1234)).to(device)
real_batch = images[:64].float() / 127.5 - 1  # the pictures' detail figure compares the samples with these


def run_seconds():
    """The seconds this run has taken, over every --resume: what a budget counts, and the log's minutes."""
    return seconds_before + time.time() - START


def learning_rate(step, done):
    """Linear warm-up over --warmup steps, then a cosine from --lr down to --min-lr x --lr, reached as
    `done`, how far the run is (by steps or by the clock), comes to 1 at its end (nanoGPT's get_lr)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (args.min_lr + (1 - args.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def pictures():
    """Samples from the EMA weights and fixed noise, recorded with what the LUT did as the last step painted them
    (by rank 0). Returns what went wrong, or None."""
    if not master:
        return None
    painted = {}  # the head's (weights (64, 64, K), LUT (K, 3, 8, 8) or (64, K, 3, 8, 8)) at the last call
    hook = ema.lut_head.register_forward_hook(lambda module, inputs, output: painted.update(last=output))
    with autocast:
        samples = sample(ema, fixed_noise, SAMPLE_STEPS, args.t_sampling).clamp(-1, 1)
    hook.remove()
    return written(lambda: record_pictures(out, step, samples, *painted["last"], real_batch), out, step)


def save():
    return safety.save(ckpt_path, step, model, generator, lambda generators: checkpoint(
        model, ema, guide, optimizer, generators, step, run_seconds(), vars(args)))


def timed(kind, work):
    """work(), stopping every rank if it went wrong; its seconds are what the last step's `kind` will cost,
    and they are left out of the steps' img/s."""
    global t_log
    start = time.time()
    stop_if(work())
    costs[kind] = time.time() - start
    t_log += costs[kind]



def log_line():
    """Every --log-every steps: one sync of every rank (the loss and its t bins, Ctrl-C, rank 0's clock), the
    log line and its row of log.csv. A budget run ends at the first line where its clock leaves it just time
    to finish. Returns whether Ctrl-C stops the run here."""
    global clock, margin, last, last_log, t_log
    ahead = 2 * (time.time() - t_log + sum(costs.values())) + costs["picture"]  # the margin (see the loop)
    figures = [safety.interrupted, master * run_seconds(), master * ahead]
    stats = torch.cat([loss_sum.view(1), bin_sums.flatten(), torch.tensor(figures, device=device)])
    if safety.ddp:
        dist.all_reduce(stats)
    mean_loss = stats[0].item() / ((step - last_log) * world)
    if not math.isfinite(mean_loss):  # the same on every rank, after the all-reduce
        stop_if(f"loss is {mean_loss} at step {step}; stopped, and {safety.kept(out)}. Try a lower --lr, "
                f"or --dtype fp32" + (", or --no-compile" if args.compile else ""))
    per_bin = stats[1:1 + BINS] / stats[1 + BINS:1 + 2 * BINS]  # nan for a t bin that drew no image
    clock, margin = stats[-2:].tolist()
    if budget and clock + margin >= budget:  # the end; the checkpoint keeps the run's length in steps,
        args.steps, last = step, True  # so that a resume finds nothing left to train
    img_s = args.batch_size * (step - last_log) / (time.time() - t_log)
    lr = optimizer.param_groups[0]["lr"]
    left = f"{clock / 60:.1f}/{args.minutes:g} min" if budget else \
        f"{clock / 60:.1f} min, eta {(args.steps - step) * args.batch_size / img_s / 60:.1f} min"
    log(f"step {step}{'' if budget else f'/{args.steps}'} | loss {mean_loss:.4f} | by t "
        + " ".join("-" if math.isnan(v) else f"{v:.3f}" for v in per_bin.tolist())
        + f" | lr {lr:.2e} | {img_s:.0f} img/s | {left}")
    row = [step, mean_loss, *per_bin.tolist(), lr, img_s, clock / 60]
    stop_if(written(lambda: append_row(out / "log.csv", row), out, step) if master else None)
    loss_sum.zero_()
    bin_sums.zero_()
    last_log, t_log = step, time.time()
    stopping = stats[-3].item() > 0 and not last  # in the last interval the run just ends
    if stopping:
        log(f"interrupted: saving and stopping; continue with: {safety.resume_command}")
    return stopping


safety.resume_command = (f"{safety.TORCHRUN}={world}" if safety.ddp else "python") + " train.py --resume" + (
    f" --out {args.out}" if args.out != "out" else "")
safety.on_signals(safety.on_interrupt)
stop_if(written(lambda: keep_up_to(out, step), out, step) if master else None)

# ----------------------------------------------------------------------------- training loop
# A budget run goes by rank 0's clock, read at each log line, plus a margin: twice what a log interval, a picture
# and a checkpoint last cost (this step's and the final step's), and one picture more, as pictures grow dearer
# with the GIF and the loss plot, and a picture step can come just before the final one.
budget = 60 * args.minutes if args.minutes else None
costs = {"picture": 0.0, "checkpoint": 0.0}  # seconds, as last measured
clock, margin, done, last = run_seconds(), 0.0, 0.0, False
local_batch = args.batch_size // world
log(f"training {args.lut} head for {f'{args.minutes:g} min' if budget else f'{args.steps} steps'}, "
    f"batch {args.batch_size}, {args.dtype}{', compiled' if args.compile else ''}, on {device}")
bin_sums = torch.zeros(2, BINS, device=device)  # (image MSE sum, count) per t bin since the last log line
loss_sum, last_log, t_log = torch.zeros((), device=device), step, time.time()
while not last:
    # How far the run is, 0 to 1, for the learning rate (a budget's never goes back as its margin wobbles)
    done = max(done, (clock + margin) / budget) if budget else \
        (step - args.warmup) / max(1, args.steps - 1 - args.warmup)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, done)
    x = get_batch(images, local_batch, generator, device)  # (b, 3, 64, 64) in [-1, 1]
    t = draw_t(local_batch, args.t_sampling, generator).to(device)  # (b,), before the noise: a resume replays both
    noise = torch.randn(x.shape, generator=generator).to(device)  # (b, 3, 64, 64)
    loss, per_image = denoising_loss(train_model, x, t, noise, autocast, args.loss, args.edges, args.gram)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    decay = min(args.ema, (1 + step) / (10 + step))  # early on, the EMA follows the model closely
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
    step += 1
    last = step == args.steps
    if guide is None and (done if budget else step / args.steps) >= GUIDE_AT:  # done: the cosine's progress
        guide = copy.deepcopy(ema)

    loss_sum += loss.detach()
    bins = (t * BINS).long().clamp(max=BINS - 1)  # (b,): which quarter of t each image was in
    bin_sums[0].index_add_(0, bins, per_image.detach())
    bin_sums[1].index_add_(0, bins, torch.ones_like(per_image))
    stopping = (step % args.log_every == 0 or last) and log_line()  # Ctrl-C, SIGTERM: save and stop here
    if step % args.sample_every == 0 or last or stopping:  # before stopping: a resume starts after this step
        timed("picture", pictures)
    if step % args.save_every == 0 or last or stopping:
        timed("checkpoint", save)
    if stopping:
        safety.leave(130)
safety.leave(0)
