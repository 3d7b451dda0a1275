"""Tests for model.py: the table of defaults, shapes and gradients of the model, the noise levels, the
sampler and an overfitting check. Run: python -m pytest -q tests/test_model.py"""
import argparse
import contextlib
import math

import pytest
import torch

from lut import gram_penalty, patchify
from conftest import small_config
from cli import available_device
from machine import fast_dtype
from model import (DEFAULT_HEAD, GUIDED_FROM, HEADS, Config, LUTTransformer, add_noise, defaults, denoising_loss,
                   draw_t, make_config, sample, sampling_end)


def test_defaults_configs_and_bad_settings():
    assert Config() == make_config() == make_config("tiny", DEFAULT_HEAD)  # one set of defaults
    assert make_config("blog", "softmax").dict_size == 512
    assert make_config("tiny", "dynamic", width=None).static_tokens == 16
    assert make_config("tiny", "tanh", width=96).width == 96
    assert defaults("tiny", "dynamic")["steps"] == 6_000 < defaults("tiny", "tanh")["steps"]  # the same minutes
    assert defaults("blog", "dynamic")["steps"] == defaults("blog", "tanh")["steps"] == 10_000
    assert [defaults("tiny", lut)["gram"] for lut in HEADS] == [0.0, 0.2, 0.0]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        make_config("huge", "tanh")
    with pytest.raises(ValueError, match="unknown LUT head"):
        make_config("tiny", "sigmoid")
    with pytest.raises(ValueError, match="static token"):
        make_config("tiny", "dynamic", static_tokens=0)
    with pytest.raises(ValueError, match="divides"):
        make_config("tiny", "dynamic", static_tokens=5)
    with pytest.raises(ValueError, match="divisible"):
        make_config("tiny", "tanh", width=100, heads=3)
    with pytest.raises(ValueError, match="width 30 must be divisible by heads 2 and by 4"):  # the position code
        make_config("tiny", "tanh", width=30, heads=2)
    with pytest.raises(ValueError, match="dict size 2 or more"):  # one entry has no Gram penalty
        make_config("tiny", "tanh", dict_size=1)


