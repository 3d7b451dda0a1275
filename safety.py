"""Keeping a training run safe. A reader learning the model can skip this file; train.py imports it.

    one run per folder       a lock on --out/.lock, and no new run over an earlier run's checkpoint
    --resume                 the checkpoint's settings, of which only a few may change
    Ctrl-C, SIGTERM          the first saves and stops at the next log line, a second quits at once
    full disks               every file written atomically, and a failed write stops in one line
    torchrun                 rank 0 alone writes and speaks; a problem on any rank stops them all
    out of memory            one line, naming the flags to lower
    checkpoints              all a resume needs (checkpoint); one line for a missing, unreadable, truncated
                             or foreign file (load_checkpoint), or for weights that do not fit (load_weights)
"""
import errno
import io
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from model import Config

try:
    import fcntl  # the folder's lock, on Linux and macOS
except ImportError:  # Windows: no lock there, so nothing stops a second run in the same folder
    fcntl = None

ddp = "RANK" in os.environ  # launched by torchrun
rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
master = rank == 0  # rank 0 alone logs, saves and says what went wrong
TORCHRUN = "torchrun --standalone --nproc_per_node"  # =N: how the messages say to start N processes


def say(line, any_rank=False):
    """Rank 0's line of error (or, with any_rank, this rank's). Under torchrun it goes into torchrun's own report,
    as the failure's root cause (printed last, where torchrun's traceback cannot bury it); elsewhere to stderr."""
    if not (master or any_rank):
        return
    report = os.environ.get("TORCHELASTIC_ERROR_FILE")  # set by torchrun for each process
    if report:
        Path(report).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))
    else:
        print(line, file=sys.stderr, flush=True)


def fail(message):
    """Stop before training, in one line. Under torchrun every rank meets the same problem; rank 0 says it."""
    say(f"error: {message}")
    sys.exit(1)


def say_once(parser):
    """argparse's one line of error, said by rank 0 alone under torchrun."""
    parser.error = lambda message: (say(f"{parser.prog}: error: {message}"), sys.exit(2))


