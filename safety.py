"""Keeping a training run safe. A reader learning the model can skip this file; train.py imports it.

    one run per folder   a lock on --out/.lock, no new run over an earlier run's checkpoint, and the temp files
                         of a run killed mid-write (kill -9) removed
    Ctrl-C, SIGTERM      the first saves and stops at the next log line, a second quits at once
    full disks           a failed write stops the run in one line; every file is written whole (atomic.py)
    torchrun             rank 0 alone writes and speaks; a problem on any rank stops them all
    out of memory        one line, naming the flags to lower
"""
import errno
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from atomic import left_behind, save_atomically

try:
    import fcntl  # the folder's lock, on Linux and macOS
except ImportError:  # Windows: no lock there, so nothing stops a second run in the same folder
    fcntl = None

ddp = "RANK" in os.environ  # launched by torchrun
rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
master = rank == 0  # rank 0 alone logs, saves and says what went wrong


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


def start(device):
    """This process's device: under torchrun its own GPU, and the process group joined."""
    if ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if ddp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def sum_over_ranks(tensor):
    """The tensor summed over every process, in place (itself alone without torchrun)."""
    if ddp:
        dist.all_reduce(tensor)
    return tensor


def claim(out, resume, data):
    """Refuse a new run over a checkpoint, or an --out that overlaps --data (the run's pictures would become
    training images); make the folder, lock it for this run (rank 0, until its process ends) and remove what runs
    killed mid-write left."""
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
    if fcntl:
        global lock_file  # kept open: the lock lasts as long as the file
        lock_file = open(Path(out) / ".lock", "w")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fail(f"another run is training into {out}: let it finish (or stop it), or give this one another --out")
        except OSError as e:  # a file system without locks (some network mounts)
            print(f"warning: cannot lock {Path(out) / '.lock'} ({e.strerror}); nothing stops a second run in {out}")
            return  # then another run may be writing its temp files
    temps, size = left_behind(out)  # the lock is ours: no other run is writing them
    for temp in temps:
        temp.unlink(missing_ok=True)
    if temps:
        print(f"removed {len(temps)} temp file{'s' if len(temps) > 1 else ''} ({size / 1e6:.1f} MB) in {out} that a "
              f"killed run left, e.g. {temps[0].name}", flush=True)


# ----------------------------------------------------------------------------- Ctrl-C and SIGTERM
# The first Ctrl-C sets `interrupted`; train.py saves at its next log step and stops. A second quits at
# once. SIGTERM (what schedulers, `docker stop` and `timeout` send) does the same. The handlers write with
# os.write: a print here could land inside one of the loop's prints.
interrupted = False
saved_step = None  # the step that ckpt.pt holds, for the second Ctrl-C's line
resume_command = "python train.py --resume"


def on_interrupt(out, step):
    """From now on, Ctrl-C and SIGTERM save and stop at the next log line (train.py reads `interrupted`); `step` is
    the checkpoint's that the run resumed, or None."""
    global resume_command, saved_step
    saved_step = step
    resume_command = (f"torchrun --standalone --nproc_per_node={world}" if ddp else "python") + " train.py --resume" \
        + (f" --out {out}" if out != "out" else "")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, first_interrupt)


def first_interrupt(signum, frame):
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


def write(out, step, work):
    """work(), which writes files of the run in out at `step`, by rank 0: every rank stops in one line if it fails."""
    stop_if(written(work, out, step) if master else None)


def kept(out):
    """What a stopped run leaves behind."""
    path = Path(out) / "ckpt.pt"
    return f"{path} is intact, as it was last saved" if path.exists() else "no checkpoint was saved yet"


def save(path, step, model, generator, checkpoint_of):
    """The checkpoint checkpoint_of(every rank's generator state) gives, written by rank 0; stops every rank,
    in one line, when that fails or the weights are no longer finite."""
    global saved_step
    states = [None] * world
    if ddp:
        dist.all_gather_object(states, generator.get_state())
    else:
        states = [generator.get_state()]
    problem = None
    if not all(p.isfinite().all() for p in model.parameters()):
        problem = f"the weights are no longer finite at step {step}; stopped, and {kept(path.parent)}"
    elif master:
        problem = written(lambda: save_atomically(checkpoint_of(states), path), path.parent, step)
    stop_if(problem)
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
