"""Tests for bench.py: its FLOP formula against PyTorch's FLOP counter. Run: python -m pytest -q test_bench.py"""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench import flops_per_image
from model import Config, LUTTransformer


@pytest.mark.parametrize("lut", ["softmax", "tanh", "dynamic"])
def test_flop_formula_matches_a_flop_counter(lut):
    cfg = Config(lut=lut, width=64, depth=2, heads=2, dict_size=16, static_tokens=4 if lut == "dynamic" else 0)
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
    patch_embed_input_grad = 2 * 64 * 192 * cfg.width
    assert abs(training.get_total_flops() / 2 - (3 * formula - patch_embed_input_grad)) <= 0.01 * 3 * formula
