"""Tests for bench.py: its FLOP formula against PyTorch's FLOP counter, its training settings against
train.py's, the fp32 path end to end, and loading the post's model from its file.
Run: python -m pytest -q tests/test_bench.py"""
import json
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench import counted_flops, flops_per_image, load_reference
from conftest import ROOT
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


def test_fp32_path_prints_every_figure(tmp_path):
    """The path of a CPU without native bf16: the fp32 peak alone, then the row, in seconds."""
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--dtype", "fp32", "--lut",
                             "tanh", "--device", "cpu", "--steps", "1", "--warmup", "0", "--sample-steps", "1",
                             "--json", "b.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("fp32: ") and not any(line.startswith("bf16: ") and "TFLOP/s" in line for line in lines)
    row = lines[lines.index(next(line for line in lines if "LUT head" in line)) + 1].split()
    assert row[0] == "tanh" and float(row[1]) > 0 and row[6] == "-"  # no bf16 peak, no bf16 ratio
    assert float(row[9]) == 1.5  # tiny tanh: 1,484,608 parameters
    figures = json.loads((tmp_path / "b.json").read_text())
    assert list(figures["peak_tflop_per_s"]) == ["fp32"] and figures["rows"][0]["vs_fp32_peak"] > 0


REFERENCE = """import torch
import torch.nn as nn
from py.torch_utils import dds_from_tensor   # the author's own helpers: not on this machine
from einops import rearrange
assert torch.cuda.is_available()
PATCH = 2 * 4
device = torch.device("cuda")
class Diffusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3 * PATCH * PATCH)
    def forward(self, z, t):
        tiles = self.proj(z.mean((2, 3)) + t.view(-1, 1))  # (B, 3 * 8 * 8)
        return rearrange(tiles.view(-1, 3, 1, PATCH, 1, PATCH), 'b c h x w y -> b c (h x) (w y)')
model = Diffusion().to(device)
raise SystemExit("training at module level")
"""


def test_reference_loads_only_the_model_from_its_file(tmp_path):
    (tmp_path / "ref.py").write_text(REFERENCE)
    model = load_reference(tmp_path / "ref.py")["Diffusion"]()
    x = torch.randn(2, 3, 64, 64)
    assert model(x[:, :, :8, :8], torch.rand(2, 1, 1, 1)).shape == (2, 3, 8, 8)
    assert counted_flops(model, x[:1], torch.rand(1, 1, 1, 1)) == 2 * 3 * 192  # one 3 -> 192 linear layer
    (tmp_path / "bad.py").write_text("def (")
    with pytest.raises(ValueError, match="cannot read"):
        load_reference(tmp_path / "bad.py")
