"""The LUT patch transformer: a denoiser that paints every 8x8 patch from a lookup table.

    x_t (B, 3, 64, 64), t (B,)  ->  8x8 patches -> 64 tokens + 2D sin-cos position (+ static tokens) + time
                                ->  depth pre-norm blocks (attention + gated MLP; 16 in the post)
                                ->  K scores per patch token -> LUT head (lut.py) -> x_hat

Conventions, written once for the whole project: images live in [-1, 1]; t=1 is the clean image
and t=0 pure noise, x_t = t x + (1 - t) noise; the network predicts the clean image x
(x-prediction, as in the post and in JiT).

Also here: at the top, the table of every model default; as in JiT's denoiser.py, the noise
path, the training loss and the Heun sampler; at the end, saving and loading checkpoints.

Usage:
    from model import make_config, LUTTransformer
    model = LUTTransformer(make_config("tiny", "dynamic"))
    x_hat, lut = model(x_t, t)

Initialisation: linear layers start as N(0, 0.02) with zero biases (nanoGPT), the LUT heads as
lut.py says, and the score layer at exactly zero. So at step 0 every patch gives its entries equal
weight: the softmax head paints the mean LUT pattern, the tanh and dynamic heads paint zero (mid-grey).
"""
import argparse
import io
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lut import PATCH, apply_lut, gram_penalty, make_head

# ----------------------------------------------------------------------------- defaults
# The default size of each preset and the settings of each head, in one place: Config, make_config,
# train.py and bench.py read them here. The training loop's other settings are train.py's flags.
DEFAULT_HEAD = "dynamic"  # the post's headline head; on a 30-minute CPU budget as good as tanh (README, Results)
PRESETS = {  # the model's size, and how train.py trains it
    "blog": dict(width=512, depth=16, heads=8, steps=10_000, batch_size=64, lr=3e-4),  # the post's
    "tiny": dict(width=192, depth=6, heads=3, steps=8_000, batch_size=32, lr=1e-3),  # for CPUs
}
HEADS = {  # as in the post; gram is the weight of the Gram penalty
    "softmax": dict(dict_size=512, static_tokens=0, gram=0.0),
    "tanh": dict(dict_size=64, static_tokens=0, gram=0.2),
    "dynamic": dict(dict_size=64, static_tokens=16, gram=0.0),  # each static token makes 4 LUT entries
}
PRESET_HEAD = {  # where a preset with a head differs from both tables
    ("tiny", "dynamic"): dict(steps=6_000),  # its 16 static tokens make a step ~1.3x dearer: the same minutes
}


def defaults(preset, lut):
    """Every default setting of one preset with one head, as a dict."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    if lut not in HEADS:
        raise ValueError(f"unknown LUT head '{lut}': choose one of {', '.join(HEADS)}")
    return {**PRESETS[preset], **HEADS[lut], **PRESET_HEAD.get((preset, lut), {})}


def default_preset(device):
    """The post's model on a GPU, the small one elsewhere."""
    return "blog" if device.type == "cuda" else "tiny"


# On a CPU a run is a time budget, so that the README's promise holds on any CPU; on a GPU it is the
# preset's step count, as the post trained by steps (and a GPU runs it in minutes, not hours).
DEFAULT_MINUTES = 30
# A budget of at least this many minutes is torch.compiled by default: compiling the tiny model takes
# 20-25 s on a 2-core AVX512-BF16 CPU and makes each step 8-25% faster there (4-13% held to AVX2; see
# docs/results.md): it pays within minutes.
COMPILE_MINUTES = 10
SAMPLE_STEPS = 18  # sample.py's and train.py's pictures: 17 Heun steps, 1 onto x_hat, 35 calls (docs/results.md)


