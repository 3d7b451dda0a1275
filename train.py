"""Train the LUT patch transformer to turn noise into cat faces.

Usage:
    python train.py --lut dynamic                  # built-in toy cats; CUDA, MPS or CPU
    python train.py --lut tanh --data data/cats    # any folder of cat pictures
    python train.py --minutes 60                   # a time budget (default on a CPU: 30 minutes)
    python train.py --resume                       # continue out/ckpt.pt exactly where it stopped
    torchrun --standalone --nproc_per_node=4 train.py ...  # several GPUs (or CPU processes), DDP

One training step: draw t in [0, 1] (JiT's logit-normal, leaning towards the noise; --t-sampling
uniform as the post), make x_t = t x + (1 - t) noise, predict x, take the loss (JiT's: the error of
the implied velocity; --loss x, the post's MSE to x) plus the Gram penalty, clip gradients, step
AdamW (learning rate: linear warm-up, then a cosine decay), update the EMA weights.
With --minutes, the run times a few steps first and sets the step count so that it ends, pictures and
checkpoints included, within the budget; at the end of the learning-rate warm-up it times again, over
the whole warm-up and fixes the count, which the checkpoint keeps; at each later checkpoint it times
again and moves the count if the machine's speed has changed (by more than 1%). A budget of 10 minutes
or more is torch.compiled on CUDA and on x86 CPUs: 20-25 s of compiling on a 2-core AVX512-BF16 CPU,
then steps 8-25% faster (4-13% with that CPU held to AVX2).
Written to --out (default out/): ckpt.pt (every --save-every steps, at the end and on Ctrl-C);
log.csv, one row per log line; and every --sample-every steps samples_000500.png, ... (EMA weights,
fixed noise), a frame more in progress.gif, loss.png redrawn, lut.png and gram.png (entries by usage, most
used first) and a row of lut.csv: entries in use (mean |weight| over the 64 samples' patches above
1% of the most used entry's), the effective number of entries, their mean |cos|, the samples' seam
ratio and, for the dynamic head, the mean cos between two images' LUTs. A resume appends to all of
them from the checkpoint's step, dropping what an interrupted run wrote after it. While a run trains,
it holds a lock on .lock in the folder, so that a second run cannot train into it too.
"""
import argparse
import contextlib
import copy
import errno
import functools
import math
import os
import signal
import sys
import time
from pathlib import Path

START = time.time()  # this process's start: a --minutes budget counts from here (importing torch takes seconds)

try:
    import fcntl  # the folder's lock, on Linux and macOS
except ImportError:  # Windows: no lock there, so nothing stops a second run in the same folder
    fcntl = None

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from data import get_batch, image_grid, load_images, number, output_folder, save_picture, training_folder
from logbook import BINS, append_row, captioned, keep_up_to, plot_losses, read_frames, save_frames
from lut import entry_usage, gram_image, lut_atlas, lut_figures
from model import (COMPILE_MINUTES, DEFAULT_HEAD, DEFAULT_MINUTES, HEADS, PRESET_HEAD, PRESETS, SAMPLE_STEPS,
                   LUTTransformer, autocast_for, available_device, best_device, compile_problem, default_preset,
                   defaults, denoising_loss, draw_t, fast_dtype, load_checkpoint, load_weights, make_config,
                   make_optimizer, network_calls, sample, save_checkpoint, steps_within,
                   synchronize)
from quality import seam_ratio

ddp = "RANK" in os.environ  # launched by torchrun
rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
master = rank == 0  # rank 0 alone logs, saves and says what went wrong
TORCHRUN = "torchrun --standalone --nproc_per_node"  # =N: how the messages say to start N processes


def fail(message):
    """Stop in one line. Under torchrun every rank meets the same problem here; rank 0 says it."""
    if master:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------- settings
# The defaults that depend on --preset and --lut come from model.py's table; --help lists it.
def listing(table):
    """A table of model.py as "name: key value, ...; name: ...", for --help."""
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()) for name, row in table.items())


