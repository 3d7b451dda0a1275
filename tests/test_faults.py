"""Faults that real runs meet, each tried as a user meets it: SIGTERM from a scheduler, errors under
torchrun, an output folder inside the data, damaged checkpoints and log files, an output folder or file
that cannot be made, a machine without the memory asked for. Each ends in one line, nothing lost.
Run: python -m pytest -q tests/test_faults.py"""
import argparse
import copy
import errno
import math
import os
import re
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from conftest import DDP, ROOT, TINY, interrupted, load, run, run_with_full_disk
from cli import output_folder


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
    result = run("train.py", *TINY, "--data", cats, "--steps", 5, "--warmup", 0, "--lr", 1e39,
                 "--weight-decay", 0, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stopped, and no checkpoint was saved yet" in result.stderr and not (tmp_path / "out" / "ckpt.pt").exists()


def test_a_cpu_only_torch_built_for_cuda_says_nothing_of_cuda():
    """Such a torch logs "No CUDA runtime is found, using CUDA_HOME=..." when it compiles: nothing a CPU user
    can act on. Other warnings of that logger still show."""
    code = ("import logging, machine; log = logging.getLogger('torch.utils.cpp_extension'); "
            "log.warning(\"No CUDA runtime is found, using CUDA_HOME='%s'\", '/usr/local'); log.warning('other')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "CUDA" not in result.stderr and result.stderr.endswith("other\n")


# ----------------------------------------------------------------------------- signals at start-up, killed writes
@pytest.mark.parametrize("script,line", [("train.py", "interrupted before the first step: nothing to save"),
                                         ("sample.py", "interrupted")])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_torch_loads_ends_in_one_line(tmp_path, script, line, signum):
    """Ctrl-C or SIGTERM in a command's first second, while it imports torch: the line a later one gives, exit code
    130, no traceback. -X importtime says on stderr when each module is loaded: the signal goes at torch's first."""
    process = subprocess.Popen([sys.executable, "-X", "importtime", str(ROOT / script),
                                *(["ckpt.pt"] if script == "sample.py" else [])],
                               cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for printed in process.stderr:
        if re.search(r"\|\s+torch", printed):  # a module of torch is loaded, and torch is not yet
            process.send_signal(signum)
            break
    _, rest = process.communicate(timeout=120)
    errors = [text for text in rest.splitlines() if text and not text.startswith("import time:")]
    assert process.returncode == 130 and errors == [line]


def test_temp_files_that_a_killed_run_left_are_removed_by_the_next(tmp_path, cats):
    """kill -9 during a save leaves ckpt.pt.tmp<pid> (MBs each): the next run in the folder removes such files
    and says so; a file that only looks alike stays."""
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
    (tmp_path / "out" / "ckpt.pt.tmp4242").write_bytes(bytes(2_000_000))
    (tmp_path / "out" / "progress.gif.tmp17").write_bytes(bytes(10))
    (tmp_path / "out" / "notes.tmpfile").write_text("mine")
    result = run("train.py", "--resume", "--steps", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "removed 2 temp files (2.0 MB) in out that a killed run left, e.g. " in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*tmp*")) == ["notes.tmpfile"]


# ----------------------------------------------------------------------------- hand-edited checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory, cats):
    """A checkpoint of a tiny run of 2 steps, as a dict: each test edits a copy."""
    folder = tmp_path_factory.mktemp("trained")
    assert run("train.py", *TINY, "--data", cats, "--steps", 2, cwd=folder).returncode == 0
    return load(folder / "out" / "ckpt.pt")


EDITS = [("ema", None), ("ema", "x"), ("model", None), ("model", {"w": 1}), ("guide", "x"), ("optimizer", None),
         ("generators", None), ("generators", []), ("generators", ["x"]), ("step", "x"), ("step", -1),
         ("seconds", None), ("seconds", float("nan")), ("config", "x")]


@pytest.mark.parametrize("key,value", EDITS)
def test_a_key_that_holds_the_wrong_kind_of_value_is_named(tmp_path, trained, key, value):
    from checkpoint import load_checkpoint
    torch.save({**trained, key: value}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'ckpt.pt'}: '{key}' holds .*; was it edited by hand"):
        load_checkpoint(tmp_path / "ckpt.pt")


def test_hand_edited_checkpoints_are_one_line_in_both_commands(tmp_path, trained, cats):
    """The line names the key, in sample.py and in --resume alike; train.py's settings are checked as its flags
    are; EMA weights that are not finite (a black grid) are refused by both."""
    (tmp_path / "out").mkdir()
    for edit, line in [
        (dict(ema="x"), "out/ckpt.pt: 'ema' holds 'x'; was it edited by hand? Use an earlier checkpoint, or train "
                        "a new one"),
        (dict(ema={k: v.fill_(math.nan) if v.is_floating_point() else v for k, v in copy.deepcopy(trained["ema"])
                   .items()}), "out/ckpt.pt: its EMA weights are not finite (nan or inf), so every sample would be "
                               "black; train a new one"),
    ]:
        torch.save({**trained, **edit}, tmp_path / "out" / "ckpt.pt")
        for command in (["sample.py", "out/ckpt.pt"], ["train.py", "--resume", "--steps", 4]):
            result = run(*command, cwd=tmp_path)
            assert result.returncode == 1 and result.stderr.splitlines() == [f"error: {line}"], command
    for key, value, why in [("log_every", 0, "0 is not an integer >= 1"), ("lr", -1, "-1 is not a number > 0"),
                            ("batch_size", 0, "0 is not an integer >= 1"), ("loss", "y", "not one of x, v")]:
        torch.save({**trained, "args": {**trained["args"], key: value}}, tmp_path / "out" / "ckpt.pt")
        result = run("train.py", "--resume", "--steps", 4, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.splitlines() == [
            f"error: out/ckpt.pt: args '{key}' holds {value!r}: {why}; was it edited by hand? Use an earlier "
            f"checkpoint, or train a new one"]


# ----------------------------------------------------------------------------- bench.py, and small ones
def test_bench_json_on_a_full_disk_is_one_line_and_no_file(tmp_path):
    # The 1st file opened is --json's check (bench.py tries the name before any work), the 2nd the figures
    result = run_with_full_disk("b.json", 2, "bench.py", "--dtype", "fp32", "--lut", "tanh", "--steps", 1, "--warmup",
                                0, "--sample-steps", 1, "--json", "b.json", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: cannot write b.json: No space left on device"]
    assert not list(tmp_path.glob("b.json*"))


@pytest.mark.parametrize("code,line", [
    ("x = 1 / 0\nclass Diffusion:\n    pass\n", "running its definitions raised ZeroDivisionError: division by zero"),
    ("class Diffusion:\n    def __init__(self):\n        raise KeyError('weights')\n",
     "its Diffusion() raised KeyError: 'weights'"),
])
def test_a_reference_that_raises_is_one_line_naming_the_file(tmp_path, code, line):
    (tmp_path / "ref.py").write_text(code)
    result = run("bench.py", "--reference", "ref.py", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [f"error: ref.py: {line}"]


def test_a_weight_decay_that_would_wipe_the_weights_is_refused_at_once(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--weight-decay", "1e12", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: --weight-decay 1e+12 with --lr 0.001 would scale the weights by -1e+09 at every step: give a "
        "--weight-decay below 1000"]


def test_a_huge_image_is_one_line_of_ours_and_is_used(tmp_path, monkeypatch, capsys, recwarn):
    """Pillow warns in two lines of a picture over 89 Mpixels (here the limit is lowered, to keep the test small)."""
    import data
    from PIL import Image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40), "orange").save(tmp_path / "big.png")  # 1,600 pixels: over it, under twice it
    assert isinstance(data.decode(tmp_path / "big.png"), bytes) and not recwarn.list
    assert capsys.readouterr().err == f"note: {tmp_path / 'big.png'} has 0 Mpixels: decoding it takes a while\n"


def test_flat_training_images_give_no_detail_figure(tmp_path):
    """A lone 1x1 image, stretched to 64x64, has no detail: the figure would divide by zero."""
    from PIL import Image
    (tmp_path / "one").mkdir()
    Image.new("RGB", (1, 1), "grey").save(tmp_path / "one" / "dot.png")
    result = run("train.py", *TINY, "--data", "one", "--steps", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"seam ratio [\d.]+, detail -, ", result.stdout)
    assert (tmp_path / "out" / "lut.csv").read_text().splitlines()[1].endswith(",")  # an empty cell, not a number


# ----------------------------------------------------------------------------- compiling by default
@pytest.mark.parametrize("kind,capability,minutes,steps,compiled", [
    ("cuda", "AVX2", None, 10_000, True),  # a plain run on CUDA: the blog preset's 10,000 steps
    ("cuda", "AVX2", None, 500, False),  # too short to earn back compiling
    ("cpu", "AVX512", None, 8_000, True), ("cpu", "AVX2", None, 2_000, True),
    ("cpu", "AVX2", 30, None, True), ("cpu", "AVX2", 5, None, False),
    ("cpu", "DEFAULT", 30, None, False),  # an ARM CPU: not tried
    ("mps", "DEFAULT", 30, None, False), ("mps", "DEFAULT", None, 10_000, False),
])
def test_compiling_by_default_depends_on_the_device_and_the_runs_length(monkeypatch, kind, capability, minutes,
                                                                         steps, compiled):
    import machine
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert machine.compiles_by_default(torch.device(kind), minutes, steps) == compiled
