"""Tests for sample.py: its sampler's dtypes, and the command run as a user runs it, on checkpoints of
models small enough that each command takes seconds (conftest.py). Run: python -m pytest -q tests/test_sample.py"""

import pytest
import torch

from conftest import TINY, interrupted, run
from data import image_grid, toy_cats
from model import Config, LUTTransformer, sample
from atomic import save_atomically
from checkpoint import checkpoint
from sample import generate

# train.py's settings as a hand-made checkpoint records them: its data folder, seeds, t and dtype
TRAIN_ARGS = {"data": "train", "seed": 0, "t_sampling": "logit-normal", "dtype": "fp32", "compile": False}
GENERATORS = [torch.Generator().get_state()]  # one process's random stream


def test_sample_dtype_fp32_is_the_plain_path_and_bf16_stays_close():
    torch.manual_seed(0)
    model = LUTTransformer(Config(width=32, depth=1, heads=2)).eval()
    for parameter in model.parameters():  # away from the zero-initialised scores, which paint plain grey
        parameter.data.normal_(0, 0.3)
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    cpu = torch.device("cpu")
    fp32 = generate(model, 2, 3, 5, cpu, "fp32", "logit-normal")
    bf16 = generate(model, 2, 3, 5, cpu, "bf16", "logit-normal")
    assert torch.equal(fp32, sample(model, noise, 3, "logit-normal"))  # the same noise, no autocast
    guide = LUTTransformer(Config(width=32, depth=1, heads=2)).eval()
    guided = generate(model, 2, 3, 5, cpu, "fp32", "logit-normal", guide=guide)
    assert torch.equal(guided, sample(model, noise, 3, "logit-normal", guide=guide)) and not torch.equal(guided, fp32)
    assert 0 < (bf16 - fp32).abs().mean() < 0.05 * fp32.abs().mean()


