"""Tests for quality.py, the figures of sample.py --compare: the sliced Wasserstein distance, the
figures that see blur and colour, precision and recall, the copying check and the seam ratio. CPU, about half a minute.
Run: python -m pytest -q tests/test_quality.py"""
import pytest
import torch
import torch.nn.functional as F

from data import toy_cats
from lut import patchify, unpatchify
from quality import (blur, compare, copying_check, detail, laplacian_pyramid, mean_colour, precision_recall, seam_ratio,
                     swd)

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


def test_detail_colour_and_shared_swd_see_blur_and_a_colour_cast_that_swd_cannot(cats):
    """A blurred, a washed-out (lower contrast, brighter) and an unchanged copy of a real set, against
    another real set: the per-set SWD hardly moves for the washed-out copy, as it normalises each set by
    its own statistics; the detail ratio, the colour shift and the shared SWD each move the right way."""
    real_a, real_b, _ = cats
    blurred = blur(real_b)
    washed = 0.7 * real_b + 0.2
    floor = detail(real_a)
    ratio = {name: [d / f for d, f in zip(detail(x), floor)] for name, x in
             [("same", real_b), ("blurred", blurred), ("washed", washed)]}
    assert all(0.85 < r < 1.15 for r in ratio["same"]), ratio
    assert ratio["blurred"][0] < 0.5 * ratio["same"][0] and ratio["blurred"][2] < ratio["same"][2]  # finest first
    assert all(r == pytest.approx(0.7 * s, rel=1e-4) for r, s in zip(ratio["washed"], ratio["same"]))
    shift = [w - r for w, r in zip(mean_colour(washed), mean_colour(real_a))]
    assert all(abs(s) < 0.1 for s in (a - b for a, b in zip(mean_colour(real_b), mean_colour(real_a))))
    assert all(s > 0.1 for s in shift)  # mid-grey cats, lifted by 0.2 and pulled in by 0.7
    plain, shared = swd(real_b, real_a), swd(real_b, real_a, shared=True)
    assert sum(swd(washed, real_a)) < 1.2 * sum(plain)  # blind to it: each set normalised by its own figures
    assert sum(swd(washed, real_a, shared=True)) > 2 * sum(shared)  # sees it
    assert swd(blurred, real_a, shared=True)[0] > 2 * shared[0]
    assert sum(swd(real_a, real_a.clone(), shared=True)) < 1e-5


def test_recall_sees_one_cat_painted_over_and_over_and_precision_sees_noise(cats):
    """Real against real: both high. One cat 64 times (a collapse that SWD mixes with everything else): precision
    stays, recall falls, most at the coarse level where whole faces are compared. Noise: no precision where detail
    is compared."""
    real_precision, real_recall = precision_recall(cats[0], cats[1])
    assert min(real_precision + real_recall) > 0.6
    precision, recall = precision_recall(cats[0][:1].expand(N, -1, -1, -1), cats[1])
    assert min(precision) > 0.6 and recall[2] < 0.1 and recall[1] < 0.3
    precision, _ = precision_recall(torch.randn_like(cats[0]).clamp(-1, 1), cats[1])
    assert precision[0] < 0.05 and precision[1] < 0.05
    assert precision_recall(cats[0], cats[1]) == (real_precision, real_recall)  # the same seed, the same figures


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


def smooth_images(n, seed=0):
    """n smooth random images (n, 3, 64, 64): noise blurred four times with the 5x5 binomial filter."""
    x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    for _ in range(4):
        x = blur(x)
    return x / x.abs().max()


def test_seam_ratio_is_near_one_for_smooth_images_and_large_for_a_patchwork(cats):
    smooth = smooth_images(64)
    ramp = torch.linspace(-1, 1, 64, dtype=torch.float64)
    gradients = (ramp[:, None] + 0.5 * ramp[None, :]).expand(2, 3, 64, 64)  # every neighbour pair differs alike
    assert seam_ratio(smooth) == pytest.approx(1, abs=0.05)
    assert seam_ratio(gradients) == pytest.approx(1.0, rel=1e-9)
    assert seam_ratio(cats[0]) == pytest.approx(1.06, abs=0.1)  # toy cats, like real ones, show no grid
    # A patchwork: patch p of it is patch p of smooth image p, so no two of its patches come from one image.
    patches = patchify(smooth)  # (64 images, 64 patches, 3, 8, 8)
    patchwork = unpatchify(torch.stack([patches[p, p] for p in range(64)])[None])  # (1, 3, 64, 64)
    assert seam_ratio(patchwork) > 10
    assert seam_ratio(patchwork.roll(4, dims=2).roll(4, dims=3)) < 0.5  # the same seams, now inside patches


def test_seam_ratio_equals_a_slow_loop_on_a_tiny_image():
    image = torch.randint(0, 9, (2, 3, 16, 24)).double()  # 2 x 3 patches of 8x8
    across, inside = [], []
    for n in range(2):
        for c in range(3):
            for i in range(16):
                for j in range(24):
                    for di, dj in [(0, 1), (1, 0)]:  # the right and the lower neighbour
                        if i + di < 16 and j + dj < 24:
                            square = (image[n, c, i + di, j + dj] - image[n, c, i, j]).item() ** 2
                            crosses = (i // 8 != (i + di) // 8) or (j // 8 != (j + dj) // 8)
                            (across if crosses else inside).append(square)
    assert len(across) == 2 * 3 * (16 * 2 + 24 * 1) and len(inside) == 2 * 3 * (16 * 21 + 24 * 14)
    expected = (sum(across) / len(across)) / (sum(inside) / len(inside))
    assert seam_ratio(image) == pytest.approx(expected, rel=1e-12)


def test_compare_needs_two_samples_four_real_and_two_training_images(cats, capsys):
    uint8 = ((cats[0] + 1) * 127.5).round().to(torch.uint8)
    with pytest.raises(ValueError, match="at least 4 real images; DIR has 3"):
        compare(cats[1][:8], uint8[:3], uint8, source="DIR")
    with pytest.raises(ValueError, match="at least 2 training images, not 1: give --train-data DIR"):
        compare(cats[1][:8], uint8, uint8[:1], source="DIR")
    with pytest.raises(ValueError, match="at least 2 samples; give --n 2 or more"):
        compare(cats[1][:1], uint8, uint8, source="DIR")
    with pytest.raises(ValueError, match="--n 3: the SWD floor needs twice as many real images, and DIR has 5; "
                                         "give --n 2 or fewer"):
        compare(cats[1][:3], uint8[:5], uint8, source="DIR")
    compare(cats[1][:2], uint8[:5], uint8, source="DIR")
    printed = capsys.readouterr().out
    assert "warning: with 2 images the SWD ratio leans towards 1; compare only figures of the same n" in printed
    assert "one normalisation" in printed and "detail, rms of the 64 / 32 / 16px Laplacian levels" in printed
    assert "mean colour R G B minus the real images': samples " in printed
    assert "precision | recall (diversity) of the 64 / 32 / 16px neighbourhoods" in printed
