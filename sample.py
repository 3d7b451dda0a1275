"""Sample cat faces from a checkpoint written by train.py.

Usage:
    python sample.py out/ckpt.pt                       # samples.png: an 8x8 grid, enlarged 2x
    python sample.py out/ckpt.pt --gif                 # also samples.gif: from noise to cat
    python sample.py out/ckpt.pt --n 256 --png-dir cats/   # one PNG per image

The model is rebuilt from the checkpoint's own config and runs with its EMA weights. The sampler
(model.sample) takes --steps Euler steps along the straight path from noise (t=0) to image (t=1).
"""
import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from data import image_grid
from model import Config, LUTTransformer, sample

CHUNK = 256  # images sampled at once, to bound memory for large --n


def fail(message):
    sys.exit(f"error: {message}")


def load_model(path, device):
    """The EMA model of a train.py checkpoint, on `device` (a CUDA checkpoint loads on a CPU)."""
    if not Path(path).is_file():
        fail(f"no checkpoint at {path}; train one first with: python train.py")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, corrupt or not a torch file at all
        fail(f"cannot read {path} as a checkpoint ({type(e).__name__}); is the file complete?")
    if not isinstance(checkpoint, dict) or not {"config", "ema"} <= checkpoint.keys():
        fail(f"{path} is not a checkpoint written by train.py")
    model = LUTTransformer(Config(**checkpoint["config"]))
    model.load_state_dict(checkpoint["ema"])
    print(f"loaded {path}: {model.cfg.lut} head, step {checkpoint['step']}")
    return model.to(device).eval()


def generate(model, n, steps, seed, device, frames=None):
    """n samples (n, 3, 64, 64) in [-1, 1], the same for the same seed whatever the device.
    If `frames` is a list, it receives the first chunk's trajectory: its noise, then every step."""
    noise = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    chunks = []
    with autocast:
        for start in range(0, n, CHUNK):
            chunk = noise[start:start + CHUNK].to(device)
            if frames is not None and start == 0:
                frames.append(chunk)  # the trajectory starts at the pure noise
            chunks.append(sample(model, chunk, steps, frames if start == 0 else None).float().cpu())
    return torch.cat(chunks)


def main():
    parser = argparse.ArgumentParser(description="Sample cat faces from a LUT cats checkpoint.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("ckpt", help="checkpoint written by train.py, e.g. out/ckpt.pt")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--steps", type=int, default=64, help="Euler sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples.png", help="grid of the first 64 images")
    parser.add_argument("--png-dir", help="also write every image as its own PNG into this folder")
    parser.add_argument("--gif", action="store_true", help="also write the sampling trajectory as a GIF")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1:
        fail("--n and --steps must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else
                                          "mps" if torch.backends.mps.is_available() else "cpu"))

    model = load_model(args.ckpt, device)
    frames = [] if args.gif else None
    images = generate(model, args.n, args.steps, args.seed, device, frames)
    image_grid(images[:64], ncol=8, scale=2, pad=2).save(args.out)
    print(f"wrote {args.out}")
    if args.png_dir:
        Path(args.png_dir).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            image_grid(image[None]).save(Path(args.png_dir) / f"{i:05d}.png")
        print(f"wrote {len(images)} images to {args.png_dir}/")
    if args.gif:
        # The first 16 images: the starting noise, then one frame per Euler step.
        pictures = [image_grid(x[:16].float().cpu(), ncol=4, pad=2) for x in frames]
        gif_path = Path(args.out).with_suffix(".gif")
        durations = [80] * (len(pictures) - 1) + [2000]  # ms per frame; the cats stay up for 2 s
        pictures[0].save(gif_path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
        print(f"wrote {gif_path}")


if __name__ == "__main__":
    main()