parser = argparse.ArgumentParser(
    description="Train a LUT patch transformer on 64x64 cat faces.",
    usage=argparse.SUPPRESS,  # a bad flag: one line of error, no usage block
    epilog=f"presets: {listing(PRESETS)}. heads: {listing(HEADS)}. "
           + listing({f"{lut} on {preset}": row for (preset, lut), row in PRESET_HEAD.items()}))
arg = parser.add_argument
arg("--lut", default=DEFAULT_HEAD, choices=list(HEADS),
    help="LUT head (default: %(default)s, the post's headline head; the README's Results compare the three)")
arg("--data", type=training_folder, help="folder of cat images (default: the built-in toy cats)")
arg("--out", default="out", type=output_folder, help="folder for the checkpoint and pictures (default: %(default)s)")
arg("--preset", choices=list(PRESETS), help="model size (default: blog on CUDA, tiny elsewhere)")
arg("--width", type=number(int, 1), help="override the preset's width")
arg("--depth", type=number(int, 1), help="override the preset's number of blocks")
arg("--heads", type=number(int, 1), help="override the preset's number of attention heads")
arg("--dict-size", type=number(int, 2), help="LUT entries K (default: the head's, see below)")
arg("--static-tokens", type=number(int, 0), help="learned extra tokens (default: the head's)")
arg("--gram", type=number(float, 0), help="Gram penalty weight (default: the head's)")
arg("--steps", type=number(int, 1),
    help="training steps (default on CUDA: the preset's, or the preset's with this head; with --resume, a "
         "budget run goes on by steps)")
arg("--minutes", type=number(float, 0, low_allowed=False), help=f"train for this many minutes instead, all included: "
    f"the step count comes from timing the steps, and moves at checkpoints if the machine's speed changes "
    f"(default on a CPU or MPS: {DEFAULT_MINUTES})")
arg("--batch-size", type=number(int, 1), help="images per step, over all processes (default: the preset's)")
arg("--lr", type=number(float, 0, low_allowed=False), help="AdamW learning rate (default: the preset's)")
arg("--warmup", type=number(int, 0), default=200, help="linear learning-rate warm-up steps (default: %(default)s)")
arg("--min-lr", type=number(float, 0, 1), default=0.1, help="cosine decay over --steps ends at this fraction of --lr "
    "(default: %(default)s; 1, with --warmup 0, keeps it constant, as the post)")
arg("--weight-decay", type=number(float, 0), default=1e-2, help="AdamW weight decay (default: %(default)s)")
arg("--grad-clip", type=number(float, 0, low_allowed=False), default=1.0,
    help="max gradient norm (default: %(default)s)")
arg("--ema", type=number(float, 0, 1), default=0.999,
    help="EMA decay of the weights used for sampling (default: %(default)s)")
arg("--t-sampling", default="logit-normal", choices=["uniform", "logit-normal"],
    help="how t is drawn: sigmoid(N(-0.8, 0.8)) as in JiT, or uniform as in the post (default: %(default)s)")
arg("--loss", default="v", choices=["x", "v"],
    help="v: the image error weighted 1/(1-t)^2, the MSE on the velocity, with 1-t clamped at 0.05 "
         "(JiT); x: the plain MSE on the image, as in the post (default: %(default)s)")
arg("--log-every", type=number(int, 1), default=10, help="steps between log lines (default: %(default)s; "
    "with --resume, the run's)")
arg("--sample-every", type=number(int, 1), default=500, help="steps between sample grids (default: "
    "%(default)s; with --resume, the run's)")
arg("--save-every", type=number(int, 1), default=500, help="steps between checkpoints (default: "
    "%(default)s; with --resume, the run's)")
arg("--seed", type=number(int, 0, 2**32 - 1), default=0,
    help="seed of weights, batches and noise, and of which toy cats are drawn (default: %(default)s)")
