"""Tests for logbook.py's figures and pictures of a LUT, on hand-made LUTs. Run: python -m pytest -q
tests/test_logbook.py"""
import math

import pytest
import torch

from logbook import IN_USE, gram_image, lut_atlas, lut_figures


def test_pictures():
    lut = torch.randn(64, 3, 8, 8)
    atlas = lut_atlas(lut)
    assert atlas.shape == (64, 3, 8, 8) and atlas.abs().max() == 1  # the largest entry at full scale
    assert torch.allclose(atlas * lut.abs().max(), lut)  # signs and ratios kept
    heat = gram_image(lut)
    assert heat.shape == (1, 3, 64, 64) and heat.min() >= -1 and heat.max() <= 1
    assert torch.allclose(heat[0, :, 5, 5], torch.tensor([1.0, -1, -1]))  # the diagonal: cosine 1 is pure red
    orthogonal = gram_image(torch.eye(192)[:2].view(2, 3, 8, 8))
    assert torch.equal(orthogonal[0, :, 0, 1], torch.ones(3))  # cosine 0 is white



def test_lut_figures_on_a_hand_made_lut():
    e = torch.eye(192).view(192, 3, 8, 8)
    lut = torch.stack([e[0], e[1], (e[0] + e[1]) * 3, -2 * e[0]])  # K=4; cos 0, 1/sqrt2, -1, 1/sqrt2, 0, -1/sqrt2
    weights = torch.zeros(2, 3, 4)  # (B, N, K)
    weights[..., 0] = 0.5
    weights[..., 1] = -0.5  # the sign does not matter, the size does
    weights[0, 0, 2] = 0.024  # entry 2's mean |weight| 0.004, under 1% of 0.5: not in use; entry 3 unused
    figures = lut_figures(weights, lut)
    assert IN_USE == 0.01 and figures["in_use"] == 2
    usage = [0.5, 0.5, 0.004, 0.0]
    p = [u / sum(usage) for u in usage]
    assert figures["effective"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p if q > 0)), rel=1e-5)
    assert 2 < figures["effective"] < 2.1
    assert figures["cos"] == pytest.approx((1 + 3 / math.sqrt(2)) / 6, rel=1e-5)
    assert figures["between"] is None  # a static LUT is the same for every image
    # All weight on one entry: one entry in use, effectively 1.
    one = lut_figures(torch.zeros(2, 3, 4).index_fill(2, torch.tensor([3]), 0.9), lut)
    assert one["in_use"] == 1 and one["effective"] == pytest.approx(1.0)



def test_lut_figures_on_per_image_luts():
    e = torch.eye(192).view(192, 3, 8, 8)
    luts = torch.stack([torch.stack([e[0], e[1]]), torch.stack([5 * e[0], e[2]]), torch.stack([-e[0], e[1]])])
    figures = lut_figures(torch.ones(3, 4, 2), luts)  # (B=3, K=2, 3, 8, 8)
    # Entry 0 across images: cos 1, -1, -1; entry 1: 0, 1, 0; each over the 3 pairs.
    assert figures["between"] == pytest.approx((1 - 1 - 1 + 0 + 1 + 0) / 6)
    assert figures["cos"] == 0 and figures["in_use"] == 2 and figures["effective"] == pytest.approx(2.0)
