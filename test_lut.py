"""Tests for lut.py and model.py: the three LUT heads against slow obvious versions, the Gram
penalty, shapes and gradients of the model, and an overfitting check. Run: python -m pytest -q"""
import math

import pytest
import torch

from lut import PATCH, apply_lut, gram_penalty, gram_image, lut_atlas, make_head, patchify, unpatchify
from model import (DEFAULT_HEAD, HEADS, Config, LUTTransformer, add_noise, defaults, draw_t, make_config, sample,
                   t_quantile)

HEADS = ["softmax", "tanh", "dynamic"]


def small_config(lut, static_tokens=None):
    """A model small enough to train in seconds on a CPU: K=16 (the dynamic head: 16 static tokens)."""
    if static_tokens is None:
        static_tokens = 16 if lut == "dynamic" else 0
    return Config(lut=lut, width=64, depth=2, heads=2, dict_size=16, static_tokens=static_tokens)


def head_output(lut_name, B=2, K=5, width=16, dtype=torch.float64):
    """Run one head on random scores: returns (weights, lut) as the model would use them."""
    torch.manual_seed(0)
    head = make_head(lut_name, K, width).to(dtype)
    scores = torch.randn(B, 64, K, dtype=dtype)
    static_states = torch.randn(B, K, width, dtype=dtype)
    return head(scores, static_states)


# ----------------------------------------------------------------------------- lut.py

def test_patchify_roundtrip_and_order():
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(unpatchify(patchify(x)), x)
    patches = patchify(x)
    assert patches.shape == (2, 64, 3, 8, 8)
    # Raster order: token 1 is the second patch of the top row, token 8 the first of row two.
    assert torch.equal(patches[:, 1], x[:, :, 0:8, 8:16])
    assert torch.equal(patches[:, 8], x[:, :, 8:16, 0:8])


@pytest.mark.parametrize("lut_name", HEADS)
def test_fast_head_equals_double_loop(lut_name):
    weights, lut = head_output(lut_name)
    B, N, K = weights.shape
    per_image = lut if lut.dim() == 5 else lut.expand(B, *lut.shape)  # (B, K, 3, 8, 8)
    slow = torch.zeros(B, 3, 64, 64, dtype=weights.dtype)
    for b in range(B):
        for p in range(N):
            row, col = divmod(p, 64 // PATCH)
            patch = sum(weights[b, p, k] * per_image[b, k] for k in range(K))
            slow[b, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = patch
    assert torch.allclose(apply_lut(weights, lut), slow, atol=1e-5)


def test_softmax_is_a_convex_mix():
    weights, lut = head_output("softmax", K=7)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 64, dtype=weights.dtype))
    patches = patchify(apply_lut(weights, lut))  # (B, 64, 3, 8, 8)
    low, high = lut.min(0).values, lut.max(0).values  # per pixel over the K entries: (3, 8, 8)
    assert (patches >= low - 1e-9).all() and (patches <= high + 1e-9).all()


def test_tanh_is_not_a_convex_mix():
    head = make_head("tanh", 4, 16)
    with torch.no_grad():
        head.lut.fill_(0.5)  # every entry is flat 0.5
    weights, lut = head(torch.full((1, 64, 4), 10.0), None)  # tanh(10) ~ 1 for every entry
    out = apply_lut(weights, lut)
    assert out.min() > 1.99  # ~ 4 x 0.5 = 2, far outside the entries' range [0.5, 0.5]


def test_dynamic_entries_are_rank_one_and_per_image():
    _, lut = head_output("dynamic", B=2, K=6)
    assert lut.shape == (2, 6, 3, 8, 8)
    singular = torch.linalg.svdvals(lut)  # (2, 6, 3, 8): per entry and channel
    assert (singular[..., 1] < 1e-10 * singular[..., 0].clamp_min(1)).all()
    assert (singular[..., 0] > 1e-3).all()
    # In the model, two different images get two different LUTs.
    model = LUTTransformer(small_config("dynamic"))
    _, lut = model(torch.randn(2, 3, 64, 64), torch.full((2,), 0.5))
    assert (lut[0] - lut[1]).abs().max() > 1e-4
    # ... and within one image the entries start as distinct patterns of pixel-like size.
    entries = lut[0].flatten(1)  # (K, 192)
    assert 0.1 < entries.std() < 2
    cosine = torch.nn.functional.normalize(entries, dim=1) @ torch.nn.functional.normalize(entries, dim=1).T
    assert cosine.abs().fill_diagonal_(0).max() < 0.7


