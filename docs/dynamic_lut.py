"""Is the dynamic LUT per image, and does it help? The harness behind docs/results.md's "The dynamic LUT" section:
the post author's own model trained beside this repo's on the same cats and CPU minutes, and a probe of where
per-image information reaches the static tokens. Not part of the repo's path; run from the repository's root:

    python docs/dynamic_lut.py train cat_diffusion7.py --data data/cats --minutes 30 --out out_author
    python docs/dynamic_lut.py compare out_author/author.pt --compare data/heldout --train-data data/cats
    python docs/dynamic_lut.py probe out/ckpt.pt data/heldout       # this repo's checkpoint (dynamic head)
    python docs/dynamic_lut.py probe out_author/author.pt data/heldout

The author's model is the Diffusion class of aschrein/pyd3d12's tests/torch/cat_diffusion7.py, loaded as
bench.py --reference loads it, with only its width, depth and heads scaled to the tiny preset's (192, 6, 3) so
that it trains on a CPU: its 64 static tokens (one LUT entry each), time embedding added to the pixels, RoPE and
head are its own. Its recipe too: t uniform, x_t = x + (noise - x)(1 - t), the plain MSE of the prediction (its
LPIPS term left out, as this repo does), AdamW at 3e-4 with weight decay 1e-2, batch 64, an EMA of decay 0.99
after every step, no compiling; sampled from the EMA weights with its 64 Euler steps. Batches come from data.py.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

START = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's files

import torch  # noqa: E402

import quality  # noqa: E402
from bench import load_reference  # noqa: E402
from checkpoint import load_checkpoint, load_weights  # noqa: E402
from data import get_batch, image_grid, load_images, save_picture  # noqa: E402
from logbook import cosines  # noqa: E402
from machine import autocast_for, fast_dtype  # noqa: E402
from model import LUTTransformer, add_noise, time_embedding  # noqa: E402

SCALED = {"EXPAND_DIM = 512": "EXPAND_DIM = 192", "for _ in range(16)": "for _ in range(6)",
          "num_heads=8": "num_heads=3"}  # the tiny preset's width, depth and heads, in the author's __init__
PROBE_T = (0.1, 0.3, 0.5, 0.7, 0.9)  # noise levels of the probe (1: clean, 0: pure noise)


def author_model(path):
    """The author's Diffusion, scaled as SCALED says (each change must apply exactly once)."""
    source = Path(path).read_text()
    for old, new in SCALED.items():
        if source.count(old) != 1:
            sys.exit(f"error: {path}: expected '{old}' once in it, to scale the model; is it cat_diffusion7.py?")
        source = source.replace(old, new)
    scaled = Path(path).with_name(Path(path).stem + "_scaled.py")
    scaled.write_text(source)
    return load_reference(scaled)["Diffusion"]()


