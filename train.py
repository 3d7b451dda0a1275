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
last step, or the end of a --minutes budget, which it reaches by the clock (budget.py). A third of the
way in, a copy of the EMA weights becomes the guide, the weaker model that sampling steers away from
(autoguidance, model.sample).

Written to --out (default out/): ckpt.pt every --save-every steps and at the end (checkpoint.py); log.csv,
a row per log line; every --sample-every steps a grid of samples (EMA weights, fixed noise, unguided), a
frame of progress.gif, loss.png, lut.png, gram.png and a row of lut.csv (logbook.py). Keeping the run safe
(Ctrl-C, full disks, a lock, torchrun) is safety.py's.
"""
import time

START = time.time()  # a --minutes budget counts from here: importing torch takes seconds
import cli  # before torch: a Ctrl-C while it loads ends in one line

cli.stop_quietly("interrupted before the first step: nothing to save")

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

import logbook
import machine
import safety
from budget import Budget
from checkpoint import checkpoint, restore, resume
from data import get_batch, load_images
from model import (DEFAULT_HEAD, HEADS, PRESETS, TRAINING, LUTTransformer, defaults, draw_t, make_config,
                   make_optimizer, train_step)

DEFAULT_MINUTES = 30  # on a CPU (or MPS) a run is a time budget; on CUDA the preset's steps, as the post
GUIDE_AT = 1 / 3  # how far into the run the EMA weights are copied as the guide that sampling steers by

# ----------------------------------------------------------------------------- settings
parser = argparse.ArgumentParser(description="Train a LUT patch transformer on 64x64 cat faces.",
                                 usage=argparse.SUPPRESS)  # a bad flag: one line of error, no usage block
arg = parser.add_argument
arg("--lut", default=DEFAULT_HEAD, choices=list(HEADS), help="LUT head (default: %(default)s)")
arg("--data", type=cli.training_folder, help="folder of cat images (default: the built-in toy cats)")
arg("--out", default="out", type=cli.output_folder, help="folder for the checkpoint and pictures (default: %(default)s)")
arg("--preset", choices=list(PRESETS), help="model size (default: blog on CUDA, tiny elsewhere)")
arg("--width", type=cli.number(int, 1), help="override the preset's width")
arg("--depth", type=cli.number(int, 1), help="override the preset's number of blocks")
arg("--heads", type=cli.number(int, 1), help="override the preset's number of attention heads")
arg("--dict-size", type=cli.number(int, 2), help="LUT entries K (default: the head's)")
arg("--static-tokens", type=cli.number(int, 0), help="learned extra tokens (default: the head's)")
arg("--gram", type=cli.number(float, 0), help="Gram penalty weight (default: the head's)")
arg("--steps", type=cli.number(int, 1), help="training steps (default on CUDA: the preset's)")
arg("--minutes", type=cli.number(float, 0, low_allowed=False),
    help=f"train for this many minutes, everything included (default on a CPU or MPS: {DEFAULT_MINUTES})")
arg("--batch-size", type=cli.number(int, 1), help="images per step, over all processes (default: the preset's)")
arg("--lr", type=cli.number(float, 0, low_allowed=False), help="AdamW learning rate (default: the preset's)")
arg("--warmup", type=cli.number(int, 0), default=200, help="linear learning-rate warm-up steps (default: %(default)s)")
arg("--min-lr", type=cli.number(float, 0, 1), default=0.1,
    help="the cosine ends at this fraction of --lr (default: %(default)s; 1 with --warmup 0: constant, as the post)")
arg("--weight-decay", type=cli.number(float, 0), help=f"AdamW weight decay (default: {TRAINING['weight_decay']})")
arg("--grad-clip", type=cli.number(float, 0, low_allowed=False),
    help=f"max gradient norm (default: {TRAINING['grad_clip']})")
arg("--ema", type=cli.number(float, 0, 1),
    help=f"EMA decay of the sampling weights, at most (1 + n)/(10 + n) at step n (default: {TRAINING['ema']})")
arg("--t-sampling", default="logit-normal", choices=["uniform", "logit-normal"],
    help="t drawn as sigmoid(N(-0.8, 0.8)) as in JiT (5%% uniform in [0, 0.1]), or uniformly as in the post "
    "(default: %(default)s)")
arg("--loss", default="v", choices=["x", "v"],
    help="v: the image error weighted 1/(1-t)^2, the velocity's error (JiT); x: the post's plain MSE (default: v)")
arg("--edges", type=cli.number(float, 0), default=1.0,
    help="weight of the error of neighbouring pixels' differences in the loss (default: %(default)s; 0: as the post)")
arg("--log-every", type=cli.number(int, 1), default=10, help="steps between log lines (default: %(default)s)")
arg("--sample-every", type=cli.number(int, 1), default=500, help="steps between pictures (default: %(default)s)")
arg("--save-every", type=cli.number(int, 1), default=500, help="steps between checkpoints (default: %(default)s)")
arg("--seed", type=cli.number(int, 0, 2**32 - 1), default=0, help="seed of weights, batches and noise (default: 0)")
arg("--device", type=cli.available_device, help="cuda, mps or cpu (default: the best available)")
arg("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default: bf16 where the device runs it natively)")
arg("--compile", action=argparse.BooleanOptionalAction,
    help=f"torch.compile the model (default: on CUDA and x86 CPUs, for a run of {machine.COMPILE_MINUTES} minutes "
    f"or {machine.COMPILE_STEPS} steps or more)")
arg("--resume", action="store_true", help="continue --out/ckpt.pt; only the run's length, the intervals, "
    "--device, --dtype and --compile may change")
safety.say_once(parser)
args = parser.parse_args()
if args.steps and args.minutes:
    safety.fail("give --steps or --minutes, not both")

# ----------------------------------------------------------------------------- setup
sys.excepthook = safety.out_of_memory  # out of memory: one line naming the flags to lower
saved = None
if args.resume:
    try:
        saved, args = resume(parser, args, safety.world)
    except ValueError as e:
        safety.fail(e)
out = Path(args.out)
safety.claim(out, args.resume, args.data)
device = safety.start(torch.device(args.device or machine.best_device()))
log = (lambda *a: print(*a, flush=True)) if safety.master else (lambda *a: None)

if args.preset is None:
    args.preset = "blog" if device.type == "cuda" else "tiny"
    log(f"preset: {args.preset} on {device.type} (choose with --preset {'|'.join(PRESETS)})")
if not (args.steps or args.minutes):
    args.minutes = None if device.type == "cuda" else DEFAULT_MINUTES
for key, value in defaults(args.preset, args.lut).items():  # what the command line leaves open
    if getattr(args, key) is None and not (key == "steps" and args.minutes):
        setattr(args, key, value)
if args.lr * args.weight_decay >= 1:  # AdamW scales every weight by 1 - lr x weight decay at each step
    safety.fail(f"--weight-decay {args.weight_decay:g} with --lr {args.lr:g} would scale the weights by "
                f"{1 - args.lr * args.weight_decay:g} at every step: give a --weight-decay below {1 / args.lr:g}")
if args.batch_size % safety.world:
    safety.fail(f"--batch-size {args.batch_size} must be divisible by the {safety.world} processes")
try:
    args.dtype, args.compile, no_compile = machine.choose(device, args.dtype, args.compile, args.minutes, args.steps,
                                                          saved and saved["args"])
    cfg = saved["config"] if saved else make_config(args.preset, args.lut, width=args.width, depth=args.depth,
                                                    heads=args.heads, dict_size=args.dict_size,
                                                    static_tokens=args.static_tokens)
    images = load_images(args.data, seed=args.seed)  # (N, 3, 64, 64) uint8 on the CPU
except ValueError as e:
    safety.fail(e)
if no_compile:
    log(f"compile: off, as {no_compile}")
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
generator = torch.Generator().manual_seed(args.seed + safety.rank)
step, seconds_before = 0, 0.0  # the minutes of the runs this one resumes count against its budget
if saved:
    try:
        guide = restore(saved, model, ema, optimizer, generator, safety.rank)
    except ValueError as e:
        safety.fail(f"{out / 'ckpt.pt'}: {e}")
    step, seconds_before = saved["step"], saved["seconds"]
    log(f"resuming from step {step}")
train_model = torch.compile(model) if args.compile else model
if safety.ddp:
    train_model = DistributedDataParallel(train_model)
autocast = machine.autocast_for(device, args.dtype)
fixed_noise = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1234)).to(device)
real_batch = images[:64].float() / 127.5 - 1  # the pictures' detail figure compares the samples with these
budget = Budget(args.steps, args.minutes, args.warmup, START, seconds_before)


def learning_rate(step):
    """nanoGPT's get_lr: a linear warm-up over --warmup steps, then a cosine from --lr down to --min-lr x --lr
    as the run's progress (budget.py: by its steps, or by the clock) goes from 0 to 1."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (args.min_lr + (1 - args.min_lr) * 0.5 * (1 + math.cos(math.pi * budget.progress(step))))


