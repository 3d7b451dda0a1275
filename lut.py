"""The LUT heads: how a transformer's per-patch weights become pixels.

The image is cut into 8x8 patches. Every output patch is a weighted sum of K dictionary entries,
the "lookup table" (LUT) of 8x8 RGB patterns:

    patch[b, p] = sum_k w[b, p, k] * lut[k]        static LUT: one dictionary for every image
    patch[b, p] = sum_k w[b, p, k] * lut[b, k]     dynamic LUT: a dictionary built per image

The three heads differ in how the transformer's scores s become weights w, and where the LUT
comes from:

    softmax   w = softmax(s)   over K=512 learned static patterns (a convex mix)
    tanh      w = tanh(s)      over K=64 learned static patterns, pushed towards orthogonality
                               by gram_penalty
    dynamic   w = tanh(s)      over K=64 entries made per image from 16 static tokens, 4 each:
                               entry[k, c] = u[k, c] v[k, c]^T, one rank-1 8x8 matrix per colour c

Also here: patchify/unpatchify and the Gram penalty. Nothing to run: model.py imports this file.
Tests: python -m pytest -q test_lut.py
"""
import math

import torch
import torch.nn as nn

PATCH = 8  # patches are 8x8 pixels throughout the project


def patchify(x):
    """(B, C, H, W) -> (B, N, C, 8, 8), with N = (H/8)(W/8) patches in raster order."""
    B, C, H, W = x.shape
    # Split each spatial axis into (which patch, pixel within the patch), then bring the two
    # "which patch" axes to the front so they flatten into the token axis.
    x = x.reshape(B, C, H // PATCH, PATCH, W // PATCH, PATCH)  # (B, C, gh, 8, gw, 8)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C, PATCH, PATCH)


def unpatchify(patches):
    """(B, N, C, 8, 8) -> (B, C, H, W): the exact inverse of patchify for square images."""
    B, N, C = patches.shape[:3]
    g = math.isqrt(N)  # patches per side
    x = patches.reshape(B, g, g, C, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)  # (B, C, g, 8, g, 8)
    return x.reshape(B, C, g * PATCH, g * PATCH)


def apply_lut(weights, lut):
    """The one interface of every head: weights (B, N, K) and a LUT (K, 3, 8, 8) or
    (B, K, 3, 8, 8) in, image (B, 3, H, W) out."""
    entries = lut.flatten(-3)  # (K, 192) or (B, K, 192)
    patches = weights @ entries  # batched matmul broadcasts the static LUT: (B, N, 192)
    return unpatchify(patches.unflatten(-1, (3, PATCH, PATCH)))


class SoftmaxHead(nn.Module):
    """K static patterns mixed convexly: every output pixel stays inside the entries' range."""

    def __init__(self, dict_size):
        super().__init__()
        # Uniform in [-1, 1] so that any pixel value of the data is reachable by some mix.
        self.lut = nn.Parameter(torch.rand(dict_size, 3, PATCH, PATCH) * 2 - 1)

    def forward(self, scores, static_states):  # scores (B, N, K); static tokens unused
        return scores.softmax(-1), self.lut


class TanhHead(nn.Module):
    """K static patterns with unnormalised weights in [-1, 1]: a signed, additive code."""

    def __init__(self, dict_size):
        super().__init__()
        # Orthogonal rows (as far as K <= 192 allows), so the Gram penalty starts at zero.
        self.lut = nn.Parameter(nn.init.orthogonal_(torch.empty(dict_size, 3 * PATCH * PATCH))
                                .view(dict_size, 3, PATCH, PATCH))

    def forward(self, scores, static_states):
        return scores.tanh(), self.lut


class DynamicHead(nn.Module):
    """A LUT built per image from the final states of S static tokens: each token makes K/S entries
    (the post: 64 tokens, one entry each; here 16 tokens, 4 entries each, which shortens the
    sequence from 128 to 80 tokens at the same quality per step, docs/results.md). An entry is one
    rank-1 outer product u v^T per colour channel (3 x (8 + 8) = 48 numbers instead of 192). Measured, two images'
    LUTs agree to cos 0.985-0.998 after the default 30-minute run: in practice one dictionary (docs/results.md)."""

    def __init__(self, width, entries_per_token):
        super().__init__()
        self.entries_per_token = entries_per_token
        # PyTorch's default init gives u, v of std ~0.6: the entries start as distinct patterns
        # of pixel-like size (with u = v = 0, u v^T would get no gradient). No bias: a shared
        # bias would pull every entry towards one common pattern.
        self.to_uv = nn.Linear(width, entries_per_token * 3 * 2 * PATCH, bias=False)

    def forward(self, scores, static_states):  # static_states (B, S, width)
        uv = self.to_uv(static_states).unflatten(-1, (self.entries_per_token, 3, 2, PATCH))  # (B, S, K/S, 3, 2, 8)
        uv = uv.flatten(1, 2)  # token s makes entries s*K/S ... (s+1)*K/S - 1: (B, K, 3, 2, 8)
        u, v = uv.unbind(-2)  # (B, K, 3, 8) each
        lut = u.unsqueeze(-1) * v.unsqueeze(-2)  # outer products: (B, K, 3, 8, 8)
        return scores.tanh(), lut


def make_head(name, dict_size, width, static_tokens=0):
    """The head called `name`: a module mapping (scores, static states) to (weights, LUT) for apply_lut."""
    if name == "softmax":
        return SoftmaxHead(dict_size)
    if name == "tanh":
        return TanhHead(dict_size)
    if name == "dynamic":
        return DynamicHead(width, dict_size // static_tokens)
    raise ValueError(f"unknown LUT head '{name}': choose softmax, tanh or dynamic")


def gram_penalty(lut):
    """Mean squared off-diagonal entry of G = F F^T, with F the K patterns flattened to 192
    numbers. Zero exactly when the patterns are orthogonal. A per-image LUT (B, K, 3, 8, 8) gets
    one penalty per image, averaged over the batch."""
    flat = lut.flatten(-3)  # (K, 192) or (B, K, 192)
    gram = flat @ flat.transpose(-1, -2)  # (K, K) or (B, K, K)
    K = gram.shape[-1]
    off_diagonal = gram - torch.diag_embed(gram.diagonal(dim1=-2, dim2=-1))
    return (off_diagonal.pow(2).sum((-2, -1)) / (K * (K - 1))).mean()