def train(args):
    """The author's recipe, for --minutes of wall time from this script's start (start-up included)."""
    torch.manual_seed(args.seed)
    model = author_model(args.reference)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    images, generator = load_images(args.data), torch.Generator().manual_seed(args.seed)
    autocast, step, last = autocast_for(torch.device("cpu"), fast_dtype(torch.device("cpu"))), 0, time.time()
    print(f"author's model, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{fast_dtype(torch.device('cpu'))}, {len(images)} images", flush=True)
    while time.time() - START < 60 * args.minutes:
        x = get_batch(images, 64, generator, "cpu")  # (64, 3, 64, 64) in [-1, 1]
        t = torch.rand(64, 1, 1, 1, generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        with autocast:
            x_hat = model(x + (noise - x) * (1 - t), t).float()
        loss = (x_hat - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 0.01)
        step += 1
        if step % 100 == 0:
            print(f"step {step} | loss {loss.item():.4f} | {6400 / (time.time() - last):.0f} img/s | "
                  f"{(time.time() - START) / 60:.1f} min", flush=True)
            last = time.time()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.save({"ema": ema.state_dict(), "step": step, "seconds": time.time() - START,
                "reference": str(args.reference)}, Path(args.out) / "author.pt")
    print(f"saved {Path(args.out) / 'author.pt'} at step {step}")


def load(path):
    """A model to probe or sample, from this repo's checkpoint (its EMA weights) or from author.pt: (model,
    whose). The author's is rebuilt from the file named in author.pt."""
    if Path(path).name == "author.pt":
        saved = torch.load(path, weights_only=False)
        model = author_model(saved["reference"])
        model.load_state_dict(saved["ema"])
        return model.eval(), "author"
    saved = load_checkpoint(path)
    model = LUTTransformer(saved["config"])
    load_weights(model, saved["ema"])
    return model.eval(), "ours"


@torch.no_grad()
def author_sample(model, n, seed=0, steps=64):
    """The author's Euler sampler: t = i / steps for i = 0..steps-1, x += (x_hat - x) / (1 - t) / steps; the last
    step lands on x_hat. Chunks of 100, from the noise sample.py draws for the same seed."""
    noise = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    autocast, chunks = autocast_for(torch.device("cpu"), fast_dtype(torch.device("cpu"))), []
    for x in noise.split(100):
        for i in range(steps):
            t = torch.full((len(x), 1, 1, 1), i / steps)
            with autocast:
                x_hat = model(x, t).float()
            x = x + (x_hat - x) / (1 - t) / steps
        chunks.append(x)
    return torch.cat(chunks)


def compare(args):
    model, _ = load(args.model)
    real = load_images(args.compare)
    n = args.n or min(1024, len(real) // 2)
    images = author_sample(model, n)
    save_picture(image_grid(images[:64], ncol=8, scale=2, pad=2), args.out)
    quality.compare(images, real, load_images(args.train_data), source=args.compare)


def luts_of(model, whose, x_t, t):
    """The LUTs a model paints x_t with at noise level t: (B, K, 3, 8, 8)."""
    if whose == "ours":
        return model(x_t, torch.full((len(x_t),), t))[1]
    kept = {}
    hook = model.lut_projection.register_forward_hook(lambda module, inputs, output: kept.update(uv=output))
    model(x_t, torch.full((len(x_t), 1, 1, 1), t))
    hook.remove()
    uv = kept["uv"].unflatten(-1, (3, 2, 8))  # (B, 64, 48) -> (B, 64, colour, u or v, 8): its own layout
    return uv[..., 0, :, None] * uv[..., 1, None, :]  # (B, 64, 3, 8, 8)


@torch.no_grad()
def probe(args):
    """The LUT's cos between images at each t, and for this repo's model where per-image information reaches the
    static tokens: per block, how much the static tokens' state, and the attention's update to it, differ
    between images, next to the size of the state."""
    model, whose = load(args.model)
    images = load_images(args.images)[:args.n].float() / 127.5 - 1
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    print(f"{whose} model; {len(images)} images of {args.images}")
    for t in PROBE_T:
        x_t = add_noise(images, noise, torch.full((len(images),), t))
        luts = luts_of(model, whose, x_t, t)
        between = cosines(luts.transpose(0, 1))  # (K, B, B): entry k of image a against entry k of image b
        off = ~torch.eye(len(images), dtype=torch.bool)
        line = f"t {t:.1f}: LUT cos between images {between[:, off].mean():.3f}"
        if whose == "ours":
            line += "   per block, static tokens: spread / size of the state, of the attention's update: " + \
                    "  ".join(f"{s:.3f} {a:.3f}" for s, a in static_spread(model, x_t, t))
        print(line, flush=True)


def static_spread(model, x_t, t):
    """Per block of this repo's model: (the static tokens' state after the block, its attention update), each
    as its std between images over the rms of the state before the block (both mean over tokens and channels)."""
    B, P = len(x_t), model.num_patches
    tokens = model.patch_embed(x_t).flatten(2).transpose(1, 2) + model.pos
    tokens = torch.cat([tokens, model.static.expand(B, -1, -1)], dim=1)
    tokens = tokens + model.time_mlp(time_embedding(torch.full((B,), t), 256)).unsqueeze(1)  # as model.forward
    spreads = []
    for block in model.blocks:
        size = tokens[:, P:].square().mean().sqrt()
        update = block.attn(block.norm1(tokens))[:, P:]  # (B, S, width)
        tokens = block(tokens)
        spreads.append(((tokens[:, P:].std(0).mean() / size).item(), (update.std(0).mean() / size).item()))
    return spreads


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train the author's model")
    run.add_argument("reference", help="cat_diffusion7.py")
    run.add_argument("--data", required=True)
    run.add_argument("--minutes", type=float, default=30)
    run.add_argument("--out", default="out_author")
    run.add_argument("--seed", type=int, default=0)
    scored = commands.add_parser("compare", help="sample the author's model and print sample.py --compare's figures")
    scored.add_argument("model", help="author.pt")
    scored.add_argument("--compare", required=True)
    scored.add_argument("--train-data", required=True, help="the training images, for the copying check")
    scored.add_argument("--n", type=int)
    scored.add_argument("--out", default="samples_author.png", help="the grid of the first 64 samples")
    probed = commands.add_parser("probe", help="the LUT's cos between images at several t, and per block")
    probed.add_argument("model", help="this repo's ckpt.pt, or author.pt")
    probed.add_argument("images", help="a folder of real faces")
    probed.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    {"train": train, "compare": compare, "probe": probe}[args.command](args)


if __name__ == "__main__":
    main()
