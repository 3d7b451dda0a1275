"""The LUT patch transformer: a denoiser that paints every 8x8 patch from a lookup table.

    x_t (B, 3, 64, 64), t (B,)  ->  8x8 patches -> 64 tokens + 2D sin-cos position (+ static tokens) + time
                                ->  depth pre-norm blocks (attention + gated MLP; 16 in the post)
                                ->  K scores per patch token -> LUT head (lut.py) -> x_hat

Conventions, written once for the whole project: images live in [-1, 1]; t=1 is the clean image
and t=0 pure noise, x_t = t x + (1 - t) noise; the network predicts the clean image x
(x-prediction, as in the post and in JiT).

Also here, as in JiT's denoiser.py: the noise path, the training loss and the Heun sampler; at the
end, the optimizer and one training step. Nothing to run: train.py, sample.py and bench.py import it:

    from model import make_config, LUTTransformer
    model = LUTTransformer(make_config("tiny", "dynamic"))
    x_hat, lut = model(x_t, t)

Linear layers start as N(0, 0.02) with zero biases (nanoGPT), the score layer at zero: at step 0 the
softmax head paints the mean LUT pattern, the tanh and dynamic heads mid-grey.
"""
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from lut import PATCH, apply_lut, gram_penalty, make_head

# ----------------------------------------------------------------------------- defaults
DEFAULT_HEAD = "dynamic"  # the post's headline head
PRESETS = {  # the model's size, and how train.py trains it
    "blog": dict(width=512, depth=16, heads=8, steps=10_000, batch_size=64, lr=3e-4),  # the post's
    "tiny": dict(width=192, depth=6, heads=3, steps=8_000, batch_size=32, lr=1e-3),  # for CPUs
}
HEADS = {  # as in the post; gram is the weight of the Gram penalty
    "softmax": dict(dict_size=512, static_tokens=0, gram=0.0),
    "tanh": dict(dict_size=64, static_tokens=0, gram=0.2),
    "dynamic": dict(dict_size=64, static_tokens=16, gram=0.0),  # each static token makes 4 LUT entries
}
PRESET_HEAD = {("tiny", "dynamic"): dict(steps=6_000)}  # its static tokens make a step ~1.3x dearer
TRAINING = dict(weight_decay=1e-2, grad_clip=1.0, ema=0.999)  # AdamW's decay, the largest gradient norm, EMA decay
SAMPLE_STEPS = 18  # 17 Heun steps, 1 onto x_hat: 35 calls (+18 of the guide), as good as 64 Euler steps
GUIDANCE, GUIDED_FROM = 1.5, 0.3  # autoguidance (model.sample): its weight (1: the model alone), and from which t


def defaults(preset, lut):
    """Every default setting of one preset with one head, as a dict."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    if lut not in HEADS:
        raise ValueError(f"unknown LUT head '{lut}': choose one of {', '.join(HEADS)}")
    return {**TRAINING, **PRESETS[preset], **HEADS[lut], **PRESET_HEAD.get((preset, lut), {})}


@dataclass
class Config:
    """The network's shape; make_config builds it from a preset and a head."""
    lut: str = DEFAULT_HEAD  # softmax | tanh | dynamic
    img_size: int = 64
    width: int = PRESETS["tiny"]["width"]
    depth: int = PRESETS["tiny"]["depth"]
    heads: int = PRESETS["tiny"]["heads"]
    dict_size: int = HEADS[DEFAULT_HEAD]["dict_size"]  # K, the number of LUT entries
    static_tokens: int = HEADS[DEFAULT_HEAD]["static_tokens"]  # learned tokens after the 64 patch tokens

    def __post_init__(self):
        if self.lut not in HEADS:
            raise ValueError(f"unknown LUT head '{self.lut}': choose one of {', '.join(HEADS)}")
        if min(self.width, self.depth, self.heads) < 1 or self.dict_size < 2 or self.static_tokens < 0:
            raise ValueError("width, depth and heads must be positive, dict size 2 or more, static tokens >= 0")
        if self.width % self.heads or self.width % 4:  # 4: sin and cos of the row and the column
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads} and by 4")
        if self.img_size % PATCH:
            raise ValueError(f"image size {self.img_size} must be a multiple of the patch size {PATCH}")
        if self.lut == "dynamic" and (self.static_tokens < 1 or self.dict_size % self.static_tokens):
            raise ValueError(f"the dynamic head builds dict_size / static_tokens LUT entries from each "
                             f"static token: give a --static-tokens that divides --dict-size "
                             f"(got {self.static_tokens} and {self.dict_size})")


