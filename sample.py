"""Sample cat faces from a checkpoint written by train.py.

Usage:
    python sample.py out/ckpt.pt                       # samples.png: an 8x8 grid, enlarged 2x
    python sample.py out/ckpt.pt --gif                 # also samples.gif: from noise to cat
    python sample.py out/ckpt.pt --n 256 --png-dir cats/   # one PNG per image
    python sample.py out/ckpt.pt --compare data/cats   # 1024 samples: quality figures

The model is rebuilt from the checkpoint's own config and runs with its EMA weights. The sampler
(model.sample) takes --steps Euler steps along the straight path from noise (t=0) to image (t=1).

--compare DIR (a folder of real images, or "toy" for freshly drawn toy cats) prints two figures:
  * the sliced Wasserstein distance (SWD) between the samples and as many real images, as in
    Karras et al. 2018 (Progressive GANs, section 5): random 7x7 neighbourhoods of a Laplacian
    pyramid, compared level by level (64, 32 and 16 pixels; x1e3, lower is better), next to the
    same figure for two disjoint halves of DIR, the floor that a perfect model would reach;
  * a memorisation check: each sample's L2 distance to its nearest training image (flips
    included), over that to the second nearest (0 for a copy), against the same figure for the
    real images of DIR; the training images are the checkpoint's own (or --train-data).
Every figure is the same for the same --seed.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from data import image_grid, load_images, toy_cats
from model import LUTTransformer, autocast_for, best_device, fast_dtype, load_checkpoint, load_weights, sample

CHUNK = 256  # images sampled at once, to bound memory for large --n


def fail(message):
    sys.exit(f"error: {message}")


def load_model(path, device):
    """The EMA model of a train.py checkpoint on `device`, and the settings it was trained with
    (train.py's arguments as a dict)."""
    try:
        checkpoint = load_checkpoint(path)
        model = LUTTransformer(checkpoint["config"])
        load_weights(model, checkpoint["ema"])
    except ValueError as e:
        fail(e)
    print(f"loaded {path}: {model.cfg.lut} head, step {checkpoint['step']}")
    return model.to(device).eval(), checkpoint["args"]


def generate(model, n, steps, seed, device, t_sampling, frames=None):
    """n samples (n, 3, 64, 64) in [-1, 1], from the same noise for the same seed on any device;
    in bf16 where the device runs it natively (model.fast_dtype), else fp32. t_sampling: how the
    model's training drew t, which sets the sampler's time grid (model.sample).
    If `frames` is a list, it receives the first chunk's trajectory: its noise, then every step."""
    noise = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    autocast = autocast_for(device, fast_dtype(device))
    chunks = []
    with autocast:
        for start in range(0, n, CHUNK):
            chunk = noise[start:start + CHUNK].to(device)
            if frames is not None and start == 0:
                frames.append(chunk)  # the trajectory starts at the pure noise
            chunks.append(sample(model, chunk, steps, t_sampling, frames if start == 0 else None).float().cpu())
    return torch.cat(chunks)


# ----------------------------------------------------------------------------- sample quality
BINOMIAL = torch.tensor([1.0, 4, 6, 4, 1]) / 16  # 5x5 Gaussian = outer product of this with itself


def blur(x, gain=1.0):
    """5x5 binomial filter per channel, mirrored at the borders (as cv2.pyrDown): (N, 3, H, W)."""
    kernel = gain * (BINOMIAL[:, None] * BINOMIAL).expand(x.shape[1], 1, 5, 5)  # (3, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(images, levels=3):
    """(N, 3, 64, 64) -> [detail at 64, detail at 32, ..., the blurred image at 64 / 2^(levels-1)].
    Each detail level is the image minus its blurred, halved and re-doubled self."""
    pyramid = [images]
    for _ in range(levels - 1):
        small = blur(pyramid[-1])[:, :, ::2, ::2]  # (N, 3, H/2, W/2)
        up = torch.zeros_like(pyramid[-1])
        up[:, :, ::2, ::2] = small  # zeros between the pixels; the 4x gain makes up for them
        pyramid[-1] = pyramid[-1] - blur(up, gain=4.0)
        pyramid.append(small)
    return pyramid


def descriptors(level, ys, xs, size=7):
    """The size x size neighbourhoods at top-left corners (ys, xs), each (N, per_image), of the
    images of one pyramid level (N, 3, H, W), normalised per channel by the mean and std of this
    set of neighbourhoods -> (N * per_image, 3 * size * size)."""
    windows = level.unfold(2, size, 1).unfold(3, size, 1)  # all neighbourhoods, a view: (N, 3, H', W', 7, 7)
    picked = windows[torch.arange(len(level))[:, None], :, ys, xs].flatten(0, 1)  # (N * per_image, 3, 7, 7)
    picked = picked - picked.mean((0, 2, 3), keepdim=True)
    return (picked / picked.std((0, 2, 3), keepdim=True).clamp_min(1e-8)).flatten(1)  # flat images: zeros


def sliced_wasserstein(a, b, generator, directions=128, repeats=4):
    """Mean over random unit directions of the 1-D Wasserstein distance between the projections
    of descriptor sets a and b (M, D): in 1-D it is the mean gap between the sorted values."""
    distances = []
    for _ in range(repeats):
        dirs = torch.randn(directions, a.shape[1], generator=generator)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)  # (directions, D)
        gaps = (dirs @ a.T).sort().values - (dirs @ b.T).sort().values  # (directions, M), sorted rows
        distances.append(gaps.abs().mean())
    return torch.stack(distances).mean().item()