def log_line(step, loss, by_t, img_s):
    """The log line, and its row of log.csv."""
    lr, minutes = optimizer.param_groups[0]["lr"], budget.clock() / 60
    left = f"{minutes:.1f}/{args.minutes:g} min" if args.minutes else \
        f"{minutes:.1f} min, eta {(args.steps - step) * args.batch_size / img_s / 60:.1f} min"
    log(f"step {step}{'' if args.minutes else f'/{args.steps}'} | loss {loss:.4f} | by t "
        + " ".join("-" if math.isnan(v) else f"{v:.3f}" for v in by_t) + f" | lr {lr:.2e} | {img_s:.0f} img/s | {left}")
    safety.write(out, step, lambda: logbook.append_row(out / "log.csv", [step, loss, *by_t, lr, img_s, minutes]))


def save():
    safety.save(out / "ckpt.pt", step, model, generator, lambda generators: checkpoint(
        model, ema, guide, optimizer, generators, step, budget.clock(), vars(args)))


safety.on_interrupt(args.out, step if saved else None)  # from here Ctrl-C saves and stops at the next log line
safety.write(out, step, lambda: logbook.keep_up_to(out, step))  # the record of an interrupted run, trimmed

# ----------------------------------------------------------------------------- training loop
log(f"training {args.lut} head for {f'{args.minutes:g} min' if args.minutes else f'{args.steps} steps'}, "
    f"batch {args.batch_size}, {args.dtype}{', compiled' if args.compile else ''}, on {device}")