def make_config(preset="tiny", lut=DEFAULT_HEAD, **overrides):
    """A preset's network with a head, as `defaults` gives it; overrides whose value is None are ignored."""
    shape = {f.name for f in fields(Config)}
    settings = {k: v for k, v in defaults(preset, lut).items() if k in shape}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return Config(lut=lut, **settings)


# ----------------------------------------------------------------------------- the network
def sincos_2d(grid, dim):
    """Fixed 2D sin-cos position table (as MAE and DiT): (grid * grid, dim) in raster order, the
    first half of the channels encodes the row, the second half the column."""
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4) / (dim // 4))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coord in (rows.flatten(), cols.flatten()):
        angles = coord[:, None] * freqs  # (grid * grid, dim/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


def time_embedding(t, dim):
    """Sinusoidal features of the noise level: t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs  # t scaled like a diffusion step in [0, 1000]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)  # one fused matmul for q, k and v
        self.out = nn.Linear(cfg.width, cfg.width)

    def forward(self, x):  # (B, T, width)
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))  # (B, T, 3 * width) -> (B, T, 3, h, d)
        q, k, v = qkv.transpose(1, 3).unbind(2)  # (B, h, 3, T, d) -> 3 x (B, h, T, d)
        if x.device.type == "cpu" and torch.is_grad_enabled():  # training on a CPU: plain matmuls have a
            # 3x faster backward there than the fused kernel; the softmax in fp32 even under autocast
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, T)
            y = torch.softmax(scores, dim=-1, dtype=torch.float32) @ v
        else:  # on a GPU, and sampling on a CPU (10% faster there than the plain matmuls)
            y = F.scaled_dot_product_attention(q, k, v)  # every token sees every token
        return self.out(y.transpose(1, 2).flatten(2))


class GatedMLP(nn.Module):
    """The post's MLP: up * silu(gate) from two width-to-width projections, no expansion, no down
    projection: 2 width^2 multiply-adds per token where a 4x MLP takes 8, as good per step here."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_up = nn.Linear(cfg.width, 2 * cfg.width)  # the two projections in one matmul

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return F.silu(gate) * up


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.attn = nn.RMSNorm(cfg.width), Attention(cfg)
        self.norm2, self.mlp = nn.RMSNorm(cfg.width), GatedMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LUTTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        grid = cfg.img_size // PATCH
        self.num_patches = grid * grid  # 64 tokens for a 64x64 image
        self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=PATCH, stride=PATCH)
        # Position as strong as the content: at t=0 a patch token is pure noise, and only its
        # position says which part of the face to paint (weaker, the dynamic head painted a patchwork).
        self.register_buffer("pos", sincos_2d(grid, cfg.width)[None], persistent=False)  # (1, 64, width)
        # Static tokens at std 1, as in the post, so that they start distinct (the LUT's entries come from them).
        self.static = nn.Parameter(torch.randn(1, cfg.static_tokens, cfg.width))
        self.time_mlp = nn.Sequential(nn.Linear(256, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.width)
        self.to_scores = nn.Linear(cfg.width, cfg.dict_size)  # K weights per patch token
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.to_scores.weight)  # every entry weighs the same at the start
        # After the loop: the head initialises its own layers and LUT
        self.lut_head = make_head(cfg.lut, cfg.dict_size, cfg.width, cfg.static_tokens)

    def forward(self, x_t, t):
        """x_t (B, 3, 64, 64), t (B,) -> predicted clean image (B, 3, 64, 64) and the LUT used,
        (K, 3, 8, 8) or per image (B, K, 3, 8, 8), which the Gram penalty needs."""
        B = x_t.shape[0]
        tokens = self.patch_embed(x_t).flatten(2).transpose(1, 2) + self.pos  # (B, 64, width)
        tokens = torch.cat([tokens, self.static.expand(B, -1, -1)], dim=1)  # (B, 64 + S, width)
        tokens = tokens + self.time_mlp(time_embedding(t, 256)).unsqueeze(1)  # t reaches every token
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        patch_states, static_states = tokens.split([self.num_patches, self.cfg.static_tokens], dim=1)
        weights, lut = self.lut_head(self.to_scores(patch_states), static_states)  # weights (B, 64, K)
        return apply_lut(weights, lut), lut