def steps_within(budget_s, elapsed_s, step, step_s, picture_s, save_s, sample_every, save_every):
    """The most training steps n for a run that ends within budget_s seconds, at least `step` (the run
    then ends at once): at `step`, elapsed_s have gone; each further step costs step_s, and train.py also
    saves pictures (picture_s) and a checkpoint (save_s) at every multiple of sample_every / save_every
    from `step` on (train.py counts before that step's own), and at step n. The cost grows with n, so a
    binary search finds the last n that fits. An n a few steps past a picture step (5% of sample_every)
    becomes that step: two nearly equal grids are one."""
    def cost(n):
        events = lambda every: n // every - (step - 1) // every + (n % every != 0)  # multiples in [step, n], and n
        return elapsed_s + (n - step) * step_s + events(sample_every) * picture_s + events(save_every) * save_s

    fits, too_many = step, step + 1 + int(max(0.0, budget_s - elapsed_s) / step_s)
    while too_many - fits > 1:  # cost(fits) <= budget_s < cost(too_many), but for the minimum, step
        middle = (fits + too_many) // 2
        fits, too_many = (middle, too_many) if cost(middle) <= budget_s else (fits, middle)
    past = fits % sample_every
    return fits - past if past <= sample_every // 20 and fits - past >= step else fits


@dataclass
class Config:
    """The network's shape. The defaults are the tiny preset with the default head; make_config
    builds any other."""
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
        if self.width % self.heads or self.width % 4:  # 4: sin and cos of the row and the column
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads} and by 4")
        if self.img_size % PATCH:
            raise ValueError(f"image size {self.img_size} must be a multiple of the patch size {PATCH}")
        if min(self.width, self.depth, self.heads) < 1 or self.dict_size < 2 or self.static_tokens < 0:
            raise ValueError("width, depth and heads must be positive, dict size 2 or more, static tokens >= 0")
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
        if x.device.type == "cpu" and torch.is_grad_enabled():  # training on a CPU: the same maths in plain
            # matmuls, 3x faster there than the fused kernel's backward; the softmax in fp32 even under autocast
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, T)
            y = torch.softmax(scores, dim=-1, dtype=torch.float32) @ v
        else:  # on a GPU, and sampling on a CPU (10% faster there than the plain matmuls)
            y = F.scaled_dot_product_attention(q, k, v)  # every token sees every token
        return self.out(y.transpose(1, 2).flatten(2))


class GatedMLP(nn.Module):
    """The post's MLP: up * silu(gate) from two width-to-width projections, with no expansion and no
    down projection: 2 width^2 multiply-adds per token where a 4x MLP (or its SwiGLU twin) takes 8. With
    attention's 4, a block costs half as much, as good per step here (docs/results.md), so a CPU budget
    buys twice the steps."""

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
        # position says which part of the face to paint. A learned table at 0.02 was drowned out
        # (the dynamic head then painted a patchwork that followed the noise), docs/results.md.
        self.register_buffer("pos", sincos_2d(grid, cfg.width)[None], persistent=False)  # (1, 64, width)
        # Static tokens at std 1, as in the post: at 0.02 they entered the first block almost
        # identical, and the dynamic LUT built from them collapsed towards a single pattern.
        self.static = nn.Parameter(torch.randn(1, cfg.static_tokens, cfg.width))
        self.time_mlp = nn.Sequential(nn.Linear(256, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.width)
        self.to_scores = nn.Linear(cfg.width, cfg.dict_size)  # K weights per patch token
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.to_scores.weight)  # equal weights at the start (see docstring)
        # After the loop above: the head initialises its own layers and LUT, which that 0.02 would shrink
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


def best_device():
    """CUDA, then Apple's MPS, then the CPU."""
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def available_device(name):
    """--device's `type=`: a device this machine has ("cpu", "cuda", "cuda:1", "mps"); else an error
    that argparse prints in one line naming the flag."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{name} is not a device: give cpu, cuda, cuda:N or mps") from None
    kind = device.type
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind):
        raise argparse.ArgumentTypeError(f"this machine has no {kind}: give {best_device()}, or leave --device out")
    if kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        last = torch.cuda.device_count() - 1
        raise argparse.ArgumentTypeError(f"this machine has no {name}: give cuda:0"
                                         + (f" to cuda:{last}" if last else ""))
    return name


def synchronize(device):
    """Wait for the work queued on a GPU (CUDA and MPS run asynchronously), so that a clock read next
    times it; a CPU has nothing queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def compile_problem(device):
    """Why torch.compile cannot run on this device, as one line, or None where it can. What fails
    depends on the machine (on a CPU, Inductor needs a C++ compiler; some Python versions are not
    supported yet), so a tiny function is compiled and run to find out (5-10 s on a 2-core AVX512-BF16 CPU)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
    except Exception as e:  # whatever fails, the answer is the same: run the model as it is
        return f"torch.compile does not work here ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})"
    return None


def autocast_for(device, dtype):
    """bf16 autocast for dtype "bf16" (matmuls in bf16, the rest in fp32), no-op for "fp32"."""
    return torch.autocast(device.type, torch.bfloat16) if dtype == "bf16" else nullcontext()


def fast_dtype(device):
    """bf16 where the hardware runs it natively, so faster than fp32: CUDA GPUs from Ampere on, and CPUs
    with AVX512-BF16 or AMX. Elsewhere bf16 is emulated and slower, so fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    native = device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return "bf16" if native else "fp32"