local_batch = args.batch_size // safety.world
loss_sum = torch.zeros((), device=device)  # since the last log line
bin_sums = torch.zeros(2, logbook.BINS, device=device)  # (image MSE sum, count) per bin of t, since then
last_log = step
while True:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step)
    x = get_batch(images, local_batch, generator, device)  # (b, 3, 64, 64) in [-1, 1]
    t = draw_t(local_batch, args.t_sampling, generator).to(device)  # (b,), before the noise: a resume replays both
    noise = torch.randn(x.shape, generator=generator).to(device)  # (b, 3, 64, 64)
    ema_decay = min(args.ema, (1 + step) / (10 + step))  # early on, the EMA follows the model closely
    loss, per_image = train_step(train_model, ema, optimizer, x, t, noise, autocast, args.grad_clip, ema_decay,
                                 args.loss, args.edges, args.gram)
    step += 1
    if guide is None and budget.progress(step) >= GUIDE_AT:
        guide = copy.deepcopy(ema)

    loss_sum += loss
    bins = (t * logbook.BINS).long().clamp(max=logbook.BINS - 1)  # (b,): which quarter of t each image was in
    bin_sums[0].index_add_(0, bins, per_image)
    bin_sums[1].index_add_(0, bins, torch.ones_like(per_image))
    last, stopping = step == args.steps, False
    if step % args.log_every == 0 or last:
        # One sum over the ranks: the losses, a Ctrl-C on any rank, and where rank 0's clock says the run would end
        seconds, end = budget.lap()
        stats = safety.sum_over_ranks(torch.cat([loss_sum.view(1), bin_sums.flatten(), torch.tensor(
            [safety.interrupted, safety.master * end], device=device)]))
        mean_loss = stats[0].item() / ((step - last_log) * safety.world)
        if not math.isfinite(mean_loss):  # the same on every rank
            safety.stop_if(f"loss is {mean_loss} at step {step}; stopped, and {safety.kept(out)}. Try a lower --lr, "
                           f"or --dtype fp32" + (", or --no-compile" if args.compile else ""))
        if budget.over(stats[-1].item()):  # the checkpoint keeps the run's length in steps, so that a resume
            args.steps, last = step, True  # finds nothing left to train
        log_line(step, mean_loss, (stats[1:1 + logbook.BINS] / stats[1 + logbook.BINS:-2]).tolist(),
                 args.batch_size * (step - last_log) / seconds)  # a bin of t that drew no image: nan
        stopping = stats[-2].item() > 0 and not last  # in the last interval the run just ends
        loss_sum.zero_()
        bin_sums.zero_()
        last_log = step
    if stopping:
        log(f"interrupted: saving and stopping; continue with: {safety.resume_command}")
    if step % args.sample_every == 0 or last or stopping:  # before stopping: a resume starts after this step
        with budget.timed("picture"):
            safety.write(out, step, lambda: logbook.pictures(out, step, ema, fixed_noise, autocast, args.t_sampling,
                                                             real_batch))
    if step % args.save_every == 0 or last or stopping:
        with budget.timed("checkpoint"):
            save()
    if stopping:
        safety.leave(130)
    if last:
        break
safety.leave(0)
