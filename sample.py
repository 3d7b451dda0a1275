"""Sample cat faces from a checkpoint written by train.py.

Usage:
    python sample.py out/ckpt.pt                       # samples.png: an 8x8 grid, enlarged 2x
    python sample.py out/ckpt.pt --gif                 # also samples.gif: from noise to cat
    python sample.py out/ckpt.pt --n 256 --png-dir cats/   # one PNG per image
    python sample.py out/ckpt.pt --compare data/heldout   # quality figures against real cats
    python sample.py out/ckpt.pt --paint paint.png     # how the head painted 4 of them, entry by entry

The model is rebuilt from the checkpoint's own config and runs with its EMA weights. The sampler
(model.sample) takes --steps steps along the straight path from noise (t=0) to image (t=1): Heun steps
(two network calls each), then a last one onto the prediction; from t = 0.3 on, each call is guided by
the weaker copy of the model that train.py kept a third of the way into the run (--guidance; 1: off,
the softmax head's default).

--compare DIR (a folder of real images, or "toy" for freshly drawn toy cats) prints the figures of
quality.py: the sliced Wasserstein distance to as many real images of DIR next to its real-vs-real
floor, the seam ratio of the samples and of the real images, and a memorisation check against the
training images (the checkpoint's own, or --train-data). Every figure is the same for the same --seed.
SWD needs two sets of n real images for its floor, so by default n is half the images of DIR, at
most 1024 (for "toy", 1024).
"""
import cli  # before torch: a Ctrl-C while it loads ends in one line

cli.stop_quietly("interrupted")

import argparse
import sys
from pathlib import Path

import torch

import quality
from checkpoint import load_checkpoint, load_weights
from cli import available_device, input_folder, number, output_file, output_folder, picture
from data import image_grid, load_images, save_picture, toy_cats
from logbook import paint_picture
from lut import apply_lut
from machine import autocast_for, best_device, fast_dtype
from model import GUIDANCE, GUIDED_FROM, SAMPLE_STEPS, LUTTransformer, sample

CHUNK = 256  # images sampled at once: a large --n would not fit in a GPU's memory in one go


def fail(message):
    sys.exit(f"error: {message}")


def load_model(path, device):
    """The EMA model of a train.py checkpoint on `device`, its guide (model.sample; None in a checkpoint without
    one), and the settings it was trained with (train.py's arguments as a dict)."""
    try:
        checkpoint = load_checkpoint(path)
        model, guide = LUTTransformer(checkpoint["config"]), None
        load_weights(model, checkpoint["ema"])
        if checkpoint.get("guide") is not None:
            guide = LUTTransformer(checkpoint["config"])
            load_weights(guide, checkpoint["guide"])
    except ValueError as e:
        fail(e)
    print(f"loaded {path}: {model.cfg.lut} head, step {checkpoint['step']}"
          + ("" if guide is not None else ", no guide in it: sampled without guidance"))
    return model.to(device).eval(), None if guide is None else guide.to(device).eval(), checkpoint["args"]


def generate(model, n, steps, seed, device, dtype, train_t_sampling, frames=None, guide=None, guidance=GUIDANCE,
             painted=None):
    """n samples (n, 3, 64, 64) in [-1, 1], from the same noise for the same seed on any device,
    with matmuls in dtype ("bf16" or "fp32", as model.autocast_for). train_t_sampling: how
    the model's training drew t, which sets the sampler's time grid; guide and guidance as model.sample.
    If `frames` is a list, it receives the first 16 images' trajectory: their noise, then every step. If
    `painted` is a dict, it receives under "last" what the head gave at the last call for the first images:
    (weights (B, 64, K), LUT (K, 3, 8, 8) or (B, K, 3, 8, 8))."""
    noise = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    autocast = autocast_for(device, dtype)

    def keep(x):  # a GIF's 16 images a step, not the whole chunk (that would be ~240 MB over 19 steps)
        frames.append(x[:16].to("cpu", torch.float32, copy=True))  # (16, 3, 64, 64); a view would keep x

    chunks = []
    with autocast:
        for start in range(0, n, CHUNK):
            chunk = noise[start:start + CHUNK].to(device)
            first = frames is not None and start == 0
            if first:
                keep(chunk)  # the trajectory starts at the pure noise
            if painted is not None and start == 0:  # the head's answer at every call; the last one stays
                hook = model.lut_head.register_forward_hook(lambda module, inputs, output: painted.update(last=output))
            chunks.append(sample(model, chunk, steps, train_t_sampling, keep if first else None, guide, guidance)
                          .float().cpu())
            if painted is not None and start == 0:
                hook.remove()
            if n > CHUNK:  # tens of seconds or more on a CPU: say how far it is
                print(f"sampled {start + len(chunk)}/{n} images", flush=True)
    return torch.cat(chunks)