def test_gif_frames_keep_16_images_a_step_from_noise_to_the_samples():
    torch.manual_seed(0)
    model = LUTTransformer(Config(width=32, depth=1, heads=2)).eval()
    frames = []
    images = generate(model, 20, 3, 5, torch.device("cpu"), "fp32", "logit-normal", frames)
    noise = torch.randn(20, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert len(frames) == 1 + 3 and all(frame.shape == (16, 3, 64, 64) for frame in frames)
    assert torch.equal(frames[0], noise[:16]) and torch.equal(frames[-1], images[:16])
    assert all(frame.untyped_storage().nbytes() == frame.nbytes for frame in frames)  # copies, not views of x


def test_compare_checks_its_folders_before_sampling(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
    three = tmp_path / "three"
    three.mkdir()
    for picture in sorted(cats.glob("*.png"))[:3]:
        (three / picture.name).write_bytes(picture.read_bytes())
    empty = tmp_path / "empty"  # the training images are read after the real ones pass, so never here
    empty.mkdir()
    result = run("sample.py", "out/ckpt.pt", "--compare", three, "--train-data", empty, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"error: --compare needs at least 4 real images; {three} has 3"
    result = run("sample.py", "out/ckpt.pt", "--compare", cats, "--n", 5, cwd=tmp_path)  # 8 cats: 4 at most
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        f"error: --n 5: the SWD floor needs twice as many real images, and {cats} has 8; give --n 4 or fewer")
    result = run("sample.py", "out/ckpt.pt", "--compare", "toy", cwd=tmp_path)  # cartoons judge no photo model
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        f"error: --compare toy: this model was trained on {cats}, not on toy cats, and the figures need real images "
        f"like its own: give --compare a folder of faces it never saw")
    assert not (tmp_path / "samples.png").exists()  # each stopped before sampling


@pytest.mark.parametrize("content,message", [(b"", "bad.pt is empty"),
                                             (b"not a checkpoint", "bad.pt is not a checkpoint written by train.py"),
                                             (None, "cannot read bad.pt as a checkpoint")])
def test_sample_rejects_bad_checkpoints(tmp_path, cats, content, message):
    if content is None:  # a real checkpoint, cut in half
        assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
        whole = (tmp_path / "out" / "ckpt.pt").read_bytes()
        content = whole[:len(whole) // 2]
    (tmp_path / "bad.pt").write_bytes(content)
    result = run("sample.py", "bad.pt", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}") and "Traceback" not in result.stderr


def test_compare_cli(tmp_path):
    """sample.py --compare end to end, on an untrained model: it must not pass for a cat painter."""
    for name, seed in [("train", 0), ("real", 1)]:
        (tmp_path / name).mkdir()
        for i, image in enumerate(toy_cats(16, seed)):
            image_grid(image[None].float() / 127.5 - 1).save(tmp_path / name / f"{i}.png")
    torch.manual_seed(0)
    model = LUTTransformer(Config(lut="softmax", width=32, depth=1, heads=2, dict_size=8, static_tokens=0))
    saved = checkpoint(model, model, None, torch.optim.AdamW(model.parameters()), GENERATORS, 0, 0.0,
                       TRAIN_ARGS)
    del saved["guide"]  # as in a checkpoint from before the guide
    save_atomically(saved, tmp_path / "ckpt.pt")
    result = run("sample.py", "ckpt.pt", "--compare", "real", "--steps", 2, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "samples are compared" not in result.stdout  # n is half the 16 real images: every sample is compared
    lines = result.stdout.splitlines()
    ratio = [line for line in lines if line.startswith("ratio")][0]
    assert float(ratio.split()[-1]) > 2  # untrained samples are far from cats, whatever their floor
    seams = [line for line in lines if line.startswith("seam ratio")][0].split()
    assert seams[-4] == "samples" and seams[-2] == "real" and 0.8 < float(seams[-1]) < 1.4  # toy cats show no grid
    assert "8 vs 8 images" in result.stdout and lines[-1].strip() == "no sign of copying"
    assert "step 0, no guide in it: sampled without guidance" in lines[0]
    (tmp_path / "train").rename(tmp_path / "moved")
    result = run("sample.py", "ckpt.pt", "--compare", "real", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == ["error: the copying check reads the training "
                                                                     "images, train, which is no folder from here: "
                                                                     "give --train-data DIR"]


@pytest.mark.parametrize("lut", ["softmax", "tanh"])
def test_the_guide_is_on_by_default_except_for_softmax(tmp_path, lut):
    """sample.py guides every head but softmax (whose garish tiles the guide multiplies) unless --guidance says."""
    torch.manual_seed(0)
    model, guide = (LUTTransformer(Config(lut=lut, width=32, depth=1, heads=2, dict_size=8, static_tokens=0))
                    for _ in range(2))
    for parameter in [*model.parameters(), *guide.parameters()]:  # away from the zero-initialised scores
        parameter.data.normal_(0, 0.3)
    saved = checkpoint(model, model, guide, torch.optim.AdamW(model.parameters()), GENERATORS, 0, 0.0,
                       TRAIN_ARGS)
    save_atomically(saved, tmp_path / "ckpt.pt")
    grids = {}
    for name, flags in [("default", []), ("unguided", ["--guidance", 1]), ("guided", ["--guidance", 1.5])]:
        result = run("sample.py", "ckpt.pt", "--n", 2, "--steps", 3, "--device", "cpu", "--dtype", "fp32",
                     "--out", f"{name}.png", *flags, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        grids[name] = (tmp_path / f"{name}.png").read_bytes()
    assert grids["unguided"] != grids["guided"]
    assert grids["default"] == grids["unguided" if lut == "softmax" else "guided"]


def test_ctrl_c_while_sampling_stops_in_one_line(tmp_path, cats):
    assert run("train.py", *TINY, "--data", cats, "--steps", 1, cwd=tmp_path).returncode == 0
    # 100 steps: chunks slow enough that Ctrl-C lands before the last one, however late this reads the line
    _, result = interrupted("sample.py", "out/ckpt.pt", "--n", 1024, "--steps", 100, cwd=tmp_path,
                            at="sampled 256/1024")  # the first of 4 chunks
    err = result.stderr
    assert result.returncode == 130 and err.splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert not (tmp_path / "samples.png").exists()


def test_paint_takes_a_patch_apart_into_entries_that_add_up_to_it(tmp_path):
    """--paint: each row's patch is its largest weighted entries plus the rest, adding up to the patch the head
    painted (against a slow loop over the entries); the picture has a row for each of 4 images."""
    from PIL import Image
    from logbook import PAINTED_PATCH, TERMS, terms_of
    from lut import apply_lut, patchify
    torch.manual_seed(0)
    weights, luts = torch.randn(4, 64, 16).tanh(), torch.randn(4, 16, 3, 8, 8)  # a dynamic head's: a LUT per image
    terms, rest, w, top = terms_of(weights[1], luts[1])
    slow = sum(weights[1, PAINTED_PATCH, k] * luts[1, k] for k in range(16))
    assert torch.allclose(terms.sum(0) + rest, slow, atol=1e-5)
    assert torch.allclose(patchify(apply_lut(weights, luts))[1, PAINTED_PATCH], slow, atol=1e-5)
    assert len(terms) == TERMS and w.abs().tolist() == sorted(weights[1, PAINTED_PATCH].abs().tolist())[::-1][:TERMS]
    model = LUTTransformer(Config(width=32, depth=1, heads=2))
    for parameter in model.parameters():  # away from the zero-initialised scores, which paint plain grey
        parameter.data.normal_(0, 0.3)
    save_atomically(checkpoint(model, model, None, torch.optim.AdamW(model.parameters()), GENERATORS, 0, 0.0,
                               TRAIN_ARGS), tmp_path / "ckpt.pt")
    result = run("sample.py", "ckpt.pt", "--n", 6, "--steps", 2, "--device", "cpu", "--paint", "paint.png", cwd=tmp_path)
    assert result.returncode == 0 and "wrote paint.png" in result.stdout, result.stderr
    rows = Image.open(tmp_path / "paint.png").convert("RGB")
    height = 12 + 8 * (8 * 3 + 1) - 1 + 4 * 3  # the labels, the LUT's 8 rows of entries 3x as large, the gap
    assert rows.height == 4 * height and rows.width > 64 * 3 + 8 * 12 * (TERMS + 2)