# ----------------------------------------------------------------------------- the noise path
# JiT's logit-normal t = sigmoid(N(-0.8, 0.8)) leans towards the noisy end, where the layout of the
# face is decided; the post draws t uniformly. The logit-normal almost never reaches t < 0.03, where the
# sampler starts: untrained there, the model's first x_hat is too bright and every sample stays pale. So a
# share of its draws is uniform over the noisiest tenth (docs/results.md).
LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD = -0.8, 0.8
NOISY_SHARE, NOISY_END = 0.05, 0.1
SAMPLING_TAIL = 1e-4  # 1 in 10,000 training draws of t lie above where the sampler's steps end


def draw_t(n, how, generator):
    """n noise levels (n,) to train on, in [0, 1] (1 the clean image, 0 pure noise):
    how = "uniform" (the post) or "logit-normal" (JiT's, with NOISY_SHARE of them uniform in [0, NOISY_END])."""
    if how == "uniform":
        return torch.rand(n, generator=generator)
    t = torch.sigmoid(LOGIT_NORMAL_MEAN + LOGIT_NORMAL_STD * torch.randn(n, generator=generator))
    noisy = NOISY_END * torch.rand(n, generator=generator)
    return torch.where(torch.rand(n, generator=generator) < NOISY_SHARE, noisy, t)


def sampling_end(how):
    """The noise level that only SAMPLING_TAIL of draw_t(how) lies above (0.90 for logit-normal): the sampler's
    Heun steps end there, as past it the model has seen too little data to step well (docs/results.md)."""
    if how == "uniform":
        return 1 - SAMPLING_TAIL
    q = (1 - SAMPLING_TAIL - NOISY_SHARE) / (1 - NOISY_SHARE)  # of the logit-normal draws (the noisy share lies below)
    z = torch.special.ndtri(torch.tensor(q, dtype=torch.float64)).item()  # the standard normal's q-quantile
    return 1 / (1 + math.exp(-(LOGIT_NORMAL_MEAN + LOGIT_NORMAL_STD * z)))


def add_noise(x, noise, t):
    """The lerp path between noise and image: t (B,) = 1 gives x, t = 0 gives pure noise."""
    t = t.view(-1, 1, 1, 1)
    return t * x + (1 - t) * noise


def denoising_loss(model, x, t, noise, autocast, loss="v", edges=1.0, gram=0.0):
    """The training objective on clean images x (B, 3, 64, 64) at noise levels t (B,). Loss "x" is the post's
    MSE between x_hat and x. Loss "v" (JiT) weights it by 1/(1-t)^2: the velocity of the path is
    (x - x_t)/(1 - t), so this is the MSE of the implied velocity (1-t clamped at 0.05 to keep it finite).
    edges adds, weighted alike, the MSE of the error's differences between neighbouring pixels: a jump at
    a patch border that the image lacks costs extra, so the 8x8 grid shows less (docs/results.md).
    Returns the loss and each image's plain MSE (B,), which train.py reports per bin of t."""
    with autocast:
        x_hat, lut = model(add_noise(x, noise, t), t)
    error = x_hat.float() - x  # the loss math runs in fp32: (B, 3, 64, 64)
    per_image = error.square().mean((1, 2, 3))
    across, down = error.diff(dim=3), error.diff(dim=2)  # (B, 3, 64, 63), (B, 3, 63, 64)
    per_image_edges = across.square().mean((1, 2, 3)) + down.square().mean((1, 2, 3))
    weight = (1 - t).clamp_min(0.05).pow(-2) if loss == "v" else torch.ones_like(t)
    total = (weight * (per_image + edges * per_image_edges)).mean()
    if gram:
        total = total + gram * gram_penalty(lut.float())
    return total, per_image


