"""Tests for train.py, run as a user runs it: in subprocesses, on the CPU, with a model small enough
that each command takes seconds (conftest.py). Run: python -m pytest -q tests/test_train.py"""
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from conftest import DDP, ROOT, TINY, interrupted, load, run, run_with_full_disk


def test_train_then_sample(tmp_path, cats):
    result = run("train.py", *TINY, "--steps", 3, "--data", cats, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "step 3/3 | loss" in result.stdout
    assert f"warning: only 8 images in {cats}; the model will memorise them" in result.stdout
    checkpoint = load(tmp_path / "out" / "ckpt.pt")
    assert checkpoint["step"] == 3 and checkpoint["config"]["width"] == 32
    assert (tmp_path / "out" / "samples_000003.png").exists() and (tmp_path / "out" / "lut.png").exists()

    result = run("sample.py", "out/ckpt.pt", "--n", 4, "--steps", 3, "--gif", "--png-dir", "pngs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from PIL import Image
    assert Image.open(tmp_path / "samples.png").size == (4 * 128 + 3 * 2, 128)  # 4 images, 2x, 2-pixel gaps
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"{i:05d}.png" for i in range(4)]
    assert Image.open(tmp_path / "pngs" / "00000.png").size == (64, 64)
    assert Image.open(tmp_path / "samples.gif").n_frames == 1 + 3  # the noise, then 3 steps


def losses(stdout):
    """{step: the logged loss}"""
    return {line.split()[1]: line.split("| loss ")[1].split()[0] for line in stdout.splitlines() if "| loss " in line}


def test_full_disk_keeps_the_checkpoint_and_resume_is_exact(tmp_path, cats):
    # The warm-up spans the resume point; with --min-lr 1 the rate after it does not depend on --steps.
    common = [*TINY, "--data", cats, "--lut", "tanh", "--warmup", 4, "--min-lr", 1, "--steps", 6]
    one_go = run("train.py", *common, "--out", "one_go", cwd=tmp_path)
    assert one_go.returncode == 0, one_go.stderr
    # The checkpoint of step 3 is written; at step 6 the disk is full.
    result = run_with_full_disk("ckpt.pt", 2, "train.py", *common, "--save-every", 3, "--out", "resumed", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == ("error: cannot write to resumed at step 6: No space left on device; "
                                              "stopped, and resumed/ckpt.pt is intact, as it was last saved. Free "
                                              "some space, then continue with --resume")
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [
        ".lock", "ckpt.pt", "gram.png", "log.csv", "loss.png", "lut.csv", "lut.png", "progress.gif",
        "samples_000006.png"]
    assert load(tmp_path / "resumed" / "ckpt.pt")["step"] == 3
    result = run("train.py", "--resume", "--out", "resumed", "--log-every", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming from step 3" in result.stdout
    assert losses(result.stdout) == {k: v for k, v in losses(one_go.stdout).items() if k > "3/6"}
    a, b = load(tmp_path / "one_go" / "ckpt.pt"), load(tmp_path / "resumed" / "ckpt.pt")
    assert b["step"] == 6
    for part in ("model", "ema"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), (part, name)


def test_the_guide_is_the_ema_a_third_into_the_run_and_a_resume_keeps_it(tmp_path, cats):
    # A third of 6 steps: the guide is taken after step 2, whose checkpoint the full disk of step 4 leaves;
    # the resumed run must keep that guide, not take a new one.
    flags = [*TINY, "--data", cats, "--steps", 6, "--warmup", 0, "--save-every", 2]  # a third of the cosine
    assert run_with_full_disk("ckpt.pt", 2, "train.py", *flags, cwd=tmp_path).returncode == 1
    third = load(tmp_path / "out" / "ckpt.pt")
    assert third["step"] == 2 and all(torch.equal(third["ema"][k], v) for k, v in third["guide"].items())
    assert run("train.py", "--resume", cwd=tmp_path).returncode == 0
    end = load(tmp_path / "out" / "ckpt.pt")
    assert end["step"] == 6 and all(torch.equal(third["guide"][k], v) for k, v in end["guide"].items())
    assert not all(torch.equal(end["ema"][k], v) for k, v in end["guide"].items())  # the EMA went on


def test_a_csv_row_cut_short_is_dropped_at_a_resume(tmp_path):
    from logbook import LOG_COLUMNS, keep_up_to, read_csv
    whole, cut = "1,0.5,0.1,0.1,0.1,0.1,0.001,100,0.1\r\n", "2,0.4,0.1,0.1,0.1,0.1,0.001,100,0.2"  # minutes cut
    (tmp_path / "log.csv").write_text(",".join(LOG_COLUMNS) + "\r\n" + whole + cut, newline="")
    keep_up_to(tmp_path, 5)
    assert read_csv(tmp_path / "log.csv") == [LOG_COLUMNS, whole.strip().split(",")]


def test_full_disk_for_a_picture_stops_cleanly(tmp_path, cats):
    result = run_with_full_disk("lut.png", 1, "train.py", *TINY, "--data", cats, "--steps", 4, "--save-every", 2,
                                "--sample-every", 3, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("error:") == 1
    assert result.stderr.splitlines()[-1].startswith("error: cannot write to out at step 3: No space left on device; "
                                                     "stopped, and out/ckpt.pt is intact")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".lock", "ckpt.pt", "log.csv", "lut.csv", "samples_000003.png"]
    assert load(tmp_path / "out" / "ckpt.pt")["step"] == 2


@pytest.mark.parametrize("name,nth,flags,step,error,problem,fix", [
    ("log.csv", 1, ["--steps", 4], 0, "ENOSPC", "No space left on device", "Free some space"),  # before step 1
    ("log.csv", 3, ["--steps", 4], 2, "ENOSPC", "No space left on device", "Free some space"),  # a row per step
    ("log.csv", 3, ["--steps", 4], 2, "EACCES", "Permission denied", "Fix that"),  # not the disk: no advice on space
])
def test_a_failed_write_of_any_file_stops_in_one_line(tmp_path, cats, name, nth, flags, step, error, problem, fix):
    result = run_with_full_disk(name, nth, "train.py", *TINY, "--data", cats, *flags, cwd=tmp_path, error=error)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (f"error: cannot write to out at step {step}: {problem}; stopped, and "
                                              f"no checkpoint was saved yet. {fix}, then start again")


def test_ctrl_c_before_training_stops_in_one_line(tmp_path):
    # Without --data the run first draws 10,000 toy cats (seconds): the signal comes while it does,
    # after the "preset:" line that a run without --preset prints first.
    _, result = interrupted("train.py", *TINY[2:], "--steps", 1, cwd=tmp_path, at="preset:")
    err = result.stderr
    assert result.returncode == 130
    assert err.splitlines()[-1] == "interrupted before the first step: nothing to save" and "Traceback" not in err


def test_ctrl_c_saves_a_loadable_checkpoint_after_that_steps_pictures(tmp_path, cats):
    _, result = interrupted("train.py", *TINY, "--data", cats, "--steps", 100000, "--sample-every", 1, cwd=tmp_path,
                            at="step 2/")  # training under way
    assert result.returncode == 130
    assert "interrupted: saving and stopping; continue with: python train.py --resume\n" in result.stdout
    step = load(tmp_path / "out" / "ckpt.pt")["step"]
    assert 2 <= step < 100000
    # A resume starts after this step: its pictures are drawn before stopping, or they never would be.
    assert (tmp_path / "out" / f"samples_{step:06d}.png").exists()
    assert (tmp_path / "out" / "lut.csv").read_text().splitlines()[-1].split(",")[0] == str(step)


def test_a_second_ctrl_c_quits_at_once_in_one_line(tmp_path, cats):
    # The first Ctrl-C says at once what comes; the save waits for the next log line, here far away.
    _, result = interrupted("train.py", *TINY, "--data", cats, "--steps", 100000, "--log-every", 100000,
                            "--save-every", 50, cwd=tmp_path, at="saved", again_at="Ctrl-C: saving and stopping")
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == ("interrupted again: stopped without saving; "
                                              "continue from step 50 with: python train.py --resume")
    assert load(tmp_path / "out" / "ckpt.pt")["step"] == 50
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_ctrl_c_in_the_last_interval_ends_the_run_as_planned(tmp_path, cats):
    # The next log step is the last: the run finishes, with its final pictures, rather than stopping there
    # without them (and a resume would have nothing left to train).
    _, result = interrupted("train.py", *TINY, "--data", cats, "--steps", 300, "--log-every", 150, cwd=tmp_path,
                            at="step 150/")
    assert result.returncode == 0 and "interrupted" not in result.stdout
    assert load(tmp_path / "out" / "ckpt.pt")["step"] == 300
    assert (tmp_path / "out" / "samples_000300.png").exists()


@pytest.mark.parametrize("flags,message", [
    (["--lut", "dynamic", "--static-tokens", "0"], "static token"),
    (["--lut", "sigmoid"], "invalid choice: 'sigmoid'"),
    (["--heads", "3"], "divisible"),
    (["--width", "30"], "width 30 must be divisible by heads 2 and by 4"),  # 4: the 2D position code
    (["--dict-size", "1"], "argument --dict-size: 1 is not an integer >= 2"),  # no Gram penalty of one entry
    (["--data", "no/such/folder"], "no folder no/such/folder; to fetch real cat faces into it: python data.py "
                                   "--download no/such/folder"),
    (["--resume"], "no checkpoint"),
    (["--min-lr", "2"], "argument --min-lr: 2 is not a number from 0 to 1"),
    (["--minutes", "5"], "--steps or --minutes, not both"),
    (["--device", "gpu"], "argument --device: gpu is not a device: give cpu, cuda, cuda:N or mps"),
])
def test_bad_flags_give_one_line_errors(tmp_path, cats, flags, message):
    result = run("train.py", *TINY, "--steps", 1, *flags, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_resume_keeps_its_dtype_unless_told(tmp_path, cats):
    # By default a resume keeps the run's dtype (fp32 here, though this CPU may run bf16 natively); --dtype
    # may change it, as for a bf16 run moved to a CPU that emulates bf16, where it would take hours.
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, "--dtype", "fp32", cwd=tmp_path).returncode == 0
    result = run("train.py", "--resume", "--steps", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "for 2 steps, batch 4, fp32" in result.stdout
    result = run("train.py", "--resume", "--steps", 3, "--dtype", "bf16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "for 3 steps, batch 4, bf16" in result.stdout and "step 3/3" in result.stdout
    assert load(tmp_path / "out" / "ckpt.pt")["args"]["dtype"] == "bf16"


def test_a_resume_keeps_the_intervals_unless_told(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, "--sample-every", 2, "--log-every", 2,
               cwd=tmp_path).returncode == 0
    result = run("train.py", "--resume", "--steps", 5, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line.split(" |")[0] for line in result.stdout.splitlines() if line.startswith("step ")] == [
        "step 2/5", "step 4/5", "step 5/5"]
    result = run("train.py", "--resume", "--steps", 8, "--sample-every", 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("samples_*.png")) == [
        f"samples_{step:06d}.png" for step in (1, 2, 4, 5, 6, 8)]


def test_a_t_bin_without_images_is_logged_as_missing_not_as_zero(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--steps", 3, "--batch-size", 1, cwd=tmp_path)  # one t a step
    assert result.returncode == 0, result.stderr
    by_t = [line.split("| by t ")[1].split(" |")[0].split() for line in result.stdout.splitlines() if "| by t" in line]
    assert len(by_t) == 3 and all(bins.count("-") == 3 for bins in by_t)
    rows = (tmp_path / "out" / "log.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[2:6].count("nan") == 3 for row in rows)
    assert (tmp_path / "out" / "loss.png").exists()


def test_learning_rate_warms_up_then_follows_a_cosine_to_min_lr(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--steps", 6, "--warmup", 2, "--lr", 0.01, "--min-lr", 0.1,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logged = [float(line.split("| lr ")[1].split()[0]) for line in result.stdout.splitlines() if "| lr " in line]
    cosine = [0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 3))) for k in range(4)]  # steps 3..6
    assert logged == pytest.approx([0.005, 0.01, *cosine], rel=0.002)  # printed to 3 digits
    assert logged[-1] == pytest.approx(0.001)


def test_compile_trains_as_the_eager_model_does_and_needs_a_cpp_compiler(tmp_path, cats):
    """--compile: the same losses as the plain model (fp32, same seed), also with the CPU's vector code
    held to AVX2, as on most laptops; a long budget is compiled by default there too, and a resume as
    its run was. Without a C++ compiler torch.compile cannot work on a CPU: then --compile stops in one
    line before training."""
    # Inductor's cache is not keyed on ATEN_CPU_CAPABILITY: AVX-512 kernels cached by the run before,
    # rebuilt for AVX2, would write past their buffers. A real AVX2 CPU never has those, so a fresh cache.
    avx2 = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "avx2-cache")}
    losses = {}
    for name, flag, env in [("compiled", "--compile", None), ("plain", "--no-compile", None),
                            ("compiled, AVX2", "--compile", avx2)]:
        result = run("train.py", *TINY, "--data", cats, "--steps", 3, "--dtype", "fp32", flag, "--out", name,
                     cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert (", compiled, on cpu" in result.stdout) == (flag == "--compile")
        losses[name] = [float(x) for x in re.findall(r"\| loss ([\d.]+) \|", result.stdout)]
    assert len(losses["plain"]) == 3
    assert losses["compiled"] == pytest.approx(losses["plain"], abs=2e-4)  # printed to 4 decimals
    assert losses["compiled, AVX2"] == pytest.approx(losses["plain"], abs=2e-4)

    # A budget of 10 minutes is compiled by default, on an AVX2 CPU too (compiling was once off there).
    printed, _ = interrupted("train.py", *TINY, "--data", cats, "--minutes", 10, cwd=tmp_path, env=avx2,
                             at="training ", signals=[signal.SIGKILL])
    line = printed.splitlines()[-1]
    assert "10 min," in line and "compiled" in line
    for name in "compiled", "plain":  # a resume compiles as the run did, whatever its budget
        printed, _ = interrupted("train.py", "--resume", "--steps", 4, "--out", name, cwd=tmp_path, at="training ",
                                 signals=[signal.SIGKILL])
        assert ("compiled" in printed.splitlines()[-1]) == (name == "compiled")

    no_compiler = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    result = run("train.py", *TINY, "--steps", 1, "--compile", cwd=tmp_path, env=no_compiler)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: --compile: torch.compile does not work here (" in result.stderr and "drop --compile" in result.stderr


def test_resume_refuses_another_variant_and_a_finished_run(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--lut", "dynamic", "--steps", 1, cwd=tmp_path).returncode == 0
    for flags, message in [(["--lut", "softmax"], "was trained with --lut dynamic, not with --lut softmax"),
                           (["--batch-size", "8"], "was trained with --batch-size 4, not with --batch-size 8"),
                           ([], "is at step 1 of 1: nothing to train; give a larger --steps to go on")]:
        result = run("train.py", "--resume", *flags, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [f"error: out/ckpt.pt {message}" + (
            ": drop --" + flags[0][2:] + ", or use another --out for a new run" if flags else "")]


def test_a_new_run_never_overwrites_a_checkpoint(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
    saved = (tmp_path / "out" / "ckpt.pt").read_bytes()
    result = run("train.py", *TINY, "--data", cats, "--steps", 2, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: out/ckpt.pt holds an earlier run: continue it with --resume, or give a new run another --out"]
    assert (tmp_path / "out" / "ckpt.pt").read_bytes() == saved


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, cats):
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--data", str(cats), "--steps", "100000",
                              "--save-every", "100000"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    for line in first.stdout:  # under way, with no checkpoint yet that would refuse a new run
        if line.startswith("step 2/"):
            break
    second = run("train.py", *TINY, "--data", cats, "--steps", 2, cwd=tmp_path)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert second.returncode == 1 and second.stderr.splitlines() == [
        "error: another run is training into out: let it finish (or stop it), or give this one another --out"]
    assert first.returncode == 130 and load(tmp_path / "out" / "ckpt.pt")["step"] > 2


def test_resume_elsewhere_names_the_checkpoints_data_folder(tmp_path, cats):
    (tmp_path / "mine").mkdir()
    for picture in cats.glob("*.png"):
        (tmp_path / "mine" / picture.name).write_bytes(picture.read_bytes())
    assert run("train.py", *TINY, "--data", "mine", "--steps", 1, cwd=tmp_path).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    result = run("train.py", "--resume", "--steps", 2, "--out", "../out", cwd=tmp_path / "elsewhere")
    assert result.stderr.splitlines() == [
        "error: ../out/ckpt.pt was trained on mine, which is no folder from here: resume where the run began"]


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 2, "--warmup", 0, cwd=tmp_path).returncode == 0
    # Resumed with a learning rate of 1e39, which overflows fp32: its first step makes the weights infinite
    checkpoint = load(tmp_path / "out" / "ckpt.pt")
    checkpoint["args"].update(lr=1e39, weight_decay=0)  # no weight decay: it would be refused at the start
    torch.save(checkpoint, tmp_path / "out" / "ckpt.pt")
    good = (tmp_path / "out" / "ckpt.pt").read_bytes()
    result = run("train.py", "--resume", "--steps", 5, "--save-every", 1, cwd=tmp_path)
    assert result.returncode == 1
    assert "is intact, as it was last saved" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "ckpt.pt").read_bytes() == good


def test_two_process_ddp_on_gloo(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--steps", 3, cwd=tmp_path, launcher=DDP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("step 3/3") == 1  # rank 0 alone logs
    checkpoint = load(tmp_path / "out" / "ckpt.pt")
    first, second = checkpoint["generators"]
    assert not torch.equal(first, second)  # each rank draws its own batches
    alone = run("train.py", "--resume", "--steps", 4, cwd=tmp_path)  # one process cannot go on with two streams
    assert alone.returncode == 1 and alone.stderr.splitlines() == [
        "error: out/ckpt.pt was trained by 2 process(es), not 1: resume it with as many "
        "(torchrun --standalone --nproc_per_node=2)"]


def test_ddp_failure_on_rank_0_stops_both_ranks(tmp_path, cats):
    # Rank 0 alone writes the checkpoint; the disk is full for the first. Rank 1 must not wait for it.
    result = run_with_full_disk("ckpt.pt", 1, "train.py", *TINY, "--data", cats, "--steps", 1000, "--save-every", 2,
                                cwd=tmp_path, launcher=DDP)
    assert result.returncode != 0
    line = ("error: cannot write to out at step 2: No space left on device; stopped, and no checkpoint was saved "
            "yet. Free some space, then start again")
    assert (result.stdout + result.stderr).count(line) == 1  # in torchrun's report of the failure
    assert "step 3/" not in result.stdout and not list((tmp_path / "out").glob("*.tmp*"))


def printed(stdout, prefix):
    """The numbers in each printed line that starts with prefix, as a list of floats ("-": a t bin
    without images, nan)."""
    number = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?|(?<= )-(?= )"
    return [[math.nan if v == "-" else float(v) for v in re.findall(number, line)]
            for line in stdout.splitlines() if line.startswith(prefix)]


def test_logs_and_pictures_survive_a_resume_without_a_repeated_step(tmp_path, cats):
    """log.csv and lut.csv have one row per printed line, progress.gif one frame per picture step; a run
    that died after logging steps 3 and 4 but before saving them is redone from its step-2 checkpoint."""
    from PIL import Image
    out = tmp_path / "out"
    first = run("train.py", *TINY, "--data", cats, "--steps", 2, "--sample-every", 2, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    saved = (out / "ckpt.pt").read_bytes()
    resume = ["--resume", "--steps", 4, "--log-every", 1, "--sample-every", 2]
    assert run("train.py", *resume, cwd=tmp_path).returncode == 0
    assert Image.open(out / "progress.gif").n_frames == 2
    (out / "ckpt.pt").write_bytes(saved)  # as if the run had died before its last checkpoint
    last = run("train.py", *resume, cwd=tmp_path)
    assert last.returncode == 0, last.stderr

    lines = printed(first.stdout, "step ") + printed(last.stdout, "step ")
    rows = [line.split(",") for line in (out / "log.csv").read_text().splitlines()]
    assert rows[0] == ["step", "loss", "mse_t0-25", "mse_t25-50", "mse_t50-75", "mse_t75-100", "lr", "img_per_s",
                       "minutes"]
    assert [int(row[0]) for row in rows[1:]] == [1, 2, 3, 4]  # each step once, in order
    for row, line in zip(rows[1:], lines):  # step N/4, loss, 4 bins, lr, img/s, minutes, eta
        step, _, loss, *bins, lr, speed, minutes, _ = line
        assert float(row[0]) == step and float(row[1]) == pytest.approx(loss, abs=1e-4)
        assert [float(v) for v in row[2:6]] == pytest.approx(bins, abs=1e-3, nan_ok=True)
        assert float(row[6]) == pytest.approx(lr, rel=5e-3) and float(row[7]) == pytest.approx(speed, abs=0.5)
        assert float(row[8]) == pytest.approx(minutes, abs=0.05)

    lut_lines = printed(first.stdout, "lut: ") + printed(last.stdout, "lut: ")
    lut_rows = [[float(v) for v in line.split(",")] for line in (out / "lut.csv").read_text().splitlines()[1:]]
    assert [row[0] for row in lut_rows] == [2, 4]
    for row, (in_use, K, effective, cos, seams, detail, between) in zip(lut_rows, lut_lines):  # the dynamic head's
        assert K == 64 and row[1:] == pytest.approx([in_use, effective, cos, seams, between, detail], abs=0.06)
        assert 1 <= in_use <= 64 and 1 <= effective <= 64 and seams > 0 and detail >= 0  # 0: flat patches
    assert Image.open(out / "progress.gif").n_frames == 2  # steps 2 and 4, the frame of the lost step 4 gone
    assert Image.open(out / "loss.png").size == (720, 400)

