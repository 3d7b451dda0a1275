"""What the tests share: running a project script as a user does (stopping it halfway, or on a full disk), a
model small enough that each command takes seconds and one for tests that build it (small_config), torchrun's two
processes, and a folder of cats. pytest loads this file first."""
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from data import image_grid, toy_cats
from model import Config

ROOT = Path(__file__).parent.parent  # the repository, where the scripts are
TINY = ["--preset", "tiny", "--width", "32", "--depth", "1", "--heads", "2", "--batch-size", "4",
        "--log-every", "1", "--device", "cpu"]
# torchrun with 2 processes; --standalone lets it take a free port itself (a port picked here and then
# freed could be taken by another test before torchrun binds it)
DDP = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(script, *args, cwd, launcher=(), env=None):
    """Run a project script from `cwd` (so data/cache and out/ land in the temp folder)."""
    return subprocess.run([sys.executable, *launcher, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def interrupted(script, *args, cwd, at, signals=(signal.SIGINT,), freeze=0, again_at=None, env=None, launcher=()):
    """Run a project script as `run` does (launcher: under torchrun) until it prints a line that starts with `at`,
    then send it `signals` in turn, waiting `freeze` seconds after a SIGSTOP (a machine busy elsewhere); with
    again_at, one more SIGINT once it prints a line that starts with that. Returns what it printed up to the line
    `at`, and the rest as a CompletedProcess. stderr goes to a file, not a pipe: a script that writes much to it
    (compiler warnings) cannot block there; and a line that never comes fails in 5 minutes."""
    errors = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, *launcher, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=errors, text=True)
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith(at):
            break
    else:
        watchdog.cancel()
        errors.seek(0)
        pytest.fail(f"{script} ended without printing {at!r}; it printed:\n{''.join(printed)}{errors.read()}")
    for sent in signals:
        process.send_signal(sent)
        if sent == signal.SIGSTOP:
            time.sleep(freeze)
    if again_at:
        for line in process.stdout:
            if line.startswith(again_at):
                process.send_signal(signal.SIGINT)
                break
    out, _ = process.communicate(timeout=120)
    watchdog.cancel()
    errors.seek(0)
    return "".join(printed), subprocess.CompletedProcess(process.args, process.returncode, out, errors.read())


FULL_DISK = """# A script, then its arguments: the script runs with a full disk for the Nth file opened for writing
# whose name holds NAME: only ROOM bytes of it fit, less than any file the scripts write. As on a real
# disk, an unbuffered write first returns a short count and only the next one raises; a buffered write
# raises at once.
import builtins, errno, os, runpy, sys
name, nth, ROOM, error = "{name}", {nth}, 10, errno.{error}  # error: ENOSPC for a full disk
opened = []
real_open = builtins.open


class FullDisk:
    def __init__(self, file, raw):
        self.file, self.raw, self.written = file, raw, 0

    def write(self, data):
        fits = data[:ROOM - self.written]
        self.file.write(fits)
        self.written += len(fits)
        if len(fits) == len(data) or (self.raw and fits):
            return len(fits)
        raise OSError(error, os.strerror(error))

    def __getattr__(self, attribute):
        return getattr(self.file, attribute)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.file.close()


def full_disk(file, mode="r", buffering=-1, *args, **kwargs):
    opened_file = real_open(file, mode, buffering, *args, **kwargs)
    if mode[0] in "wa" and name in str(file):
        opened.append(file)
        if len(opened) == nth:
            return FullDisk(opened_file, raw=buffering == 0)
    return opened_file


builtins.open = full_disk
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as when the script runs itself
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_with_full_disk(name, nth, script, *args, cwd, launcher=(), error="ENOSPC"):
    """run(script), with the disk full for the nth file written whose name holds `name` (a patched writer)."""
    (cwd / "full_disk.py").write_text(FULL_DISK.format(name=name, nth=nth, error=error))
    return subprocess.run([sys.executable, *launcher, "full_disk.py", str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # a hang fails the test


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    """A folder of 8 small PNG cat faces."""
    folder = tmp_path_factory.mktemp("cats")
    for i, image in enumerate(toy_cats(8)):
        image_grid(image[None].float() / 127.5 - 1).save(folder / f"{i}.png")
    return folder


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def small_config(lut, static_tokens=None):
    """A model small enough to train in seconds on a CPU: K=16 (the dynamic head: 16 static tokens)."""
    if static_tokens is None:
        static_tokens = 16 if lut == "dynamic" else 0
    return Config(lut=lut, width=64, depth=2, heads=2, dict_size=16, static_tokens=static_tokens)