def test_gram_penalty_values_and_gradient():
    q, _ = torch.linalg.qr(torch.randn(192, 10, dtype=torch.float64))  # orthonormal columns
    orthonormal = q.T.reshape(10, 3, 8, 8)
    assert gram_penalty(orthonormal).item() < 1e-20
    two = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    two[0, 0, 0, 0] = 1.0
    two[1, 0, 0, 0], two[1, 1, 0, 0] = 2.0, 3.0
    # G = [[1, 2], [2, 13]]: off-diagonal entries 2 and 2, so the mean square is 4.
    assert gram_penalty(two).item() == pytest.approx(4.0)
    # A per-image LUT: one penalty per image, averaged (0 and 4 -> 2).
    assert gram_penalty(torch.stack([orthonormal[:2], two])).item() == pytest.approx(2.0)
    lut = torch.randn(8, 3, 8, 8, requires_grad=True)
    before = gram_penalty(lut)
    before.backward()
    with torch.no_grad():
        assert gram_penalty(lut - 0.01 * lut.grad) < before


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


def test_make_head_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown LUT head 'sigmoid'"):
        make_head("sigmoid", 8, 16)


# ----------------------------------------------------------------------------- model.py

def test_defaults_configs_and_bad_settings():
    assert Config() == make_config() == make_config("tiny", DEFAULT_HEAD)  # one set of defaults
    assert make_config("blog", "softmax").dict_size == 512
    assert make_config("tiny", "dynamic", width=None).static_tokens == 64
    assert make_config("tiny", "tanh", width=96).width == 96
    assert defaults("tiny", "dynamic")["steps"] == defaults("tiny", "tanh")["steps"] // 2  # the same minutes
    assert defaults("blog", "dynamic")["steps"] == defaults("blog", "tanh")["steps"] == 10_000
    assert [defaults("tiny", lut)["gram"] for lut in HEADS] == [0.0, 0.2, 0.0]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        make_config("huge", "tanh")
    with pytest.raises(ValueError, match="unknown LUT head"):
        make_config("tiny", "sigmoid")
    with pytest.raises(ValueError, match="static token"):
        make_config("tiny", "dynamic", static_tokens=0)
    with pytest.raises(ValueError, match="divisible"):
        make_config("tiny", "tanh", width=100, heads=3)


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


def test_zero_init_starts_at_the_mean_pattern():
    model = LUTTransformer(small_config("softmax"))
    out, lut = model(torch.randn(1, 3, 64, 64), torch.rand(1))
    assert torch.allclose(patchify(out)[0], lut.mean(0).expand(64, 3, 8, 8), atol=1e-6)


def test_sampler_steps_evenly_to_the_99th_percentile_of_training_t_then_lands_on_the_prediction():
    class Constant(torch.nn.Module):  # always predicts the same image, and records the t it is asked at
        seen = []

        def forward(self, x, t):
            self.seen.append(t[0].item())
            return torch.full_like(x, 0.25), None
    noise = torch.randn(2, 3, 64, 64)
    frames = []
    out = sample(Constant(), noise, steps=4, t_sampling="logit-normal", frames=frames)
    assert len(frames) == 4 and torch.allclose(out, torch.full_like(out, 0.25))
    end = t_quantile("logit-normal", 0.99)
    assert end == pytest.approx(1 / (1 + math.exp(0.8 - 0.8 * 2.3263)), abs=1e-4)  # sigmoid(-0.8 + 0.8 z_0.99)
    assert Constant.seen == pytest.approx([0, end / 3, 2 * end / 3, end])
    # After the first step x is exactly the path point at the next t.
    t1 = torch.full((2,), end / 3)
    assert torch.allclose(frames[0], add_noise(torch.full_like(noise, 0.25), noise, t1), atol=1e-6)


@pytest.mark.parametrize("how", ["uniform", "logit-normal"])
def test_t_quantile_matches_draw_t(how):
    t = draw_t(200_000, how, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 1
    for q in (0.1, 0.5, 0.99):
        sampling_error = math.sqrt(q * (1 - q) / len(t))
        assert (t < t_quantile(how, q)).float().mean().item() == pytest.approx(q, abs=4 * sampling_error)


@pytest.mark.parametrize("lut_name", HEADS)
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