arg("--device", type=available_device, help="cuda, mps or cpu (default: the best available)")
arg("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default: bf16 where the device runs it natively)")
arg("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the model (default: on for a "
    f"--minutes budget of {COMPILE_MINUTES} or more, which pays for its compiling, on CUDA and x86 CPUs; with "
    "--resume, as the run was)")
arg("--resume", action="store_true", help="continue from --out/ckpt.pt")
args = parser.parse_args()
if args.steps is not None and args.minutes is not None:
    fail("give --steps or --minutes, not both")
steps_given = args.steps is not None  # on a resume too, where a budget run goes on by steps
# A resume takes every setting from the checkpoint but these: NOT_KEPT belong to this start (a CUDA run
# may resume on a CPU, say; --dtype and --compile still default to the run's own, see below), and the
# checkpoint's MAY_CHANGE stand unless given again.
NOT_KEPT = {"out", "device", "dtype", "compile", "resume"}
MAY_CHANGE = {"steps", "log_every", "sample_every", "save_every"}


# ----------------------------------------------------------------------------- setup

def stop_before_training(signum, frame):
    """Ctrl-C during the setup: nothing is trained yet, so nothing to save, and no traceback."""
    if master:  # under torchrun, one process says it
        print("\ninterrupted before the first step: nothing to save", file=sys.stderr)  # \n: after any progress
    sys.exit(130)


signal.signal(signal.SIGINT, stop_before_training)  # until the training loop's own handler
out = Path(args.out)
ckpt_path = out / "ckpt.pt"
checkpoint = None
if not args.resume and ckpt_path.exists():  # a new run would overwrite it
    fail(f"{ckpt_path} holds an earlier run: continue it with --resume, or give a new run another --out")
if args.resume:
    try:
        checkpoint = load_checkpoint(ckpt_path)
    except ValueError as e:
        fail(e)
    saved = {k: v for k, v in checkpoint["args"].items() if k not in NOT_KEPT}
    if saved["data"] and not Path(saved["data"]).is_dir():  # else argparse would blame a --data never given
        fail(f"{ckpt_path} was trained on {saved['data']}, which is no folder from here: resume where the run began")
    parser.set_defaults(**saved)  # parsed again with the checkpoint's settings as defaults, a flag
    args = parser.parse_args()    # may change MAY_CHANGE, and repeat any other setting but not change it
    for key, value in saved.items():
        if key not in MAY_CHANGE and getattr(args, key) != value:
            flag = "--" + key.replace("_", "-")
            trained = f"with {flag} {value}" if value is not None else f"without {flag}"
            fail(f"{ckpt_path} was trained {trained}, not with {flag} {getattr(args, key)}: "
                 f"drop {flag}, or use another --out for a new run")
    if args.steps is not None and args.steps <= checkpoint["step"]:
        fail(f"{ckpt_path} is at step {checkpoint['step']} of {args.steps}: nothing to train; "
             f"give a larger --steps to go on")

# One run at a time in a folder: a second would mix its log rows and checkpoints with this one's. Rank 0
# holds the lock until its process ends, however it ends.
if master and fcntl:
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another run is training into {args.out}: let it finish (or stop it), or give this one another --out")
    except OSError as e:  # a file system without locks (some network mounts)
        print(f"warning: cannot lock {out / '.lock'} ({e.strerror}); nothing stops a second run in {args.out}")

if args.device is None:
    args.device = best_device()
device = torch.device(args.device)
if ddp:
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
log = functools.partial(print, flush=True) if master else (lambda *a, **k: None)

if args.preset is None:
    args.preset = default_preset(device)
    log(f"preset: {args.preset} on {device.type} (choose with --preset {'|'.join(PRESETS)})")
if args.steps is None and args.minutes is None and device.type != "cuda":
    args.minutes = DEFAULT_MINUTES
for key, value in defaults(args.preset, args.lut).items():  # what the command line leaves open
    if getattr(args, key) is None and not (key == "steps" and args.minutes):  # a budget's steps: set_step_count
        setattr(args, key, value)
