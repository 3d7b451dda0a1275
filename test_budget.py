"""Tests for train.py's time budget (--minutes), run as a user runs it: the first count, the count fixed
at the end of the warm-up, the checkpoint that keeps it, the warnings, and a machine that slows down
(a process frozen for seconds). Run: python -m pytest -q test_budget.py"""
import re
import signal

import torch

from conftest import DDP, TINY, interrupted, load, run


def test_a_time_budget_fixes_the_steps_once(tmp_path, cats):
    """--minutes times the first steps, then fixes the count; the checkpoint keeps it, and a resume with
    --steps runs that many, timing nothing. (A budget shorter than the timing ends at the timed steps.)"""
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.01, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "step 10/? |" in result.stdout and "budget 0.01 min: 25 steps (" in result.stdout
    assert "warning: 0.01 min is too short for this model here; the run ends after about 0." in result.stdout
    assert ", compiled" not in result.stdout  # too short to pay for compiling
    assert load(tmp_path / "out" / "ckpt.pt")["args"]["steps"] == 25
    assert (tmp_path / "out" / "samples_000025.png").exists() and not (tmp_path / "out" / "ckpt.pt.timing").exists()
    result = run("train.py", "--resume", "--steps", 28, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "budget" not in result.stdout and "step 28/28 |" in result.stdout


def test_a_time_budget_times_again_over_the_warm_up(tmp_path, cats):
    """A first count after 20 timed steps, the final one at the end of the learning-rate warm-up. (An idle
    2-core CPU fits about 300 steps in this budget: the 30-step warm-up ends inside it on a CPU 10x slower.)"""
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.05, "--warmup", 30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = re.findall(r"budget 0.05 min: (\d+) steps \([\d.]+ s per step over (20 steps|steps 5-30),", result.stdout)
    assert [over for _, over in counts] == ["20 steps", "steps 5-30"]
    assert load(tmp_path / "out" / "ckpt.pt")["args"]["steps"] == int(counts[1][0])
    assert f"step {counts[1][0]}/{counts[1][0]} |" in result.stdout
    assert "too short" not in result.stdout and "warm-up:" not in result.stdout  # the budget fits, warm-up and all


def test_a_budget_mostly_spent_warming_up_says_so(tmp_path, cats):
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.05, "--warmup", 1000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"warning: 0.05 min fits \d+ steps here, and the learning rate warms up over 1000: it will "
                     r"never reach --lr; give more --minutes, or a smaller --warmup\n", result.stdout)


