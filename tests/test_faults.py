"""Faults that real runs meet, each tried as a user meets it: SIGTERM from a scheduler, errors under
torchrun, an output folder inside the data, damaged checkpoints and log files, an output folder or file
that cannot be made, a machine without the memory asked for. Each ends in one line, nothing lost.
Run: python -m pytest -q tests/test_faults.py"""
import argparse
import errno
import os
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from conftest import DDP, ROOT, TINY, interrupted, load, run
from data import output_folder


@pytest.mark.parametrize("launcher", [(), DDP])
def test_sigterm_saves_and_stops_like_ctrl_c(tmp_path, cats, launcher):
    """What SLURM, `docker stop` and `timeout` send, to the run or to torchrun: the run saves at its next log
    line, and a resume starts from there, losing no step. The budget is one no clock can reach."""
    _, result = interrupted("train.py", *TINY, "--data", cats, "--minutes", "1e307", "--no-compile", cwd=tmp_path,
                            at="step 20 ", signals=[signal.SIGTERM], launcher=launcher)
    if launcher:  # torchrun's own SIGTERM handler ends it with exit code 1 and a SignalException traceback
        assert result.returncode == 1 and result.stderr.count("Traceback") == 1 and "SignalException" in result.stderr
    else:
        assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "SIGTERM: saving and stopping at the next log line" in result.stdout
    saved = load(tmp_path / "out" / "ckpt.pt")["step"]
    logged = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("step ")]
    assert saved == logged[-1] > 20 and f"saved out/ckpt.pt at step {saved}" in result.stdout
    resumed = run("train.py", "--resume", "--steps", saved + 1, cwd=tmp_path, launcher=launcher)
    assert resumed.returncode == 0 and f"resuming from step {saved}" in resumed.stdout


@pytest.mark.parametrize("flags, line", [
    (["--lr", "nan"], "train.py: error: argument --lr: nan is not a number > 0"),
    (["--batch-size", 3], "error: --batch-size 3 must be divisible by the 2 processes"),
])
def test_an_error_under_torchrun_is_said_once_at_the_end(tmp_path, cats, flags, line):
    """torchrun prints a long traceback of its own when a process fails: the project's line goes into
    its report, as the root cause, once."""
    result = run("train.py", *TINY, "--data", cats, "--steps", 2, *flags, cwd=tmp_path, launcher=DDP)
    printed = result.stdout + result.stderr
    assert result.returncode != 0 and printed.count(line) == 1
    assert printed.rindex(line) > printed.rindex("Traceback")  # after torchrun's traceback, not above it


def test_an_output_folder_that_overlaps_the_data_is_refused(tmp_path, cats):
    """The pictures of a run inside its data folder would be trained on by the next run."""
    for data, out in [(cats, cats / "run"), (tmp_path / "out" / "cats", tmp_path / "out")]:
        (tmp_path / "out" / "cats").mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / "cats" / "0.png").write_bytes((cats / "0.png").read_bytes())
        result = run("train.py", *TINY, "--data", data, "--out", out, "--steps", 1, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.splitlines() == [
            f"error: --out {out} and --data {data} overlap: the run's pictures would be trained on; "
            "give an --out outside the data folder"]
    assert not (cats / "run").exists() and sorted(p.name for p in cats.iterdir()) == [f"{i}.png" for i in range(8)]


def test_a_damaged_checkpoint_is_one_line_in_sample_and_resume(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
    for damage, message in [
        (lambda c: c["config"].update(heads=0), "describes a model this version cannot build"),  # edited by hand
        (lambda c: c["args"].pop("t_sampling"), "(missing: some of its args)"),
        (lambda c: c.update(args=None), "(missing: some of its args)"),
    ]:
        checkpoint = load(tmp_path / "out" / "ckpt.pt")
        damage(checkpoint)
        torch.save(checkpoint, tmp_path / "ckpt.pt")
        result = run("sample.py", "ckpt.pt", cwd=tmp_path)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1 and message in result.stderr
    checkpoint = load(tmp_path / "out" / "ckpt.pt")
    checkpoint["args"].pop("data")
    torch.save(checkpoint, tmp_path / "out" / "ckpt.pt")
    result = run("train.py", "--resume", "--steps", 2, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: out/ckpt.pt is not a checkpoint written by train.py (missing: some of its args)"]


def test_output_places_that_cannot_be_made_are_refused_before_any_work(tmp_path, cats):
    (tmp_path / "drive").symlink_to(tmp_path / "not_mounted")
    result = run("train.py", *TINY, "--data", cats, "--out", "drive/run", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"train.py: error: argument --out: drive/run: drive links to {tmp_path / 'not_mounted'}, which is not there"]
    result = run("train.py", *TINY, "--data", cats, "--out", "/proc/run", cwd=tmp_path)  # no folder can be made there
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "train.py: error: argument --out: /proc/run: cannot write into /proc (No such file or directory)"]
    result = run("bench.py", "--json", "/proc/bench.json", cwd=tmp_path)  # before the benchmark, not after it
    assert result.returncode == 2 and result.stdout == "" and result.stderr.splitlines() == [
        "bench.py: error: argument --json: /proc/bench.json: cannot write it (No such file or directory)"]


def test_a_read_only_disk_is_called_so(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):  # what a folder on a read-only mount answers, even to root
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(argparse.ArgumentTypeError) as error:
        output_folder(str(tmp_path / "run"))
    assert str(error.value) == f"{tmp_path / 'run'}: cannot write into {tmp_path} (Read-only file system)"


def test_running_out_of_memory_is_one_line_that_names_the_flags(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--batch-size", 10**12, "--steps", 1, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: out of memory: lower --batch-size, or the model's --width or --depth"]


def test_a_blank_line_at_the_end_of_log_csv_does_not_block_a_resume(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 2, cwd=tmp_path).returncode == 0
    with open(tmp_path / "out" / "log.csv", "a") as log:
        log.write("\n")  # as an editor leaves it
    result = run("train.py", "--resume", "--steps", 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    steps = [line.split(",")[0] for line in (tmp_path / "out" / "log.csv").read_text().splitlines()]
    assert steps == ["step", "1", "2", "3"]


def test_a_loss_gone_nan_before_any_checkpoint_says_so(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--steps", 5, "--warmup", 0, "--lr", 1e39, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stopped, and no checkpoint was saved yet" in result.stderr and not (tmp_path / "out" / "ckpt.pt").exists()


def test_a_cpu_only_torch_built_for_cuda_says_nothing_of_cuda():
    """Such a torch logs "No CUDA runtime is found, using CUDA_HOME=..." when it compiles: nothing a CPU user
    can act on. Other warnings of that logger still show."""
    code = ("import logging, machine; log = logging.getLogger('torch.utils.cpp_extension'); "
            "log.warning(\"No CUDA runtime is found, using CUDA_HOME='%s'\", '/usr/local'); log.warning('other')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "CUDA" not in result.stderr and result.stderr.endswith("other\n")