if checkpoint and args.dtype is None:  # as trained, unless this device would emulate the run's bf16
    args.dtype = "fp32" if fast_dtype(device) == "fp32" else checkpoint["args"]["dtype"]
args.dtype = args.dtype or fast_dtype(device)
# By default a budget long enough to pay for it is compiled (and a resumed run as it was) where that was
# tested: CUDA, and x86 CPUs whose vector code is AVX-512 or AVX2 (not ARM CPUs, not MPS).
tested = device.type == "cuda" or (device.type == "cpu"
                                   and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
asked = args.compile  # --compile, --no-compile or None
pays = checkpoint["args"]["compile"] if checkpoint else (args.minutes or 0) >= COMPILE_MINUTES
args.compile = asked if asked is not None else pays and tested
problem = compile_problem(device) if args.compile else None
if problem:
    if asked:
        fail(f"--compile: {problem}; drop --compile")
    log(f"compile: off, as {problem}")
    args.compile = False
# A run by steps times nothing: a budget run resumed with --steps, and one whose checkpoint comes from a
# train.py that kept no `seconds` (what its budget has spent is unknown). Its checkpoints then say so to the
# next resume.
if steps_given or (checkpoint and checkpoint["seconds"] is None and args.steps):
    args.minutes = None
if args.batch_size % world:
    fail(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
if checkpoint and len(checkpoint["generators"]) != world:  # one random stream per process
    trained_by = len(checkpoint["generators"])
    fail(f"{ckpt_path} was trained by {trained_by} process(es), not {world}: resume it with as many "
         f"({TORCHRUN}={trained_by}" + (", or no torchrun)" if trained_by == 1 else ")"))
try:
    cfg = checkpoint["config"] if checkpoint else make_config(
        args.preset, args.lut, width=args.width, depth=args.depth, heads=args.heads,
        dict_size=args.dict_size, static_tokens=args.static_tokens)
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
optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
# One generator draws everything random in training (batches, flips, t, noise): its state in
# the checkpoint makes a resumed run exact. Each rank gets its own stream.
generator = torch.Generator().manual_seed(args.seed + rank)
step = 0
if checkpoint:
    try:
        load_weights(model, checkpoint["model"])
        load_weights(ema, checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as e:
        fail(f"{ckpt_path}: {e}")
    generator.set_state(checkpoint["generators"][rank])
    step = checkpoint["step"]
    log(f"resuming from step {step}")


def run_seconds():
    """The seconds this run has taken since START, with those of the runs it resumes: what a
    --minutes budget counts, and the log's minutes."""
    earlier = (checkpoint or {}).get("seconds") or 0.0  # None in an older checkpoint, which kept no time
    return earlier + time.time() - START


train_model = torch.compile(model) if args.compile else model
if ddp:
    train_model = DistributedDataParallel(train_model)
autocast = autocast_for(device, args.dtype)
fixed_noise = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1234)).to(device)


def learning_rate(step):
    """Linear warm-up, then a cosine decay from --lr to --min-lr * --lr at the last step (as nanoGPT)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.steps is None:  # the first steps of a --minutes run, before set_step_count: the decay has not begun
        return args.lr
    progress = (step - args.warmup) / max(1, args.steps - 1 - args.warmup)  # 1 at the last step
    return args.lr * (args.min_lr + (1 - args.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# A run's first UNTIMED steps warm up (caches, compiling). The img/s and eta it prints leave them out
# (but for a log line among them, which has nothing else to go by), and so do a budget's timings. A
# --minutes run times the next TIMED steps for a first count. The count is fixed at the end of the
# learning-rate warm-up (its rate does not depend on the count), timed over all of it: 20 steps read the
# speed up to 8% too fast, and the run overshot its budget. After that it is timed again at every
# checkpoint, as the machine's speed changes (a shared CPU slowed by 12% in a run). The budget's pace
# is that of the steps alone: the seconds of pictures, checkpoints and its own probes are set aside
# and counted as what each costs, as last measured.
UNTIMED, TIMED = 5, 20
budget_run = args.minutes is not None  # a run that times its step count, resumed or not
count_final = args.steps is not None  # checkpoints keep the count (and a budget run moves it only there)
start_step = step
t_timed = None  # when the UNTIMED steps ended: pace() counts from there
first_count_step = start_step + UNTIMED + TIMED  # a budget's first count, after TIMED steps,
final_count_step = max(args.warmup, first_count_step)  # its final one, at the end of the warm-up,
timed_again_after = start_step + max(args.warmup, UNTIMED + TIMED)  # and, over as many steps, at checkpoints
aside_s = 0.0  # seconds since t_timed spent on pictures, checkpoints and probes, not on steps
costs = {}  # seconds for a "picture" and a "checkpoint": probed at a budget's first count, then as last spent


saved_step = step if checkpoint else None  # the step that ckpt.pt holds
RESUME = (f"{TORCHRUN}={world}" if ddp else "python") + " train.py --resume" + (
    f" --out {args.out}" if args.out != "out" else "")  # the command that continues this run


def save():
    """The checkpoint, written by rank 0 with the generator state of every rank. Returns what went
    wrong, or None."""
    global saved_step
    states = [None] * world
    if ddp:
        dist.all_gather_object(states, generator.get_state())
    else:
        states = [generator.get_state()]
    if not all(p.isfinite().all() for p in model.parameters()):
        return f"the weights are no longer finite at step {step}; {ckpt_path} is left as it was"
    if master:
        try:  # a budget's count only once it is final: a resume from before then times the steps again
            save_checkpoint(ckpt_path, model, ema, optimizer, states, step, run_seconds(),
                            {**vars(args), "steps": args.steps if count_final else None})
        except OSError as e:
            return write_failed(e)
        log(f"saved {ckpt_path} at step {step}")
    saved_step = step


@contextlib.contextmanager
def aside(kind=None):
    """Time the work in the with-block out of the steps' pace; a kind ("picture", "checkpoint") is also
    noted as the cost of one."""
    global aside_s
    start = time.time()
    yield
    seconds = time.time() - start
    if t_timed is not None:  # before then, pace() counts nothing anyway
        aside_s += seconds
    if kind:
        costs[kind] = seconds


def save_pictures():
    """Samples from the EMA weights with fixed noise, and what the LUT is doing as the last sampling step
    paints them: lut.png and gram.png (the first sample's LUT, if dynamic; entries by usage, most used
    first), the figures of lut_figures as a printed line and a lut.csv row; then the grid becomes a frame
    of progress.gif and loss.png is redrawn. Returns what went wrong, or None."""
    painted = {}  # the head's (weights (64, 64, K), LUT (K, 3, 8, 8) or (64, K, 3, 8, 8)) at the last step
    hook = ema.lut_head.register_forward_hook(lambda module, inputs, output: painted.update(last=output))
    with autocast:
        samples = sample(ema, fixed_noise, SAMPLE_STEPS, args.t_sampling).clamp(-1, 1)
    hook.remove()
    weights, luts = painted["last"]
    figures = {**lut_figures(weights, luts), "seams": seam_ratio(samples.cpu())}
    lut = (luts[0] if luts.dim() == 5 else luts)[entry_usage(weights).argsort(descending=True)]  # (K, 3, 8, 8)
    pictures = {f"samples_{step:06d}.png": image_grid(samples, ncol=8, scale=2, pad=2),
                "lut.png": image_grid(lut_atlas(lut), ncol=math.ceil(math.sqrt(len(lut))), scale=4, pad=1),
                "gram.png": image_grid(gram_image(lut), ncol=1, scale=max(1, 256 // len(lut)))}
    log(f"lut: {figures['in_use']}/{len(lut)} entries in use, effective {figures['effective']:.1f}, "
        f"mean |cos| {figures['cos']:.3f}, seam ratio {figures['seams']:.2f}"
        + (f", cos between images {figures['between']:.3f}" if figures["between"] is not None else ""))
    frame = captioned(image_grid(samples, ncol=8, pad=1), f"step {step}")
    try:
        for name, picture in pictures.items():
            save_picture(picture, out / name)
        append_row(out / "lut.csv", [step, *(figures[k] for k in ("in_use", "effective", "cos", "seams", "between"))])
        save_frames(out, read_frames(out) + [frame])
        plot_losses(out)
    except OSError as e:
        return write_failed(e)


def write_failed(error):
    """The line for a file of the run that could not be written (a full disk, say)."""
    kept, then = ((f"{ckpt_path} is intact, as it was last saved", "continue with --resume") if ckpt_path.exists()
                  else ("no checkpoint was saved yet", "start again"))
    fix = "Free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "Fix that"
    return f"cannot write to {args.out} at step {step}: {error.strerror or error}; stopped, and {kept}. " \
           f"{fix}, then {then}"


def written(write):
    """Call write(), which writes a file of the run (rank 0 only). Returns what went wrong, or None, as
    save() does: stop_if(written(...)) stops every rank when rank 0 could not write."""
    try:
        write()
    except OSError as e:
        return write_failed(e)


def stop_if(problem):
    """Stop every process when any has a problem (a message, or None), with one line from rank 0.
    Under DDP every rank calls this at the same steps: one that stopped alone would leave the
    others waiting for it at their next sync point."""
    problems = [problem]
    if ddp:
        problems = [None] * world
        dist.all_gather_object(problems, problem)
    problem = next((p for p in problems if p), None)
    if problem:
        stop(problem)


def stop(problem):
    """End this process with one line from rank 0; every rank calls it together (see stop_if)."""
    if master:
        print(f"error: {problem}", file=sys.stderr, flush=True)
    leave(1)


def leave(code):
    """End this process; under DDP every rank calls it together and they leave the group together: a
    rank that tears down while another still talks to it aborts Gloo."""
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    sys.exit(code)


def probe_costs():
    """First estimates of what a picture and a checkpoint cost, into costs (each real one then replaces its
    kind's, through aside): a picture's from the sampler's forward passes of the EMA model on 64 images, one
    of them timed, plus one pass's worth for the files it writes; a checkpoint's from one written aside."""
    with torch.no_grad(), autocast:
        ema(fixed_noise, torch.ones(64, device=device))  # the first call at this batch warms caches up
        synchronize(device)
        start = time.time()
        ema(fixed_noise, torch.ones(64, device=device))
        synchronize(device)
        picture_s = (network_calls(SAMPLE_STEPS) + 1) * (time.time() - start)
    save_s, problem = 0.0, None
    if master:
        probe, start = out / "ckpt.pt.timing", time.time()
        problem = written(lambda: save_checkpoint(probe, model, ema, optimizer, [generator.get_state()] * world,
                                                  step, run_seconds(), vars(args)))
        save_s = time.time() - start
        probe.unlink(missing_ok=True)
    stop_if(problem)
    costs.update(picture=picture_s, checkpoint=save_s)


def set_step_count(timed, again=False):
    """A --minutes run: set args.steps so that the run ends within the budget, from the pace of the steps
    (`timed` says over what) and the costs of a picture and a checkpoint; `again`: change the count only
    if it moves by more than 1%. Once final, the checkpoint keeps the count for --resume, which goes on
    timing at checkpoints."""
    figures = torch.tensor([run_seconds(), pace(net=True), costs["picture"], costs["checkpoint"]], device=device)
    if ddp:
        dist.all_reduce(figures, op=dist.ReduceOp.MAX)  # every rank takes the same count: the slowest rank's
    elapsed, step_s, picture_s, save_s = figures.tolist()
    # 3% of the budget is kept for Python's start-up before START, the end after the last checkpoint and a
    # machine that slows down later.
    steps = steps_within(0.97 * 60 * args.minutes, elapsed, step, step_s, picture_s, save_s,
                         args.sample_every, args.save_every)
    if again and abs(steps - args.steps) <= 0.01 * args.steps:
        return
    args.steps = steps
    log(f"budget {args.minutes:g} min: {args.steps} steps ({step_s:.3f} s per step over {timed}, "
        f"a picture {picture_s:.1f} s, a checkpoint {save_s:.1f} s, {elapsed / 60:.1f} min gone)")
    # At the least, the run takes the steps, the last picture and the last checkpoint:
    end = elapsed + (steps - step) * step_s + picture_s + save_s
    if end > 60 * args.minutes and again:  # steps slower than before, with too little time left to make up
        log(f"warning: this machine has slowed down; the run ends after about {end / 60:.1f} min")
    elif end > 60 * args.minutes and checkpoint:  # the runs this one resumes used the budget up
        log(f"warning: {elapsed / 60:.1f} of the {args.minutes:g} min are gone already; the run ends after "
            f"about {end / 60:.1f} min")
    elif end > 60 * args.minutes:  # the timing itself used the budget up
        log(f"warning: {args.minutes:g} min is too short for this model here; the run ends after about "
            f"{end / 60:.1f} min")
    elif steps < 2 * args.warmup and step < args.warmup and not checkpoint:  # at the first count; a resume
        # cannot change --minutes or --warmup
        log(f"warning: {args.minutes:g} min fits {steps} steps here, and the learning rate warms up over "
            f"{args.warmup}: it will " + ("never reach --lr" if steps <= args.warmup else "hardly decay")
            + "; give more --minutes, or a smaller --warmup")


def count_steps():
    """A --minutes run, after each step: set a first count after the TIMED steps, fix it at the end of
    the warm-up, and move it at later checkpoint steps if the machine's speed has changed."""
    global count_final
    if step == first_count_step:
        with aside():
            probe_costs()
        if not count_final:  # else a resume, whose checkpoint holds the final count
            set_step_count(f"{TIMED} steps")
            count_final = not (step < final_count_step < args.steps)  # no final count to come
    if not count_final and step == final_count_step:
        set_step_count(f"steps {start_step + UNTIMED}-{step}")
        count_final = True
    if count_final and step % args.save_every == 0 and timed_again_after < step < args.steps:
        # A machine that slowed down since (another job, a laptop grown hot) would end the run late: time
        # all steps since the untimed ones again (a machine that got faster again after a slow spell gets
        # steps back). Before the checkpoint, which keeps the count, so that a resume goes on as this run does.
        set_step_count(f"steps {start_step + UNTIMED}-{step}", again=True)


def pace(net=False):
    """Seconds per step since the first UNTIMED steps (t_timed), pictures, checkpoints and the budget's
    probes included; net: with them set aside."""
    return (time.time() - t_timed - (aside_s if net else 0.0)) / (step - start_step - UNTIMED)


# Ctrl-C sets a flag; the loop saves at its next log step, after that step's pictures, and stops (in the
# last log interval the run just ends as planned). A second Ctrl-C quits at once. The handlers write with
# os.write: a print here could land inside one of the loop's prints, which Python refuses.
interrupted = False


def on_interrupt(signum, frame):
    global interrupted
    interrupted = True
    signal.signal(signal.SIGINT, quit_unsaved)
    if master:
        os.write(1, b"\nCtrl-C: saving and stopping at the next log line; Ctrl-C again quits without saving\n")


def quit_unsaved(signum, frame):
    """A second Ctrl-C: stop at once, in one line, leaving the last checkpoint as it was."""
    if master:
        then = f"continue from step {saved_step} with: {RESUME}" if saved_step is not None else "nothing was saved"
        os.write(2, f"\ninterrupted again: stopped without saving; {then}\n".encode())
    sys.exit(130)


signal.signal(signal.SIGINT, on_interrupt)
stop_if(written(lambda: keep_up_to(out, step)) if master else None)

# ----------------------------------------------------------------------------- training loop
local_batch = args.batch_size // world
plan = f"{args.minutes:g} min" if budget_run else f"{args.steps} steps"
if budget_run and checkpoint:  # resumed: the count so far (none before the final one) and the minutes gone
    plan += (f" ({args.steps} steps, " if args.steps else " (") + f"{run_seconds() / 60:.1f} min gone)"
log(f"training {args.lut} head for {plan}, batch {args.batch_size}, {args.dtype}"
    f"{', compiled' if args.compile else ''}, on {device}")
bin_sums = torch.zeros(2, BINS, device=device)  # (loss sum, count) per t bin since the last log
loss_sum = torch.zeros((), device=device)
last_log, t_start = step, time.time()
stopping = False  # Ctrl-C was pressed on some rank, as the last log step found
while args.steps is None or step < args.steps:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step)
    x = get_batch(images, local_batch, generator, device)  # (b, 3, 64, 64) in [-1, 1]
    t = draw_t(local_batch, args.t_sampling, generator).to(device)  # before the noise: an exact resume needs the order
    noise = torch.randn(x.shape, generator=generator).to(device)
    loss, per_image = denoising_loss(train_model, x, t, noise, autocast, args.loss, args.gram)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    decay = min(args.ema, (1 + step) / (10 + step))  # warm-up: early EMA follows the model closely
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
    step += 1
    if step == start_step + UNTIMED:  # caches warm and the model compiled: speed is timed from here
        t_timed = time.time()
    if budget_run:
        count_steps()  # before this step's pictures and checkpoint, which the count includes

    loss_sum += loss.detach()
    bins = (t * BINS).long().clamp(max=BINS - 1)
    bin_sums[0].index_add_(0, bins, per_image.detach())
    bin_sums[1].index_add_(0, bins, torch.ones_like(per_image))
    if step % args.log_every == 0 or step == args.steps:
        stats = torch.cat([loss_sum.view(1), bin_sums.flatten(), torch.tensor([float(interrupted)], device=device)])
        if ddp:
            dist.all_reduce(stats)  # one sync per log line: mean loss, bins and Ctrl-C over ranks
        mean_loss = stats[0].item() / ((step - last_log) * world)
        if not math.isfinite(mean_loss):  # the same on every rank, after the all-reduce
            stop(f"loss is {mean_loss} at step {step}; stopped, {ckpt_path} is left as it was. "
                 f"Try a lower --lr, or --dtype fp32" + (", or --no-compile" if args.compile else ""))
        per_bin = stats[1:1 + BINS] / stats[1 + BINS:1 + 2 * BINS]  # nan for a t bin that drew no image
        # img/s and eta leave out the first steps' compiling, once there are steps after them
        per_step = pace() if step > start_step + UNTIMED else (time.time() - t_start) / (step - start_step)
        minutes = run_seconds() / 60
        eta = f"eta {(args.steps - step) * per_step / 60:.1f} min" if args.steps else "timing the first steps"
        log(f"step {step}/{args.steps or '?'} | loss {mean_loss:.4f} | by t "
            + " ".join("-" if math.isnan(v) else f"{v:.3f}" for v in per_bin.tolist())
            + f" | lr {optimizer.param_groups[0]['lr']:.2e} | {args.batch_size / per_step:.0f} img/s"
            + f" | {minutes:.1f} min, {eta}")
        row = [step, mean_loss, *per_bin.tolist(), optimizer.param_groups[0]["lr"], args.batch_size / per_step,
               minutes]
        stop_if(written(lambda: append_row(out / "log.csv", row)) if master else None)
        loss_sum.zero_()
        bin_sums.zero_()
        last_log = step
        stopping = stats[-1].item() > 0 and step != args.steps  # at the last step the run ends as planned
    if step % args.sample_every == 0 or step == args.steps:
        with aside("picture"):
            stop_if(save_pictures() if master else None)
    if stopping:  # after this step's pictures, so that a resume, which starts after it, lacks none
        log(f"interrupted: saving and stopping; continue with: {RESUME}")
        stop_if(save())
        leave(130)
    if step % args.save_every == 0 or step == args.steps:
        with aside("checkpoint"):
            stop_if(save())

leave(0)
