"""Tests for the sample-quality figures of sample.py --compare (sliced Wasserstein distance,
copying check) and for bench.py's FLOP formula. CPU, about half a minute. Run: python -m pytest -q"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench import flops_per_image
from data import image_grid, toy_cats
from model import Config, LUTTransformer, save_checkpoint
from sample import blur, copying_check, laplacian_pyramid, swd

N = 64  # images per set: enough for stable figures, small enough for a fast test


@pytest.fixture(scope="module")
def cats():
    """Three disjoint sets of N toy cats, float (N, 3, 64, 64) in [-1, 1]."""
    return (toy_cats(3 * N, seed=7).float() / 127.5 - 1).split(N)


def test_laplacian_pyramid_adds_back_up_to_the_image(cats):
    image = cats[0][:4]
    detail_64, detail_32, low_16 = laplacian_pyramid(image)
    assert low_16.shape == (4, 3, 16, 16) and detail_32.shape == (4, 3, 32, 32)

    def expand(x):  # double the size: zeros between the pixels, then blur with 4x gain
        up = torch.zeros(*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3])
        up[:, :, ::2, ::2] = x
        return blur(up, gain=4.0)

    assert torch.allclose(detail_64 + expand(detail_32 + expand(low_16)), image, atol=1e-5)
    assert detail_64.abs().mean() > 0.01  # cats have fine detail
    flat_64, flat_32, flat_16 = laplacian_pyramid(torch.full((1, 3, 64, 64), 0.3))
    assert flat_64.abs().max() < 1e-6 and flat_32.abs().max() < 1e-6  # a flat image has no detail...
    assert torch.allclose(flat_16, torch.full_like(flat_16, 0.3))  # ...and keeps its level when blurred


def test_swd_real_vs_real_far_below_real_vs_noise_or_blur(cats):
    real_a, real_b, _ = cats
    noise = torch.rand_like(real_a) * 2 - 1
    blurred = F.avg_pool2d(real_b, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)  # lose the finest detail
    real_real, real_noise = swd(real_a, real_b), swd(real_a, noise)  # per level: 64, 32, 16 pixels
    assert all(r < 0.5 * n for r, n in zip(real_real, real_noise)), (real_real, real_noise)
    assert sum(real_real) < 0.25 * sum(real_noise), (real_real, real_noise)
    assert swd(real_a, blurred)[0] > 1.5 * real_real[0]  # the 64-pixel level sees the blur


def test_swd_is_symmetric_deterministic_and_zero_for_identical_sets(cats):
    real_a, real_b = cats[0][:16], cats[1][:16]  # fewer images and neighbourhoods: these hold for any number
    a_b = swd(real_a, real_b, seed=3, per_image=16)
    assert a_b == swd(real_b, real_a, seed=3, per_image=16) == swd(real_a, real_b, seed=3, per_image=16)
    assert a_b != swd(real_a, real_b, seed=4, per_image=16)
    assert max(swd(real_a, real_a.clone(), per_image=16)) < 1e-6 < min(a_b)
    with pytest.raises(ValueError, match="equal size"):
        swd(real_a, real_b[:-1])


def test_copying_check_flags_copies_only(cats):
    train_float, fresh, held_out = cats
    train = ((train_float + 1) * 127.5).round().to(torch.uint8)  # as training data is stored
    copies = copying_check(train_float.flip(3), train, held_out)  # a "model" that returns mirrored training images
    assert copies["closer"] == 1 and copies["nearest_samples"] < 1e-6
    assert copies["verdict"].startswith("possible copying")
    for honest in (fresh, torch.zeros_like(fresh)):  # new cats; grey images, which are near everything in L2
        check = copying_check(honest, train, held_out)
        assert check["closer"] < 0.05 and check["verdict"] == "no sign of copying", check
    # Real images that are training images skip themselves (leave-one-out) instead of scoring 0.
    assert copying_check(fresh, train, train_float)["nearest_real"] > 10


def test_compare_cli(tmp_path):
    """sample.py --compare end to end, on an untrained model: it must not pass for a cat painter."""
    for name, seed in [("train", 0), ("real", 1)]:
        (tmp_path / name).mkdir()
        for i, image in enumerate(toy_cats(16, seed)):
            image_grid(image[None].float() / 127.5 - 1).save(tmp_path / name / f"{i}.png")
    torch.manual_seed(0)
    model = LUTTransformer(Config(lut="softmax", width=32, depth=1, heads=2, dict_size=8, static_tokens=0))
    save_checkpoint(tmp_path / "ckpt.pt", model, model, torch.optim.AdamW(model.parameters()), [], 0,
                    {"data": "train", "seed": 0, "t_sampling": "logit-normal"})
    command = ["sample.py", "ckpt.pt", "--compare", "real", "--n", "8", "--steps", "2", "--device", "cpu"]
    result = subprocess.run([sys.executable, str(Path(__file__).parent / command[0]), *command[1:]],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ratio = [line for line in lines if line.startswith("ratio")][0]
    assert float(ratio.split()[-1]) > 2  # untrained samples are far from cats, whatever their floor
    assert "8 vs 8 images" in result.stdout and lines[-1].strip() == "no sign of copying"


@pytest.mark.parametrize("lut", ["softmax", "tanh", "dynamic"])
def test_flop_formula_matches_a_flop_counter(lut):
    cfg = Config(lut=lut, width=64, depth=2, heads=2, dict_size=16, static_tokens=16 if lut == "dynamic" else 0)
    model = LUTTransformer(cfg)
    formula = flops_per_image(model)
    forward, training = FlopCounterMode(display=False), FlopCounterMode(display=False)
    # The counter misses the CPU's fused attention kernel; the math backend's matmuls it sees.
    with sdpa_kernel(SDPBackend.MATH):
        with forward, torch.no_grad():
            model(torch.randn(2, 3, 64, 64), torch.rand(2))
        with training:
            model(torch.randn(2, 3, 64, 64), torch.rand(2))[0].square().mean().backward()
    assert abs(forward.get_total_flops() / 2 - formula) <= 1e-3 * formula
    # 3x the forward pass, less the patch embedding's input gradient, which nobody needs.
    assert abs(training.get_total_flops() / 2 - 3 * formula) <= 0.05 * 3 * formula
