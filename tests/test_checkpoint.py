"""Tests for checkpoint.py: a round trip of every tensor, one-line errors for every kind of bad
file, and writes that leave the old file whole when they fail. Run: python -m pytest -q tests/test_checkpoint.py"""
import copy

import pytest
import torch

from conftest import small_config
from model import LUTTransformer
from atomic import save_atomically
from checkpoint import checkpoint, load_checkpoint, load_weights


def small_checkpoint(path):
    """A checkpoint of a small tanh model after one step, as train.py writes one; returns the model, the
    EMA model (the model before the step), the guide (another model) and the optimizer."""
    model = LUTTransformer(small_config("tanh"))
    ema, guide = copy.deepcopy(model), LUTTransformer(small_config("tanh"))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3, 64, 64), torch.rand(1))[0].mean().backward()
    optimizer.step()  # an optimizer with state, and a model that differs from the EMA
    args = {"lut": "tanh", "seed": 0, "data": None, "t_sampling": "uniform", "dtype": "fp32", "compile": False}
    save_atomically(checkpoint(model, ema, guide, optimizer, [torch.Generator().get_state()], 7, 12.5, args), path)
    return model, ema, guide, optimizer


def test_checkpoint_round_trip(tmp_path):
    model, ema, guide, optimizer = small_checkpoint(tmp_path / "run" / "ckpt.pt")  # the folder is made
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["ckpt.pt"]  # no temp file left behind
    saved = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert saved["config"] == model.cfg and saved["step"] == 7 and saved["seconds"] == 12.5
    assert saved["args"]["t_sampling"] == "uniform"
    for key, original in [("model", model), ("ema", ema), ("guide", guide)]:
        again = LUTTransformer(saved["config"])
        load_weights(again, saved[key])
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), original.state_dict().values()))
    for a, b in [(model, ema), (model, guide), (ema, guide)]:  # so that no two slots can be swapped
        assert not torch.equal(a.lut_head.lut, b.lut_head.lut)
    again_optimizer = torch.optim.AdamW(again.parameters())
    again_optimizer.load_state_dict(saved["optimizer"])
    for state, saved in zip(again_optimizer.state.values(), optimizer.state.values()):
        assert all(torch.equal(state[name], saved[name]) for name in ("step", "exp_avg", "exp_avg_sq"))
    assert len(again_optimizer.state) == len(list(model.parameters()))


def test_bad_checkpoints_raise_one_line_value_errors(tmp_path, monkeypatch):
    small_checkpoint(tmp_path / "good.pt")
    whole = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    good = torch.load(tmp_path / "good.pt", weights_only=False)
    torch.save({k: v for k, v in good.items() if k != "optimizer"}, tmp_path / "partial.pt")
    torch.save({**good, "config": {**good["config"], "colour": 3}}, tmp_path / "future.pt")
    torch.save({**good, "config": {**good["config"], "heads": 0}}, tmp_path / "no_heads.pt")  # edited by hand
    torch.save({**good, "args": None}, tmp_path / "no_args.pt")
    torch.save({**good, "args": {k: v for k, v in good["args"].items() if k != "t_sampling"}}, tmp_path / "old.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "out").mkdir()
    for name, message in [("missing.pt", "no checkpoint at .*missing.pt; train one first with: python train.py$"),
                          ("run/ckpt.pt", "no checkpoint at .*; train one first with: python train.py --out .*run$"),
                          ("out", "out is a folder: give the checkpoint in it, "),
                          ("half.pt", "cannot read .*; is the file complete"), ("empty.pt", "empty.pt is empty$"),
                          ("text.pt", "text.pt is not a checkpoint written by train.py$"),
                          ("list.pt", "not a checkpoint written by train.py: it holds a list$"),
                          ("partial.pt", r"missing: optimizer\)"), ("future.pt", "cannot build .*colour"),
                          ("no_heads.pt", "cannot build .*heads must be positive"),
                          ("no_args.pt", r"missing: some of its args\)"), ("old.pt", r"missing: some of its args\)")]:
        with pytest.raises(ValueError, match=message) as error:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(error.value)
    (tmp_path / "locked.pt").write_bytes(whole)
    real_open = open  # as root, chmod 000 would not stop the read: the refusal is made up

    def no_permission(file, *args, **kwargs):
        if str(file).endswith("locked.pt"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr("builtins.open", no_permission)
    with pytest.raises(ValueError, match="cannot read .*locked.pt: Permission denied$"):
        load_checkpoint(tmp_path / "locked.pt")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)  # a ckpt.pt here: train.py --out . would write its whole run here, so no hint
    with pytest.raises(ValueError, match="no checkpoint at ckpt.pt; train one first with: python train.py$"):
        load_checkpoint("ckpt.pt")
    model = LUTTransformer(small_config("dynamic"))
    old_dynamic = {**model.state_dict(), "lut_head.to_uv.bias": torch.zeros(48)}  # before the head lost its bias
    with pytest.raises(ValueError, match=r"do not fit .*\(1 tensor differs, e.g. lut_head.to_uv.bias\)") as error:
        load_weights(model, old_dynamic)
    assert "\n" not in str(error.value)
    wider = {**model.state_dict(), "static": torch.zeros(1, 16, 65)}  # a tensor of another shape
    with pytest.raises(ValueError, match=r"1 tensor differs, e.g. static\)"):
        load_weights(model, wider)


def test_save_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    save_atomically({"step": 1}, tmp_path / "ckpt.pt")
    with pytest.raises(Exception):
        save_atomically({"step": 2, "unpicklable": lambda: None}, tmp_path / "ckpt.pt")
    assert torch.load(tmp_path / "ckpt.pt") == {"step": 1}


def test_a_failed_write_names_the_file_not_its_temp_file():
    with pytest.raises(OSError) as error:  # /proc takes no new files, even from root
        save_atomically({"step": 1}, "/proc/lutcats.pt")
    assert error.value.filename == "/proc/lutcats.pt"
