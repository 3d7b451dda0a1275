"""What every command (train.py, sample.py, data.py, bench.py) shares: the checks of its flags, and an end in
one line. A reader learning the model can skip this file.

Each command imports this file before torch and calls stop_quietly(line) at once: a Ctrl-C or SIGTERM while torch
loads (seconds) then ends with that line and exit code 130, not a traceback. The flags' `type=`s end a bad value
at once, before any work, with argparse's one line naming the flag ("argument --lr: ...") and exit code 2.
"""
import argparse
import io
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

from PIL import Image

PICTURES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")  # what the commands write


def stop_quietly(line):
    """From now on a Ctrl-C or SIGTERM ends this process with `line` (by rank 0 alone under torchrun) and exit code
    130: no traceback, and files being written are left whole (atomic.py)."""
    def stop(signum, frame):
        if os.environ.get("RANK", "0") == "0":
            print(f"\n{line}", file=sys.stderr, flush=True)  # \n: after any progress line
        sys.exit(130)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def number(kind, low, high=math.inf, low_allowed=True):
    """A `type=` for an int or float flag from low to high; low_allowed=False excludes low itself."""
    bounds = f"from {low} to {high}" if high < math.inf else f"{'>=' if low_allowed else '>'} {low}"
    wanted = f"{'an integer' if kind is int else 'a number'} {bounds}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not (math.isfinite(value) and low <= value <= high and (low_allowed or value != low)):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value
    return parse


def input_folder(path):
    """A `type=` for a folder to read."""
    if not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder" if Path(path).exists()
                                         else f"no folder {path}")
    return path


def training_folder(path):
    """A `type=` for --data: a folder to read, where a missing or empty one (as a download that failed
    leaves it: nothing, or a hidden part file) also names the download."""
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"no folder {path}; to fetch real cat faces into it: "
                                         f"python data.py --download {path}")
    if Path(path).is_dir() and all(p.name.startswith(".") for p in Path(path).iterdir()):
        raise argparse.ArgumentTypeError(f"{path} is empty; to fetch real cat faces into it: "
                                         f"python data.py --download {path}")
    return input_folder(path)


def output_folder(path):
    """A `type=` for a folder to write into, made when needed: it must not be a file, nor be inside one,
    and its nearest existing folder must be writable."""
    place = Path(path)
    while not place.exists() and place != place.parent:
        if place.is_symlink():
            raise argparse.ArgumentTypeError(f"{path}: {place} links to {os.readlink(place)}, which is not there")
        place = place.parent
    if not place.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {place} is a file, not a folder")
    try:  # a file made and gone, not os.access: the error names the cause (no permission, a read-only disk)
        tempfile.TemporaryFile(dir=place).close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot write into {place} ({e.strerror or e})") from None
    return path


def output_file(path):
    """A `type=` for a file to write, in a folder that exists (a picture's format comes from its suffix)."""
    folder = Path(path).parent
    if Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no folder {folder}" if not folder.exists()
                                         else f"{path}: {folder} is a file, not a folder")
    new = not Path(path).exists()
    try:  # tried now, not after the work: a folder's permissions are not the whole story (/proc, read-only disks)
        open(path, "a").close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot write it ({e.strerror or e})") from None
    if new:
        os.unlink(path)
    return path


def picture(path):
    """A `type=` for an image file to write: output_file, in a format that keeps the whole RGB picture (.ico
    would shrink it, .psd Pillow cannot write), tried on one pixel before any work (a Pillow without WebP)."""
    output_file(path)
    suffix = Path(path).suffix.lower()
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), Image.registered_extensions()[suffix])
        writes = suffix in PICTURES
    except (KeyError, OSError, ValueError):  # no writer for it here
        writes = False
    if not writes:
        stem = Path(path).stem if not Path(path).name.startswith(".") else "samples"  # ".png": a name without a stem
        raise argparse.ArgumentTypeError(f"{path}: give a {', '.join(PICTURES[:-1])} or {PICTURES[-1]} file name, "
                                         f"such as {Path(path).with_name(stem + '.png')}")
    return path


def available_device(name):
    """--device's `type=`: a device this machine has ("cpu", "cuda", "cuda:1", "mps"); else an error
    that argparse prints in one line naming the flag."""
    import torch  # loaded by now; here so that this file loads before it
    from machine import best_device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{name} is not a device: give cpu, cuda, cuda:N or mps") from None
    kind = device.type
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind):
        raise argparse.ArgumentTypeError(f"this machine has no {kind}: give {best_device()}, or leave --device out")
    if kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        last = torch.cuda.device_count() - 1
        raise argparse.ArgumentTypeError(f"this machine has no {name}: give cuda:0"
                                         + (f" to cuda:{last}" if last else ""))
    return name