def swd(a, b, seed=0, per_image=128, size=7):
    """SWD x1e3 between two equally large image sets (N, 3, 64, 64) in [-1, 1] at each pyramid level
    (64, 32, 16 pixels), as Karras et al. 2018 with their settings. Both sets take neighbourhoods at
    the same random places, so that swd(a, b) = swd(b, a) and swd(a, a) = 0."""
    if len(a) != len(b):
        raise ValueError(f"SWD compares sets of equal size, not {len(a)} and {len(b)} images")
    generator = torch.Generator().manual_seed(seed)
    result = []
    for level_a, level_b in zip(laplacian_pyramid(a.float()), laplacian_pyramid(b.float())):
        H, W = level_a.shape[2:]
        ys, xs = (torch.randint(side - size + 1, (len(a), per_image), generator=generator) for side in (H, W))
        result.append(1e3 * sliced_wasserstein(descriptors(level_a, ys, xs, size),
                                               descriptors(level_b, ys, xs, size), generator))
    return result


def nearest_distances(queries, train, k=2, leave_one_out=False, chunk=1024):
    """L2 distances from each query image (N, 3, 64, 64) in [-1, 1] to its k nearest training images
    (M, 3, 64, 64) uint8 -> (N, k), ascending. A training image counts at the nearer of itself and
    its mirror image, since training flips images. With leave_one_out, a query that is itself a
    training image skips it. In float64, so that exact copies come out at 0, not rounding noise."""
    queries = queries.double().flatten(1)
    nearest = torch.empty(len(queries), 0, dtype=torch.float64)
    for start in range(0, len(train), chunk):
        block = train[start:start + chunk].double() / 127.5 - 1  # uint8 -> [-1, 1]
        direct = torch.cdist(queries, block.flatten(1))  # (N, chunk)
        distances = torch.minimum(direct, torch.cdist(queries, block.flip(3).flatten(1)))
        if leave_one_out:
            distances = distances.masked_fill(direct < 1e-3, torch.inf)  # distinct images differ by >= 1/127.5
        nearest = torch.cat([nearest, distances], 1)
        nearest = nearest.topk(min(k, nearest.shape[1]), largest=False).values
    return nearest