def save_atomically(obj, path, write=torch.save):
    """write(obj, file) into a temp file beside path, then rename: a crash, Ctrl-C or a full disk never
    leaves a half-written file, and the previous one stays whole until the new one is. A failed write
    raises OSError (errno ENOSPC for a full disk), the temp file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + f".tmp{os.getpid()}")
    data = io.BytesIO()  # torch.save onto a full disk raises a RuntimeError without the errno; a plain write does not
    write(obj, data)
    try:
        with open(temp, "wb") as file:
            file.write(data.getbuffer())
            file.flush()
            os.fsync(file.fileno())  # on the disk before the rename: after a power cut, the old file or the new
        os.replace(temp, path)
    except BaseException as e:
        temp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(temp):
            e.filename = str(path)  # the messages name the file the user knows, not the temp file
        raise


def claim(out, resume, data):
    """Refuse a new run over a checkpoint, or an --out that overlaps --data (the run's pictures would become
    training images); make the folder and lock it for this run (rank 0, until its process ends)."""
    if not resume and (Path(out) / "ckpt.pt").exists():
        fail(f"{Path(out) / 'ckpt.pt'} holds an earlier run: continue it with --resume, "
             f"or give a new run another --out")
    if data and (Path(out).resolve().is_relative_to(Path(data).resolve())
                 or Path(data).resolve().is_relative_to(Path(out).resolve())):
        fail(f"--out {out} and --data {data} overlap: the run's pictures would be trained on; "
             f"give an --out outside the data folder")
    if not master:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    if not fcntl:
        return
    global lock_file  # kept open: the lock lasts as long as the file
    lock_file = open(Path(out) / ".lock", "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another run is training into {out}: let it finish (or stop it), or give this one another --out")
    except OSError as e:  # a file system without locks (some network mounts)
        print(f"warning: cannot lock {Path(out) / '.lock'} ({e.strerror}); nothing stops a second run in {out}")


# The keys every checkpoint has; checkpoint() also writes "guide", which checkpoints from before it lack
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "generators", "step", "seconds", "config", "args")


def checkpoint(model, ema, guide, optimizer, generators, step, seconds, args):
    """All that a resumed run needs, as a dict under CHECKPOINT_KEYS: the weights, the EMA weights, the
    optimizer, each process's random generator state, the step, the seconds the run has taken so far,
    the model's Config and train.py's settings (a dict); and under "guide" the guide's weights (None until
    train.py takes them; read with .get, as checkpoints from before the guide lack it). train.py writes it
    with torch.save."""
    values = (model.state_dict(), ema.state_dict(), optimizer.state_dict(), generators, step, seconds,
              asdict(model.cfg), args)
    saved = dict(zip(CHECKPOINT_KEYS, values))
    saved["guide"] = None if guide is None else guide.state_dict()
    return saved


def load_weights(module, state_dict):
    """module.load_state_dict, with weights that do not fit (an older version of model.py) as one line."""
    own = module.state_dict()
    differ = list(own.keys() ^ state_dict.keys()) + [k for k in own.keys() & state_dict.keys()
                                                     if own[k].shape != state_dict[k].shape]
    if differ:  # torch's own message lists every tensor, over many lines
        raise ValueError(f"the checkpoint's weights do not fit this version of the model ({len(differ)} "
                         f"{'tensors differ' if len(differ) > 1 else 'tensor differs'}, e.g. "
                         f"{', '.join(sorted(differ)[:3])}); train a new one")
    module.load_state_dict(state_dict)


def load_checkpoint(path):
    """A checkpoint written by train.py as a dict, its config as a Config. Raises ValueError, in one
    line, for a missing, unreadable, truncated or foreign file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the checkpoint in it, {path / 'ckpt.pt'}")
    if not path.is_file():
        out = path.parent  # train.py writes out/ckpt.pt
        raise ValueError(f"no checkpoint at {path}; train one first with: python train.py"
                         + (f" --out {out}" if path.name == "ckpt.pt" and out not in (Path("out"), Path(".")) else ""))
    not_ours = f"{path} is not a checkpoint written by train.py"
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as e:  # no permission, a disk error
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip file
        raise ValueError(not_ours if head else f"{path} is empty")
    try:  # map_location: a CUDA-trained checkpoint loads anywhere
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or corrupt
        raise ValueError(f"cannot read {path} as a checkpoint ({type(e).__name__}); is the file complete?") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{not_ours}: it holds a {type(saved).__name__}")
    missing = [key for key in CHECKPOINT_KEYS if key not in saved]
    read = {"data", "seed", "t_sampling", "dtype", "compile"}  # the settings that sample.py and --resume read
    if missing or not (isinstance(saved["args"], dict) and read <= saved["args"].keys()):
        raise ValueError(f"{not_ours} (missing: {', '.join(missing) or 'some of its args'})")
    try:
        saved["config"] = Config(**saved["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} describes a model this version cannot build ({e})") from None
    return saved


# A resume takes every setting from the checkpoint but these: NOT_KEPT belong to this start (a CUDA run may
# resume on a CPU), and MAY_CHANGE stand unless given again; --steps or --minutes replaces the other.
NOT_KEPT = {"out", "device", "dtype", "compile", "resume"}
MAY_CHANGE = {"steps", "minutes", "log_every", "sample_every", "save_every"}


def resume(parser, args):
    """--resume: the checkpoint in --out, and the command line parsed again with its settings as defaults."""
    path = Path(args.out) / "ckpt.pt"
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as e:
        fail(e)
    saved = {k: v for k, v in checkpoint["args"].items() if k not in NOT_KEPT}
    if saved["data"] and not Path(saved["data"]).is_dir():  # else argparse would blame a --data never given
        fail(f"{path} was trained on {saved['data']}, which is no folder from here: resume where the run began")
    if args.steps or args.minutes:  # the run's new length
        saved.update(steps=args.steps, minutes=args.minutes)
    parser.set_defaults(**saved)
    args = parser.parse_args()
    for key, value in saved.items():
        if key not in MAY_CHANGE and getattr(args, key) != value:
            flag = "--" + key.replace("_", "-")
            trained = f"with {flag} {value}" if value is not None else f"without {flag}"
            fail(f"{path} was trained {trained}, not with {flag} {getattr(args, key)}: "
                 f"drop {flag}, or use another --out for a new run")
    if args.steps and args.steps <= checkpoint["step"]:
        fail(f"{path} is at step {checkpoint['step']} of {args.steps}: nothing to train; give a larger "
             + ("--minutes" if args.minutes else "--steps") + " to go on")
    if len(checkpoint["generators"]) != world:  # one random stream per process
        n = len(checkpoint["generators"])
        fail(f"{path} was trained by {n} process(es), not {world}: resume it with as many "
             f"({TORCHRUN}={n}" + (", or no torchrun)" if n == 1 else ")"))
    return checkpoint, args


# ----------------------------------------------------------------------------- Ctrl-C and SIGTERM
# The first Ctrl-C sets `interrupted`; train.py saves at its next log step and stops. A second quits at
# once. SIGTERM (what schedulers, `docker stop` and `timeout` send) does the same. The handlers write with
# os.write: a print here could land inside one of the loop's prints.
interrupted = False
saved_step = None  # the step that ckpt.pt holds, for the second Ctrl-C's line
resume_command = "python train.py --resume"


def on_signals(handler):
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def before_training(signum, frame):
    """Ctrl-C during the setup: nothing is trained yet, so nothing to save, and no traceback."""
    if master:
        print("\ninterrupted before the first step: nothing to save", file=sys.stderr)  # \n: after any progress
    sys.exit(130)


def on_interrupt(signum, frame):
    global interrupted
    interrupted = True
    signal.signal(signum, quit_unsaved)  # before the line, so that a quick second one finds it
    if master:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        os.write(1, f"\n{name}: saving and stopping at the next log line; a second {name} quits without saving\n"
                 .encode())


def quit_unsaved(signum, frame):
    """A second Ctrl-C (or SIGTERM): stop at once, in one line, leaving the last checkpoint as it was."""
    if master:
        then = f"continue from step {saved_step} with: {resume_command}" if saved_step is not None \
            else "nothing was saved"
        os.write(2, f"\ninterrupted again: stopped without saving; {then}\n".encode())
    sys.exit(130)


# ----------------------------------------------------------------------------- writing, and stopping together
def written(write, out, step):
    """Call write(), which writes a file of the run in out at `step` (rank 0 only). Returns the line
    saying what went wrong (a full disk, say), or None."""
    try:
        write()
    except OSError as error:
        fix = "Free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "Fix that"
        return f"cannot write to {out} at step {step}: {error.strerror or error}; stopped, and {kept(out)}. " \
               f"{fix}, then " + ("continue with --resume" if (Path(out) / "ckpt.pt").exists() else "start again")


def kept(out):
    """What a stopped run leaves behind."""
    path = Path(out) / "ckpt.pt"
    return f"{path} is intact, as it was last saved" if path.exists() else "no checkpoint was saved yet"


def save(path, step, model, generator, checkpoint_of):
    """The checkpoint checkpoint_of(every rank's generator state) gives, written by rank 0. Returns the
    line saying what went wrong, or None."""
    global saved_step
    states = [None] * world
    if ddp:
        dist.all_gather_object(states, generator.get_state())
    else:
        states = [generator.get_state()]
    if not all(p.isfinite().all() for p in model.parameters()):
        return f"the weights are no longer finite at step {step}; stopped, and {kept(path.parent)}"
    if master:
        problem = written(lambda: save_atomically(checkpoint_of(states), path), path.parent, step)
        if problem:
            return problem
    saved_step = step  # before the line: a Ctrl-C right after it must know the checkpoint is there
    if master:
        print(f"saved {path} at step {step}", flush=True)


def stop_if(problem):
    """Stop every process when any has a problem (a line, or None), with one line from rank 0. Under DDP
    every rank calls this at the same steps: one that stopped alone would leave the others waiting."""
    problems = [problem]
    if ddp:
        problems = [None] * world
        dist.all_gather_object(problems, problem)
    problem = next((p for p in problems if p), None)
    if problem:
        say(f"error: {problem}")
        leave(1)


def out_of_memory(kind, error, trace):
    """train.py's sys.excepthook, Python's last word on an uncaught error: out of memory (a --batch-size or
    --width too large for the machine) in one line that says what to lower."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(error):
        say("error: out of memory: lower --batch-size, or the model's --width or --depth", any_rank=True)
    else:
        sys.__excepthook__(kind, error, trace)


def leave(code):
    """End this process. Under DDP every rank leaves the group together (a rank that tears down while
    another still talks to it aborts Gloo), then exits at once: Python's own teardown, after the group is
    gone, now and then aborted rank 0 ("terminate called without an active exception", SIGABRT)."""
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
