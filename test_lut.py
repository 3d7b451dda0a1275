"""Tests for lut.py: the three LUT heads against slow obvious versions, patchify and the Gram penalty.
Run: python -m pytest -q test_lut.py"""
import pytest
import torch

from lut import PATCH, apply_lut, gram_penalty, make_head, patchify, unpatchify

HEADS = ["softmax", "tanh", "dynamic"]


def head_output(lut_name, B=2, K=6, S=3, width=16, dtype=torch.float64):
    """Run one head on random scores (the dynamic head: S static tokens, K/S entries each):
    returns (weights, lut) as the model would use them."""
    torch.manual_seed(0)
    head = make_head(lut_name, K, width, S).to(dtype)
    scores = torch.randn(B, 64, K, dtype=dtype)
    static_states = torch.randn(B, S, width, dtype=dtype)
    return head(scores, static_states)


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


@pytest.mark.parametrize("lut_name", ["tanh", "dynamic"])
def test_tanh_heads_weigh_by_tanh_of_the_scores(lut_name):
    head = make_head(lut_name, 4, 16, 2)
    scores = torch.tensor([-2.0, 0.0, 0.5, 10.0]).expand(1, 64, 4)
    weights, _ = head(scores, torch.randn(1, 2, 16))
    assert torch.allclose(weights[0, 0], torch.tensor([-0.96403, 0.0, 0.46212, 1.0]), atol=1e-5)  # signed


def test_tanh_patterns_start_orthogonal():  # so that the Gram penalty starts at zero
    assert gram_penalty(make_head("tanh", 64, 16).lut) < 1e-12


def test_dynamic_entries_are_rank_one():
    _, lut = head_output("dynamic", B=2, K=6)
    assert lut.shape == (2, 6, 3, 8, 8)
    singular = torch.linalg.svdvals(lut)  # (2, 6, 3, 8): per entry and channel
    assert (singular[..., 1] < 1e-10 * singular[..., 0].clamp_min(1)).all()
    assert (singular[..., 0] > 1e-3).all()


def test_dynamic_entries_come_from_their_own_static_token():
    """Slow version: entry k is made by static token k // (K/S), from its own 48 rows of to_uv."""
    torch.manual_seed(0)
    K, S, width = 6, 3, 16
    head = make_head("dynamic", K, width, S).double()
    states = torch.randn(2, S, width, dtype=torch.float64)
    _, lut = head(torch.zeros(2, 64, K, dtype=torch.float64), states)
    rows = head.to_uv.weight.view(K // S, 3, 2, 8, width)  # per entry of a token: colour, (u, v), pixel
    for b in range(2):
        for k in range(K):
            token, j = divmod(k, K // S)
            for c in range(3):
                u, v = rows[j, c, 0] @ states[b, token], rows[j, c, 1] @ states[b, token]
                assert torch.allclose(lut[b, k, c], torch.outer(u, v))


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


def test_make_head_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown LUT head 'sigmoid'"):
        make_head("sigmoid", 8, 16)