# Training noise levels. JiT's logit-normal t = sigmoid(N(-0.8, 0.8)) leans towards the noisy end,
# where the layout of the face is decided; the post draws t uniformly.
LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD = -0.8, 0.8


def draw_t(n, how, generator):
    """n noise levels (n,) to train on, in [0, 1] (1 the clean image, 0 pure noise):
    how = "uniform" (the post) or "logit-normal" (JiT)."""
    if how == "uniform":
        return torch.rand(n, generator=generator)
    return torch.sigmoid(LOGIT_NORMAL_MEAN + LOGIT_NORMAL_STD * torch.randn(n, generator=generator))


def t_quantile(how, q):
    """The noise level below which a fraction q of draw_t(how) falls."""
    if how == "uniform":
        return q
    z = torch.special.ndtri(torch.tensor(q, dtype=torch.float64)).item()  # the standard normal's q-quantile
    return 1 / (1 + math.exp(-(LOGIT_NORMAL_MEAN + LOGIT_NORMAL_STD * z)))


def add_noise(x, noise, t):
    """The lerp path between noise and image: t (B,) = 1 gives x, t = 0 gives pure noise."""
    t = t.view(-1, 1, 1, 1)
    return t * x + (1 - t) * noise


def denoising_loss(model, x, t, noise, autocast, loss="v", gram=0.0):
    """The training objective on clean images x (B, 3, 64, 64) at noise levels t (B,).

    loss "x" is the post's MSE between x_hat and x. Loss "v" (JiT) weights it by 1/(1-t)^2: the
    velocity of the path is (x - x_t)/(1 - t), so this is the MSE of the implied velocity, which
    puts more weight on the nearly clean end; 1-t is clamped at 0.05 to keep the weight finite.
    Returns the loss and each image's plain MSE (B,), which train.py reports per bin of t.
    """
    with autocast:
        x_hat, lut = model(add_noise(x, noise, t), t)
    per_image = (x_hat.float() - x).square().mean((1, 2, 3))  # the loss math runs in fp32
    weight = (1 - t).clamp_min(0.05).pow(-2) if loss == "v" else torch.ones_like(t)
    total = (weight * per_image).mean()
    if gram:
        total = total + gram * gram_penalty(lut.float())
    return total, per_image


@torch.no_grad()
def sample(model, noise, steps, train_t_sampling, on_step=None):
    """`steps` steps along the lerp path from t=0 (noise) to t=1 (image): Heun steps, then a last one
    onto the prediction; network_calls(steps) calls of the model.

    Along the path dx_t/dt = x - noise = (x - x_t) / (1 - t), so with the prediction x_hat the
    velocity is v(x_t, t) = (x_hat - x_t) / (1 - t). An Euler step x <- x + v dt follows the
    velocity where it starts; Heun's step (as in EDM, Karras et al. 2022) takes that Euler step, asks
    the model again where it lands, and steps with the mean of the two velocities: second order, two
    calls a step. The steps run from t=0 up to the 99th percentile of the noise levels the model was
    trained on, drawn as train_t_sampling says (draw_t; 0.74 for logit-normal); from there the last
    step, an Euler step with dt = 1 - t, lands on x_hat itself (one call). Above that level the
    model has hardly seen data, and stepping on through it made samples over-contrasted, with
    clipped highlights. The `steps` noise levels the steps start from are spaced as t = end * s^1.5
    for s evenly spaced in [0, 1], closer together near the noise, where each sample's layout is
    decided: 18 steps so (35 calls) beat 64 evenly spaced Euler steps (docs/results.md).
    on_step, if given, is called with x after every step (sample.py keeps a GIF's frames so).
    """
    def predict(x, t):  # x_hat, in x's dtype (under autocast the model may answer in bf16)
        return model(x, torch.full((len(x),), t, device=x.device))[0].to(x.dtype)

    x = noise
    end = t_quantile(train_t_sampling, 0.99)
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