def compare_sets(train_args, args):
    """The number of samples (--n, or by default half the real images, at most 1024), --compare's real
    images and the training images of the copying check: read and checked before sampling, so that a
    bad folder stops the run at once."""
    seed, train_folder = train_args["seed"], args.train_data or train_args["data"]
    if train_folder and not Path(train_folder).is_dir():  # None: the toy cats (from their cache, or drawn again)
        fail(f"the copying check reads the training images, {train_folder}, which is no folder from here: "
             f"give --train-data DIR")
    try:
        if args.compare == "toy":  # cats drawn with another seed than the training cats, so never trained on
            if train_args["data"]:
                fail(f"--compare toy: this model was trained on {train_args['data']}, not on toy cats, and the figures "
                     f"need real images like its own: give --compare a folder of faces it never saw")
            n = args.n or 1024
            real = toy_cats(max(2 * n, 4), seed + 1)  # at least 4: a --n too small is then blamed on --n
        else:
            real = load_images(args.compare)
            n = args.n or min(1024, len(real) // 2)  # the floor needs two sets of n real images
        quality.check_sets(n, real, source=args.compare)  # before the training images, slower to read
        train = load_images(train_folder, seed=seed)
        quality.check_training_set(train)
        return n, real, train
    except ValueError as e:
        fail(e)


def write(images, frames, out, png_dir, gif_path):
    """The grid of the first 64 images to out; every image to png_dir (if given); frames, if a list, as a GIF."""
    save_picture(image_grid(images[:64], ncol=8, scale=2, pad=2), out)
    print(f"wrote {out}")
    if png_dir:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_picture(image_grid(image[None]), Path(png_dir) / f"{i:05d}.png")
        print(f"wrote {len(images)} image{'s' if len(images) > 1 else ''} to {png_dir}/")
    if frames is not None:
        # The first 16 images: the starting noise, then one frame per step.
        pictures = [image_grid(x, ncol=4, pad=2) for x in frames]
        durations = [80] * (len(pictures) - 1) + [2000]  # ms per frame; the cats stay up for 2 s
        save_picture(pictures[0], gif_path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
        print(f"wrote {gif_path}")


def real_images(path):
    """--compare's `type=`: "toy" or a folder."""
    return path if path == "toy" else input_folder(path)


def main():
    parser = argparse.ArgumentParser(description="Sample cat faces from a LUT cats checkpoint.",
                                     usage=argparse.SUPPRESS)  # a bad flag: one line of error, no usage block
    parser.add_argument("ckpt", help="checkpoint written by train.py, e.g. out/ckpt.pt")
    parser.add_argument("--n", type=number(int, 1, 99_999), help="number of images (default: 64; with --compare, "
                        "half the images of DIR, at most 1024)")
    parser.add_argument("--steps", type=number(int, 1, 10_000), default=SAMPLE_STEPS,
                        help="sampling steps: Heun steps of two network calls, then one onto the prediction "
                        "(default: %(default)s)")
    parser.add_argument("--guidance", type=number(float, 0, 5),
                        help="autoguidance weight w: each prediction x_hat becomes x_hat + (w - 1)(x_hat - the "
                        f"guide's), from t = {GUIDED_FROM} on (model.sample); 1: unguided "
                        f"(default: {GUIDANCE}; softmax 1)")
    parser.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0,
                        help="seed of the noise (the same seed, the same cats) and of --compare's draws "
                        "(default: %(default)s)")
    parser.add_argument("--out", default="samples.png", type=picture,
                        help="grid of the first 64 images (default: %(default)s)")
    parser.add_argument("--png-dir", type=output_folder,
                        help="also write every image as its own PNG into this folder")
    parser.add_argument("--gif", action="store_true", help="also write the sampling trajectory as a GIF")
    parser.add_argument("--paint", metavar="PNG", type=picture, help="also write how the head painted the first 4 "
                        "samples: each as painted, its LUT, and one patch as its largest weighted entries adding up")
    parser.add_argument("--device", type=available_device, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default: bf16 where the device "
                        "runs it natively)")
    parser.add_argument("--compare", metavar="DIR", type=real_images, help='print quality figures against the real '
                        'images in DIR, or "toy" for freshly drawn toy cats')
    parser.add_argument("--train-data", metavar="DIR", type=input_folder, help="training images for --compare's "
                        "copying check (default: the checkpoint's own --data)")
    args = parser.parse_args()
    if args.n is None and not args.compare:  # --compare's default depends on DIR: compare_sets sets it
        args.n = 64
    if args.train_data and not args.compare:
        parser.error("argument --train-data: only --compare reads it; add --compare DIR")
    gif_path = Path(args.out).with_suffix(".gif")
    if args.gif:
        if Path(args.out).suffix.lower() == ".gif":
            parser.error("argument --gif: --out is a .gif, where the GIF would overwrite the grid; give --out a .png")
        try:
            output_file(gif_path)
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument --gif: {e} (the GIF's name is --out's, ending .gif)")
    device = torch.device(args.device or best_device())

    model, guide, train_args = load_model(args.ckpt, device)
    if args.guidance is None:  # guiding the softmax head multiplies its garish tiles (docs/results.md)
        args.guidance = 1 if model.cfg.lut == "softmax" else GUIDANCE
    args.n, real, train = compare_sets(train_args, args) if args.compare else (args.n, None, None)
    frames, painted = [] if args.gif else None, {} if args.paint else None
    images = generate(model, args.n, args.steps, args.seed, device, args.dtype or fast_dtype(device),
                      train_args["t_sampling"], frames, guide, args.guidance, painted)
    try:
        write(images, frames, args.out, args.png_dir, gif_path)
        if args.paint:
            weights, luts = (x.float().cpu() for x in painted["last"])
            save_picture(paint_picture(apply_lut(weights, luts), weights, luts), args.paint)
            print(f"wrote {args.paint}")
    except OSError as e:  # a full disk, say
        fail(f"cannot write {e.filename or 'the pictures'}: {e.strerror or e}")
    if args.compare:
        quality.compare(images, real, train, args.seed, source=args.compare)


if __name__ == "__main__":
    main()
