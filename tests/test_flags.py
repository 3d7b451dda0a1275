"""Every numeric flag of every script, given 0, a negative number, nan and inf where each is invalid, must
end the run at parse time with argparse's one line that names the flag, and accept its smallest valid
value. The scripts run in this process (runpy), so no case pays for a fresh start of torch; "--help"
after the flag stops any value that was wrongly accepted before it can train (exit 0: a failure).
Run: python -m pytest -q tests/test_flags.py"""
import re
import runpy
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The smallest valid value of each flag; None where no bound is included (any number above 0). Flags
# with an upper bound give it as (low, high).
FLAGS = {
    "train.py": {"--width": 1, "--depth": 1, "--heads": 1, "--dict-size": 2, "--static-tokens": 0, "--gram": 0,
                 "--edges": 0, "--steps": 1, "--minutes": None, "--batch-size": 1, "--lr": None, "--warmup": 0,
                 "--min-lr": (0, 1), "--weight-decay": 0, "--grad-clip": None, "--ema": (0, 1), "--log-every": 1,
                 "--sample-every": 1, "--save-every": 1, "--seed": (0, 2**32 - 1)},
    "sample.py": {"--n": (1, 99_999),  # --png-dir's names: 5 digits
                  "--steps": (1, 10_000), "--guidance": (0, 5), "--seed": (0, 2**32 - 1)},
    "bench.py": {"--steps": 1, "--warmup": 0, "--sample-steps": 1, "--threads": 1},
    "data.py": {"--parts": (1, 3)},
}
POSITIONAL = {"sample.py": ["ckpt.pt"]}


def cases():
    for script, flags in FLAGS.items():
        for flag, valid in flags.items():
            low, high = valid if isinstance(valid, tuple) else (valid, None)
            bad = ["-1", "nan", "inf", "x"] + (["0"] if low != 0 else []) + ([str(high + 1)] if high else [])
            yield from ((script, flag, value, 2) for value in bad)
            if low is not None:
                yield script, flag, str(low), 0  # the boundary is accepted: on to --help
                if high:
                    yield script, flag, str(high), 0


def run(script, *argv):
    """Exit code and stderr of a script run in this process with these arguments; the script's handlers of
    Ctrl-C and SIGTERM (cli.stop_quietly) are pytest's again afterwards."""
    sys.argv = [script, *POSITIONAL.get(script, []), *argv]
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return exit.value.code


@pytest.mark.parametrize("script,flag,value,code", list(cases()))
def test_numeric_flag(script, flag, value, code, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [])  # restored afterwards
    assert run(script, flag, value, "--help") == code
    if code:
        error = capsys.readouterr().err.splitlines()  # one line: no usage block above it
        assert len(error) == 1 and error[0].startswith(f"{script}: error: argument {flag}: "), error


@pytest.mark.parametrize("script", FLAGS)
def test_every_numeric_flag_is_in_the_table(script):
    source = (ROOT / script).read_text()
    numeric = set(re.findall(r'"(--[a-z-]+)",? (?:metavar="\w+", )?type=(?:cli\.)?(?:number\(|int)', source))
    assert numeric == set(FLAGS[script])


PICTURES = "give a .png, .jpg, .jpeg, .webp, .bmp or .gif file name,"


@pytest.mark.parametrize("script,argv,message", [
    ("train.py", ["--out", "afile/x"], "argument --out: afile/x: afile is a file, not a folder"),
    ("train.py", ["--out", "afile"], "argument --out: afile: afile is a file, not a folder"),
    ("data.py", ["--preview", "nowhere/x.png"], "argument --preview: nowhere/x.png: no folder nowhere"),
    ("data.py", ["--preview", "adir"], "argument --preview: adir is a folder; give a file name"),
    ("data.py", ["--preview", "x.notapicture"], f"argument --preview: x.notapicture: {PICTURES} such as x.png"),
    ("data.py", ["--preview", "x.psd"], f"argument --preview: x.psd: {PICTURES} such as x.png"),  # Pillow reads it
    ("sample.py", ["--out", "x.ico"], f"argument --out: x.ico: {PICTURES} such as x.png"),  # would be shrunk
    ("sample.py", ["--out", ".png"], f"argument --out: .png: {PICTURES} such as samples.png"),  # no name
    ("data.py", ["--download", "afile"], "argument --download: afile: afile is a file, not a folder"),
    ("data.py", ["--data", "afile"], "argument --data: afile is a file, not a folder"),
    ("sample.py", ["--compare", "nowhere"], "argument --compare: no folder nowhere"),
    ("sample.py", ["--train-data", "afile"], "argument --train-data: afile is a file, not a folder"),
    ("sample.py", ["--out", "adir"], "argument --out: adir is a folder; give a file name"),
    ("sample.py", ["--png-dir", "afile"], "argument --png-dir: afile: afile is a file, not a folder"),
    ("sample.py", ["--gif", "--out", "adir/samples.png"],
     "argument --gif: adir/samples.gif is a folder; give a file name "
     "(the GIF's name is --out's, ending .gif)"),
    ("sample.py", ["--gif", "--out", "s.gif"],
     "argument --gif: --out is a .gif, where the GIF would overwrite the grid; give --out a .png"),
    ("sample.py", ["--train-data", "adir"], "argument --train-data: only --compare reads it; add --compare DIR"),
    ("bench.py", ["--json", "nowhere/bench.json"], "argument --json: nowhere/bench.json: no folder nowhere"),
])
def test_bad_paths_name_the_flag_and_the_problem(script, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir" / "samples.gif").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", [])
    # sample.py checks --gif and --train-data after parsing, before any work: no --help to stop it there
    help = [] if script == "sample.py" and argv[0] in ("--gif", "--train-data") else ["--help"]
    assert run(script, *argv, *help) == 2
    assert capsys.readouterr().err.splitlines() == [f"{script}: error: {message}"]