@torch.no_grad()
def sample(model, noise, steps, train_t_sampling, on_step=None, guide=None, guidance=GUIDANCE):
    """`steps` steps along the lerp path from t=0 (noise) to t=1 (image): Heun steps, then a last one
    onto the prediction; 2 steps - 1 calls of the model (and with a guide, about half as many of it).

    Along the path dx_t/dt = x - noise = (x - x_t) / (1 - t), so with the prediction x_hat the
    velocity is v(x_t, t) = (x_hat - x_t) / (1 - t). An Euler step x <- x + v dt follows the
    velocity where it starts; Heun's step (as in EDM, Karras et al. 2022) takes that Euler step, asks
    the model again where it lands, and steps with the mean of the two velocities: second order, two
    calls a step. The steps run from t=0 up to sampling_end(train_t_sampling), above which only SAMPLING_TAIL
    of the noise levels the model was trained on lie (draw_t; 0.90 for logit-normal); from there the last
    step, an Euler step with dt = 1 - t, lands on x_hat itself (one call): above that level the
    model has hardly seen data. The steps start from t = end * s^1.5 for s evenly spaced in [0, 1],
    closer together near the noise, where each sample's layout is decided. on_step, if given, is
    called with x after every step (sample.py keeps a GIF's frames so).

    guide: autoguidance (Karras et al. 2024). A weaker model of the same data (train.py keeps the EMA
    weights of a third of the way through the run) errs the same way as the model, only more: its x_hat
    is blurrier. Stepping past the model's x_hat, away from the guide's, by `guidance`, undoes some of
    that error: x_hat + (guidance - 1) (x_hat - guide's x_hat). Sharper fur, eyes and borders. Only
    from t = GUIDED_FROM on: below it each sample's layout and colours are decided, and guiding there
    shifts the colours for little more detail, at more calls (docs/results.md)."""
    def predict(x, t):  # x_hat, in x's dtype (under autocast the model may answer in bf16)
        ts = torch.full((len(x),), t, device=x.device)
        x_hat = model(x, ts)[0].to(x.dtype)
        if guide is None or guidance == 1 or t < GUIDED_FROM:  # guidance 1: the model alone, without the guide's calls
            return x_hat
        return x_hat + (guidance - 1) * (x_hat - guide(x, ts)[0].to(x.dtype))

    x = noise
    end = sampling_end(train_t_sampling)
    times = (end * torch.linspace(0, 1, steps) ** 1.5).tolist()
    for t, t_next in zip(times[:-1], times[1:]):
        v = (predict(x, t) - x) / (1 - t)
        x_euler = x + v * (t_next - t)
        v_next = (predict(x_euler, t_next) - x_euler) / (1 - t_next)
        x = x + (v + v_next) / 2 * (t_next - t)
        if on_step:
            on_step(x)
    x = predict(x, times[-1])  # the last step lands on x_hat
    if on_step:
        on_step(x)
    return x


# ----------------------------------------------------------------------------- the optimizer and one step
def make_optimizer(model, lr, weight_decay, device):
    """AdamW with the post's betas, its update fused into one kernel where PyTorch has one."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95),
                             fused=device.type in ("cuda", "cpu"))


def train_step(model, ema, optimizer, x, t, noise, autocast, grad_clip, ema_decay, loss="v", edges=1.0, gram=0.0):
    """One training step on clean images x at noise levels t: the loss (denoising_loss), its gradients clipped
    to a norm of grad_clip, AdamW, then the EMA weights moved towards the new weights by 1 - ema_decay.
    Returns the loss and each image's plain MSE (B,)."""
    total, per_image = denoising_loss(model, x, t, noise, autocast, loss, edges, gram)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - ema_decay)
    return total.detach(), per_image.detach()