def test_a_budget_stopped_before_its_count_is_final_times_again_on_resume(tmp_path, cats):
    """Frozen for 7 s of a 30 s budget, then Ctrl-C, after the first count but inside the warm-up: the
    checkpoint keeps the minutes spent but not the count, and the resumed run times again against what is
    left of the budget; the log's minutes go on from the first run's."""
    printed, first = interrupted("train.py", *TINY, "--data", cats, "--minutes", 0.5, "--warmup", 150, cwd=tmp_path,
                                 at="step 30/",  # after the first count (step 25), long before the final one
                                 signals=[signal.SIGSTOP, signal.SIGCONT, signal.SIGINT], freeze=7)
    assert first.returncode == 130
    first_count = int(re.search(r"budget 0.5 min: (\d+) steps", printed)[1])
    stopped = load(tmp_path / "out" / "ckpt.pt")
    assert 30 <= stopped["step"] < 150 and stopped["args"]["steps"] is None and stopped["seconds"] >= 7
    result = run("train.py", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spent = round(stopped["seconds"] / 60, 1)  # 0.1 or more
    assert float(re.search(r"for 0.5 min \(([\d.]+) min gone\)", result.stdout)[1]) >= spent
    counts = re.findall(r"budget 0.5 min: (\d+) steps \([\d.]+ s per step over (20 steps|steps \d+-\d+), "
                        r"a picture [\d.]+ s, a checkpoint [\d.]+ s, ([\d.]+) min gone\)", result.stdout)
    assert [over for _, over, _ in counts[:2]] == ["20 steps", f"steps {stopped['step'] + 5}-150"]
    assert float(counts[0][2]) >= spent  # the first run's minutes count against the budget,
    final = load(tmp_path / "out" / "ckpt.pt")
    assert final["args"]["steps"] == final["step"] == int(counts[-1][0]) < 0.8 * first_count  # so fewer steps fit
    rows = (tmp_path / "out" / "log.csv").read_text().splitlines()[1:]
    minutes = [float(row.split(",")[-1]) for row in rows]
    assert minutes == sorted(minutes) and minutes[-1] <= 0.5 + 0.1  # one clock over both runs


def test_a_resumed_budget_goes_on_timing_at_checkpoints(tmp_path, cats):
    """Stopped after its count is final, then resumed with pictures 25x as often: the resume keeps the
    count but times again at its checkpoints, as the first run would have, and still ends in time
    (kept at 2,000 or so steps, at about 0.8 s a picture, it would take over a minute)."""
    _, first = interrupted("train.py", *TINY, "--data", cats, "--minutes", 0.2, "--warmup", 10, cwd=tmp_path,
                           at="step 60/")
    stopped = load(tmp_path / "out" / "ckpt.pt")
    assert first.returncode == 130 and stopped["args"]["steps"] > 500
    result = run("train.py", "--resume", "--sample-every", 20, "--save-every", 40, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"for 0.2 min ({stopped['args']['steps']} steps, " in result.stdout
    assert re.search(rf"budget 0.2 min: \d+ steps \([\d.]+ s per step over steps {stopped['step'] + 5}-\d+, ",
                     result.stdout)
    assert load(tmp_path / "out" / "ckpt.pt")["step"] < stopped["args"]["steps"]
    minutes = float((tmp_path / "out" / "log.csv").read_text().splitlines()[-1].split(",")[-1])
    assert minutes <= 0.2 + 0.1


def test_a_budget_run_resumed_with_steps_goes_on_by_steps(tmp_path, cats):
    """After `--resume --steps N` a budget run is a run of N steps, on every later resume too; so is one
    resumed from a checkpoint older than the time it keeps (its budget is unknown)."""
    assert run("train.py", *TINY, "--data", cats, "--minutes", 0.01, cwd=tmp_path).returncode == 0
    _, extended = interrupted("train.py", "--resume", "--steps", 400, cwd=tmp_path, at="step 100/")
    assert extended.returncode == 130 and "budget" not in extended.stdout
    result = run("train.py", "--resume", cwd=tmp_path)  # as the run said to continue
    assert result.returncode == 0, result.stderr
    assert "for 400 steps, " in result.stdout and "budget" not in result.stdout and "step 400/400 |" in result.stdout
    older = load(tmp_path / "out" / "ckpt.pt")
    del older["seconds"]
    older["args"].update(minutes=0.01, steps=430)
    torch.save(older, tmp_path / "out" / "ckpt.pt")
    result = run("train.py", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "for 430 steps, " in result.stdout and "budget" not in result.stdout and "step 430/430 |" in result.stdout


def test_a_time_budget_under_ddp_counts_once_for_all_ranks(tmp_path, cats):
    """Two processes take the same count (the slowest's figures); rank 0 alone says it and saves it. (Each
    process spends seconds of the budget importing torch and joining the group.)"""
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.1, "--warmup", 30, cwd=tmp_path, launcher=DDP)
    assert result.returncode == 0, result.stderr
    counts = re.findall(r"budget 0.1 min: (\d+) steps \([\d.]+ s per step over (20 steps|steps 5-30),", result.stdout)
    assert [over for _, over in counts] == ["20 steps", "steps 5-30"]
    checkpoint = load(tmp_path / "out" / "ckpt.pt")
    assert checkpoint["step"] == checkpoint["args"]["steps"] == int(counts[-1][0]) and checkpoint["seconds"] > 0
    assert result.stdout.count(f"step {counts[-1][0]}/{counts[-1][0]} |") == 1


def frozen_budget_run(tmp_path, cats, minutes, save_every, at_step, seconds):
    """A --minutes run (warm-up 10 steps, no pictures but the last) frozen for `seconds` once it has
    printed step `at_step`: what it printed before the freeze, and after."""
    printed, rest = interrupted("train.py", *TINY, "--data", cats, "--minutes", minutes, "--warmup", 10, "--save-every",
                                save_every, "--sample-every", 100000, cwd=tmp_path, at=f"step {at_step}/",
                                signals=[signal.SIGSTOP, signal.SIGCONT], freeze=seconds)
    assert rest.returncode == 0
    return printed, rest.stdout


def test_a_time_budget_follows_the_machine_when_it_slows_down(tmp_path, cats):
    """The process is frozen for 3 s of a 15 s budget after its count is fixed: at its next checkpoints
    it times again, lowers the count, raises it as the freeze weighs less in the pace, and ends within
    the budget."""
    printed_first, out = frozen_budget_run(tmp_path, cats, 0.25, save_every=20, at_step=60, seconds=3)
    count = re.compile(r"budget 0.25 min: (\d+) steps")
    before, after = ([int(n) for n in count.findall(text)] for text in (printed_first, out))
    # Timed at once, the freeze makes the steps look about 10x dearer: the count falls far. (The final
    # count is not compared with the one before: that came from 40 steps, which a busy machine can slow.)
    assert after[0] < 0.5 * before[-1]
    assert after[0] < after[-1]  # as the freeze weighs less in the pace, steps come back
    assert "too short" not in out  # the budget was not: the machine slowed down
    assert load(tmp_path / "out" / "ckpt.pt")["step"] == after[-1]
    # Each count is fixed before that step's checkpoint, which keeps it: a resume goes on with it.
    for timed_to in re.findall(r"budget 0.25 min: \d+ steps \([\d.]+ s per step over steps \d+-(\d+)", out):
        before_saving, saved, _ = out.partition(f"saved out/ckpt.pt at step {timed_to}\n")
        assert saved and f"over steps 5-{timed_to}, " in before_saving
    last_row = (tmp_path / "out" / "log.csv").read_text().splitlines()[-1].split(",")
    assert int(last_row[0]) == after[-1] and float(last_row[-1]) <= 0.25  # minutes the run took


def test_a_budget_the_machine_spent_elsewhere_ends_at_once_and_says_why(tmp_path, cats):
    """Frozen for longer than its 6 s budget has left: the next checkpoint's timing finds no time for
    more steps, and the run ends there, blaming the machine, not the budget."""
    _, out = frozen_budget_run(tmp_path, cats, 0.1, save_every=40, at_step=30, seconds=7)
    assert re.search(r"budget 0.1 min: 40 steps .*\nwarning: this machine has slowed down; the run ends after about "
                     r"0\.\d min\n", out)
    assert "too short" not in out and load(tmp_path / "out" / "ckpt.pt")["step"] == 40