def copying_check(samples, train, real):
    """Are the samples closer to training images than real images are? samples and real (N, 3, 64,
    64) in [-1, 1]; `real` should be images the model never saw (a training image skips itself).
    The verdict uses the distance to the nearest training image over that to the second nearest:
    0 for a copy, but near 1 for a grey or blurry image, which is close to everything in plain L2."""
    near_samples, near_real = nearest_distances(samples, train), nearest_distances(real, train, leave_one_out=True)
    ratio_samples = near_samples[:, 0] / near_samples[:, 1].clamp_min(1e-8)  # (N,)
    ratio_real = near_real[:, 0] / near_real[:, 1].clamp_min(1e-8)
    closer = (ratio_samples < torch.quantile(ratio_real, 0.01)).double().mean().item()  # by chance: 1%
    verdict = (f"possible copying: {100 * closer:.1f}% of samples lie closer to a training image than 99% "
               f"of real images do (by chance: about 1%)" if closer > 0.05 else "no sign of copying")
    return {"nearest_samples": near_samples[:, 0].median().item(), "nearest_real": near_real[:, 0].median().item(),
            "ratio_samples": ratio_samples.median().item(), "ratio_real": ratio_real.median().item(),
            "closer": closer, "verdict": verdict}


def compare(samples, train_args, args):
    """The --compare report: SWD against real images next to its floor, then the copying check."""
    seed = train_args.get("seed", 0)
    try:  # "toy": cats drawn with another seed than the training cats, so never trained on
        real = toy_cats(2 * len(samples), seed + 1) if args.compare == "toy" else load_images(args.compare)
        train = load_images(args.train_data or train_args.get("data"), seed=seed)
    except ValueError as e:
        fail(e)
    n = min(len(samples), len(real) // 2)  # the floor needs two disjoint sets of n real images
    if n < 2:
        fail(f"--compare needs at least 4 real images; {args.compare} has {len(real)}")
    if n < len(samples):
        print(f"warning: {args.compare} has only {len(real)} images, so {n} samples are compared")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))
    real_a, real_b = (real[order[i * n:(i + 1) * n]].float() / 127.5 - 1 for i in range(2))
    samples = ((samples[:n].clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # as a PNG stores them

    results = {"samples vs real": swd(samples, real_a, args.seed),
               "real vs real (floor)": swd(real_b, real_a, args.seed)}
    print(f"sliced Wasserstein distance x1e3 (Karras et al. 2018), {n} vs {n} images, lower is better")
    print(f"{'':22}{'64px':>8}{'32px':>8}{'16px':>8}{'mean':>8}")
    for name, levels in results.items():
        levels.append(sum(levels) / len(levels))
        print(f"{name:22}" + "".join(f"{v:8.2f}" for v in levels))
    print(f"{'ratio (1 is perfect)':22}" + "".join(f"{m / f:8.2f}" for m, f in zip(*results.values())))

    check = copying_check(samples, train, real_a)
    print(f"memorisation: nearest of {len(train)} training images or their mirrors (medians)")
    for name, key in [("L2 distance to the nearest", "nearest"), ("nearest / second-nearest (0: a copy)", "ratio")]:
        print(f"  {name:38}samples {check[key + '_samples']:6.3f}   real {check[key + '_real']:6.3f}")
    print(f"  {check['verdict']}")


def main():
    parser = argparse.ArgumentParser(description="Sample cat faces from a LUT cats checkpoint.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("ckpt", help="checkpoint written by train.py, e.g. out/ckpt.pt")
    parser.add_argument("--n", type=int, help="number of images (default: 64, or 1024 with --compare)")
    parser.add_argument("--steps", type=int, default=64, help="Euler sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples.png", help="grid of the first 64 images")
    parser.add_argument("--png-dir", help="also write every image as its own PNG into this folder")
    parser.add_argument("--gif", action="store_true", help="also write the sampling trajectory as a GIF")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--compare", metavar="DIR", help='print quality figures against the real images in DIR, '
                        'or "toy" for fresh toy cats (see the top of this file)')
    parser.add_argument("--train-data", metavar="DIR", help="training images for --compare's copying check "
                        "(default: the checkpoint's own --data)")
    args = parser.parse_args()
    if args.n is None:
        args.n = 1024 if args.compare else 64
    if args.n < 1 or args.steps < 1:
        fail("--n and --steps must be at least 1")
    device = torch.device(args.device or best_device())

    model, train_args = load_model(args.ckpt, device)
    frames = [] if args.gif else None
    images = generate(model, args.n, args.steps, args.seed, device, train_args["t_sampling"], frames)
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
    if args.compare:
        compare(images, train_args, args)


if __name__ == "__main__":
    main()