def network_calls(steps):
    """Model calls of sample(steps): two for each of the steps - 1 Heun steps, one for the last step."""
    return 2 * steps - 1


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "generators", "step", "seconds", "config", "args")
OLD_ARGS = {"min_lr": 1.0}  # settings newer than the first checkpoints, with the value those runs trained with


def make_optimizer(model, lr, weight_decay, device):
    """AdamW with the post's betas, its update fused into one kernel where PyTorch has one."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95),
                             fused=device.type in ("cuda", "cpu"))


def save_atomically(obj, path, write=torch.save):
    """write(obj, file) into a temp file beside path, then rename: a crash, Ctrl-C, a power cut or a full
    disk never leaves a half-written checkpoint, cache or picture behind, and the previous file stays whole
    until the new one is. A failed write raises OSError (errno ENOSPC for a full disk), the temp file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + f".tmp{os.getpid()}")
    # The bytes are made in memory first (a checkpoint of the blog preset: about 0.4 GB): torch.save writing
    # to a full disk itself raises a RuntimeError without the errno, after a short write, where a plain
    # write raises OSError.
    data = io.BytesIO()
    write(obj, data)
    try:
        with open(temp, "wb") as file:
            file.write(data.getbuffer())
            file.flush()
            os.fsync(file.fileno())  # on the disk before the rename: after a power cut, the old file or the new
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_checkpoint(path, model, ema, optimizer, generators, step, seconds, args):
    """All that a resumed run needs, under CHECKPOINT_KEYS: the weights, the EMA weights, the optimizer,
    each process's random generator state, the step, the seconds the run has taken so far, the model's
    Config and train.py's settings (a dict)."""
    values = (model.state_dict(), ema.state_dict(), optimizer.state_dict(), generators, step, seconds,
              asdict(model.cfg), args)
    save_atomically(dict(zip(CHECKPOINT_KEYS, values)), path)


def load_checkpoint(path):
    """A checkpoint of save_checkpoint as a dict, its config as a Config, and what older runs did not
    save filled in (their settings from OLD_ARGS, seconds None). Raises ValueError, in one line, for a
    missing, unreadable, truncated or foreign file."""
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder: give the checkpoint in it, {Path(path) / 'ckpt.pt'}")
    if not Path(path).is_file():
        out = Path(path).parent  # train.py writes out/ckpt.pt
        raise ValueError(f"no checkpoint at {path}; train one first with: python train.py"
                         + (f" --out {out}" if Path(path).name == "ckpt.pt" and out not in (Path("out"), Path("."))
                            else ""))
    not_ours = f"{path} is not a checkpoint written by train.py"
    try:
        with open(path, "rb") as file:
            head = file.read(4)
        zipped = head == b"PK\x03\x04"  # torch.save writes a zip file
        # map_location: a CUDA-trained checkpoint loads anywhere
        checkpoint = torch.load(path, map_location="cpu", weights_only=False) if zipped else None
    except Exception as e:  # unreadable, truncated or corrupt
        raise ValueError(f"cannot read {path} as a checkpoint ({type(e).__name__}); is the file complete?") from None
    if not zipped:
        raise ValueError(not_ours if head else f"{path} is empty")
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{not_ours}: it holds a {type(checkpoint).__name__}")
    checkpoint = {"seconds": None, **checkpoint}  # checkpoints older than that key did not keep the time
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{not_ours} (missing: {', '.join(missing)})")
    try:
        checkpoint["config"] = Config(**checkpoint["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} describes a model this version cannot build ({e})") from None
    checkpoint["args"] = {**OLD_ARGS, **checkpoint["args"]}
    return checkpoint


def load_weights(module, state_dict):
    """module.load_state_dict, with weights that do not fit (a network from an older version of this
    file) as a one-line ValueError."""
    own = module.state_dict()
    differ = list(own.keys() ^ state_dict.keys()) + [k for k in own.keys() & state_dict.keys()
                                                     if own[k].shape != state_dict[k].shape]
    if differ:  # torch's own message lists every tensor, over many lines
        raise ValueError(f"the checkpoint's weights do not fit this version of the model ({len(differ)} tensors "
                         f"differ, e.g. {', '.join(sorted(differ)[:3])}); it was written by an older version: "
                         f"train a new one")
    module.load_state_dict(state_dict)