def test_cuda_devices_and_their_dtype(monkeypatch):
    """On a (pretend) machine with one CUDA GPU: cuda:1 is refused, and bf16 is picked only where the
    GPU runs it natively (Ampere on), not on a T4 or V100 that would emulate it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert available_device("cuda") == "cuda" and available_device("cuda:0") == "cuda:0"
    with pytest.raises(argparse.ArgumentTypeError, match="^this machine has no cuda:1: give cuda:0$"):
        available_device("cuda:1")
    for native, dtype in [(True, "bf16"), (False, "fp32")]:
        bf16 = lambda including_emulation=True: native or including_emulation  # emulated: any CUDA GPU
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16)
        assert fast_dtype(torch.device("cuda")) == dtype


@pytest.mark.parametrize("lut_name,static_tokens", [
    ("softmax", 0), ("softmax", 4), ("tanh", 0), ("tanh", 4), ("dynamic", 16)])
def test_model_shapes_static_tokens_and_gradients(lut_name, static_tokens):
    torch.manual_seed(0)
    model = LUTTransformer(small_config(lut_name, static_tokens=static_tokens))
    torch.nn.init.normal_(model.to_scores.weight, std=0.1)  # leave the all-equal start
    x, t = torch.randn(3, 3, 64, 64), torch.rand(3)
    out, lut = model(x, t)
    assert out.shape == (3, 3, 64, 64)
    K = model.cfg.dict_size
    assert lut.shape == ((3, K, 3, 8, 8) if lut_name == "dynamic" else (K, 3, 8, 8))
    (out.square().mean() + gram_penalty(lut)).backward()
    lut_params = model.lut_head.to_uv.weight if lut_name == "dynamic" else model.lut_head.lut
    assert lut_params.grad.abs().sum() > 0
    if static_tokens:
        assert model.static.grad.abs().sum() > 0
        with torch.no_grad():
            model.static.add_(torch.randn_like(model.static))
            assert (model(x, t)[0] - out).abs().max() > 1e-5


def test_cpu_attention_for_training_and_for_sampling_agree():
    """On a CPU, training (gradients on) runs attention as plain matmuls and sampling (no_grad) as
    the fused kernel: the same maths, so the same prediction."""
    torch.manual_seed(0)
    model = LUTTransformer(small_config("dynamic"))
    torch.nn.init.normal_(model.to_scores.weight, std=0.1)  # leave the all-equal start
    x, t = torch.randn(3, 3, 64, 64), torch.rand(3)
    trained_path = model(x, t)[0]
    with torch.no_grad():
        sampled_path = model(x, t)[0]
    assert trained_path.abs().mean() > 0.01
    torch.testing.assert_close(sampled_path, trained_path.detach(), atol=1e-5, rtol=1e-4)


def test_dynamic_head_gives_each_image_its_own_distinct_entries():
    model = LUTTransformer(small_config("dynamic"))
    _, lut = model(torch.randn(2, 3, 64, 64), torch.full((2,), 0.5))
    assert (lut[0] - lut[1]).abs().max() > 1e-4  # two different images, two different LUTs
    # ... and within one image the entries start as distinct patterns of pixel-like size.
    entries = lut[0].flatten(1)  # (K, 192)
    assert 0.1 < entries.std() < 2
    cosine = torch.nn.functional.normalize(entries, dim=1) @ torch.nn.functional.normalize(entries, dim=1).T
    assert cosine.abs().fill_diagonal_(0).max() < 0.7


def test_zero_init_starts_at_the_mean_pattern():
    model = LUTTransformer(small_config("softmax"))
    out, lut = model(torch.randn(1, 3, 64, 64), torch.rand(1))
    assert torch.allclose(patchify(out)[0], lut.mean(0).expand(64, 3, 8, 8), atol=1e-6)


def edge_error(error):
    """The mean squared difference of horizontal, plus that of vertical, neighbours in one error (3, 64, 64),
    as nested lists."""
    across = [(error[c][y][x + 1] - error[c][y][x]) ** 2 for c in range(3) for y in range(64) for x in range(63)]
    down = [(error[c][y + 1][x] - error[c][y][x]) ** 2 for c in range(3) for y in range(63) for x in range(64)]
    return sum(across) / len(across) + sum(down) / len(down)


@pytest.mark.parametrize("loss", ["x", "v"])
def test_denoising_loss_against_a_slow_version(loss):
    torch.manual_seed(0)
    x, noise, lut = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64), torch.randn(5, 3, 8, 8)
    t = torch.tensor([0.0, 0.5, 0.99])  # pure noise, halfway, and past the clamp of 1 - t at 0.05
    seen = []
    model = lambda x_t, t: seen.append(x_t) or (0.5 * x_t, lut)  # predicts half the noisy image
    total, per_image = denoising_loss(model, x, t, noise, contextlib.nullcontext(), loss, edges=0.3, gram=0.2)
    edges = []
    for i in range(3):
        x_t = t[i].item() * x[i] + (1 - t[i].item()) * noise[i]
        assert torch.allclose(seen[0][i], x_t, atol=1e-6)
        assert per_image[i].item() == pytest.approx(((0.5 * x_t - x[i]) ** 2).mean().item(), rel=1e-5)
        edges.append(edge_error((0.5 * x_t - x[i]).double().tolist()))
    weights = [1.0, 1 / 0.5 ** 2, 1 / 0.05 ** 2] if loss == "v" else [1.0, 1.0, 1.0]
    expected = sum(w * (p + 0.3 * e) for w, p, e in zip(weights, per_image.tolist(), edges)) / 3
    assert total.item() == pytest.approx(expected + 0.2 * gram_penalty(lut).item(), rel=1e-5)


def test_sampler_steps_to_the_tail_of_training_t_then_lands_on_the_prediction():
    class Constant(torch.nn.Module):  # always predicts the same image, and records the t it is asked at
        seen = []

        def forward(self, x, t):
            self.seen.append(t[0].item())
            return torch.full_like(x, 0.25), None
    noise = torch.randn(2, 3, 64, 64)
    frames = []
    out = sample(Constant(), noise, steps=4, train_t_sampling="logit-normal", on_step=frames.append)
    assert len(frames) == 4 and torch.allclose(out, torch.full_like(out, 0.25))
    end = sampling_end("logit-normal")
    assert end == pytest.approx(1 / (1 + math.exp(0.8 - 0.8 * 3.7060)), abs=1e-4)  # sigmoid(-0.8 + 0.8 z_0.99989)
    # t = end * s^1.5, s = 0, 1/3, 2/3, 1: each Heun step asks at both ends, then one call at the end.
    t1, t2 = end * (1 / 3) ** 1.5, end * (2 / 3) ** 1.5
    assert Constant.seen == pytest.approx([0, t1, t1, t2, t2, end, end])
    assert len(Constant.seen) == 2 * 4 - 1  # Heun steps of two calls, one last
    # After the first step x is exactly the path point at the next t.
    assert torch.allclose(frames[0], add_noise(torch.full_like(noise, 0.25), noise, torch.full((2,), t1)), atol=1e-6)


def test_sampler_is_second_order():
    """A model that predicts x_hat = a x_t has an exact path: dx/dt = (a - 1) x / (1 - t) gives
    x_t = noise (1 - t)^(1 - a). Heun's error falls about 4x when the steps double (Euler's 2x)."""
    class Linear(torch.nn.Module):
        def forward(self, x, t):
            return 0.5 * x, None
    noise = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    end = sampling_end("logit-normal")
    exact = 0.5 * noise * (1 - end) ** 0.5  # the last call's prediction at t = end
    errors = [(sample(Linear(), noise, steps, "logit-normal") - exact).abs().max().item() for steps in (16, 32, 64)]
    assert errors[0] < 0.03 and 3.5 < errors[0] / errors[1] < 5 and 3.5 < errors[1] / errors[2] < 5


def test_guided_sampler_steps_past_the_model_away_from_its_guide():
    class Constant(torch.nn.Module):  # always predicts the same image, and records the t it is asked at
        def __init__(self, value):
            super().__init__()
            self.value, self.seen = value, []

        def forward(self, x, t):
            self.seen.append(t[0].item())
            return torch.full_like(x, self.value), None
    torch.manual_seed(0)
    noise = torch.randn(2, 3, 64, 64)
    model, guide = Constant(0.25), Constant(0.1)
    out = sample(model, noise, 6, "logit-normal", guide=guide, guidance=1.5)
    assert torch.allclose(out, torch.full_like(out, 0.25 + 0.5 * (0.25 - 0.1)))  # x_hat + (w - 1)(x_hat - guide's)
    assert guide.seen == [t for t in model.seen if t >= GUIDED_FROM] and 0 < len(guide.seen) < len(model.seen)
    unused = Constant(0.1)
    sample(model, noise, 6, "logit-normal", guide=unused, guidance=1)
    assert unused.seen == []  # guidance 1: the model alone, and the guide costs no calls
    model, other = LUTTransformer(small_config("dynamic")), LUTTransformer(small_config("dynamic"))
    for parameter in [*model.parameters(), *other.parameters()]:  # away from the zero-initialised scores
        parameter.data.normal_(0, 0.3)
    plain = sample(model, noise, 3, "logit-normal")
    assert torch.equal(sample(model, noise, 3, "logit-normal", guide=model), plain)  # a guide like the model: no change
    assert torch.equal(sample(model, noise, 3, "logit-normal", guide=other, guidance=1), plain)  # 1: unguided
    assert not torch.allclose(sample(model, noise, 3, "logit-normal", guide=other), plain, atol=1e-3)


@pytest.mark.parametrize("how", ["uniform", "logit-normal"])
def test_sampling_end_leaves_1_in_10000_of_draw_t_above(how):
    t = draw_t(2_000_000, how, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 1
    above = (t > sampling_end(how)).sum().item()  # 200 expected, give or take 14
    assert 200 - 4 * 14 < above < 200 + 4 * 14
    # The pure-noise end, where the sampler starts, is trained: 5% of 3/10 below t = 0.03 (uniform: 3%).
    noisiest = (t < 0.03).float().mean().item()
    assert noisiest == pytest.approx(0.03 if how == "uniform" else 0.05 * 0.3, abs=0.002)


@pytest.mark.parametrize("lut_name", list(HEADS))
def test_tiny_model_overfits_a_batch(lut_name):
    torch.manual_seed(0)
    model = LUTTransformer(small_config(lut_name))
    # Four smooth images (a colour gradient each), noised at a fixed t.
    ramp = torch.linspace(-1, 1, 64)
    x = torch.stack([(ramp[None, :, None] * c[:, None, None] + ramp[None, None, :] * (1 - c[:, None, None]))
                     for c in torch.rand(4, 3)])
    t = torch.full((4,), 0.5)
    x_t = add_noise(x, torch.randn_like(x), t)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):  # stop as soon as the loss has fallen 10x
        out, _ = model(x_t, t)
        loss = (out - x).square().mean()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1], len(losses))
