"""Tests for train.py's time budget (--minutes), run as a user runs it: a run ends by the clock, its
last picture and checkpoint included, with the learning rate at the end of its cosine; a process
frozen past its budget stops at its next log line; a resume counts the minutes before; under torchrun
both ranks stop at the same step. Run: python -m pytest -q tests/test_budget.py"""
import signal
import time

import pytest

from conftest import DDP, TINY, interrupted, load, run


def learning_rates(stdout):
    return [float(line.split("| lr ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("step ")]


def test_a_budget_ends_on_time_with_the_learning_rate_at_its_floor(tmp_path, cats):
    """A 12 s budget whose pictures (about 1 s each here) are measured early, at step 100: the run ends
    within it, and the learning rate comes down to about its floor."""
    start = time.time()
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.2, "--warmup", 5, "--lr", 0.01,
                 "--sample-every", 100, cwd=tmp_path)
    took = time.time() - start
    assert result.returncode == 0, result.stderr
    assert "training dynamic head for 0.2 min, batch 4" in result.stdout and ", compiled" not in result.stdout
    saved = load(tmp_path / "out" / "ckpt.pt")
    assert 7 < saved["seconds"] <= 12 and took <= 12 + 2  # the margin: pictures of about 1 s on a slow CPU
    assert (tmp_path / "out" / f"samples_{saved['step']:06d}.png").exists()
    rates = learning_rates(result.stdout)
    assert rates[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01], rel=0.002)  # the warm-up, by steps
    assert rates[5:] == sorted(rates[5:], reverse=True)  # then the cosine, by the clock,
    assert rates[-1] == pytest.approx(0.001, abs=5e-4)  # down to about --min-lr at the end
    assert f"step {saved['step']} | " in result.stdout and "/0.2 min" in result.stdout


def test_a_budget_spent_while_frozen_ends_at_the_next_log_line(tmp_path, cats):
    """Frozen (SIGSTOP) for longer than its 9 s budget has left: the run ends at its next log line,
    with its pictures and checkpoint."""
    _, rest = interrupted("train.py", *TINY, "--data", cats, "--minutes", 0.15, cwd=tmp_path,
                          at="step 20 ", signals=[signal.SIGSTOP, signal.SIGCONT], freeze=10)
    assert rest.returncode == 0, rest.stderr
    saved = load(tmp_path / "out" / "ckpt.pt")
    assert saved["step"] < 20 + 30 and saved["seconds"] > 9  # a few steps after the freeze, not a full budget's
    assert (tmp_path / "out" / f"samples_{saved['step']:06d}.png").exists()


def test_a_resumed_budget_counts_the_minutes_before(tmp_path, cats):
    """Stopped with Ctrl-C, then resumed: both runs together end within the budget, on one clock; a spent
    budget has nothing left to train until --minutes grows, and --steps turns it into a run of steps."""
    _, first = interrupted("train.py", *TINY, "--data", cats, "--minutes", 0.15, cwd=tmp_path, at="step 20 ")
    assert first.returncode == 130
    stopped = load(tmp_path / "out" / "ckpt.pt")
    result = run("train.py", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming from step {stopped['step']}" in result.stdout and "for 0.15 min" in result.stdout
    final = load(tmp_path / "out" / "ckpt.pt")
    # Each resumed run's last picture (about 1 s) is its first, so no margin had its cost yet
    assert stopped["seconds"] < final["seconds"] <= 9 + 2
    minutes = [float(row.split(",")[-1]) for row in (tmp_path / "out" / "log.csv").read_text().splitlines()[1:]]
    assert minutes == sorted(minutes) and minutes[-1] <= 0.15 + 0.03  # one clock over both runs

    spent = run("train.py", "--resume", cwd=tmp_path)
    assert spent.returncode == 1 and spent.stderr.splitlines() == [
        f"error: out/ckpt.pt is at step {final['step']} of {final['step']}: nothing to train; give a larger --minutes "
        "to go on"]
    longer = run("train.py", "--resume", "--minutes", 0.25, cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert final["seconds"] + 3 < load(tmp_path / "out" / "ckpt.pt")["seconds"] <= 15 + 2
    steps = load(tmp_path / "out" / "ckpt.pt")["step"] + 5
    by_steps = run("train.py", "--resume", "--steps", steps, cwd=tmp_path)
    assert by_steps.returncode == 0, by_steps.stderr
    assert f"for {steps} steps, " in by_steps.stdout and f"step {steps}/{steps} |" in by_steps.stdout


def test_a_budget_under_ddp_ends_at_the_same_step_on_both_ranks(tmp_path, cats):
    """Rank 0's clock, shared at each log line, decides for both (a rank that stopped alone would leave the
    other waiting for it, and the run would hang); rank 0 alone logs and saves."""
    # No picture or checkpoint before the end, however many steps a fast CPU runs in the 6 seconds
    result = run("train.py", *TINY, "--data", cats, "--minutes", 0.1, "--sample-every", 10**6, "--save-every", 10**6,
                 cwd=tmp_path, launcher=DDP)
    assert result.returncode == 0, result.stderr
    saved = load(tmp_path / "out" / "ckpt.pt")
    # The last picture (about 1 s) is the first, so no margin had its cost yet
    assert result.stdout.count("saved out/ckpt.pt") == 1 and 4 < saved["seconds"] <= 6 + 2
    assert len(saved["generators"]) == 2
