"""How good are generated cats? The figures that `python sample.py CKPT --compare DIR` prints.

  * swd: the sliced Wasserstein distance (SWD) between two sets of images, as in Karras et al. 2018
    (Progressive GANs, section 5): random 7x7 neighbourhoods of a Laplacian pyramid, compared level
    by level (64, 32 and 16 pixels; x1e3, lower is better). Next to it stands the same figure for
    those real images against as many others, the floor that a perfect model would reach.
  * copying_check: a memorisation check. Each sample's L2 distance to its nearest training image
    (flips included) over that to the second nearest (0 for a copy), against the same figure for
    real images the model never saw.
  * seam_ratio: how much the 8x8 patch grid shows. Neighbouring pixels on either side of a patch
    border against neighbouring pixels inside a patch; about 1 for photos, large for a patchwork.
  * detail and colour: what that SWD cannot see, since it normalises each set by its own statistics:
    the rms of each Laplacian level (blur lowers the finest), the mean colour, and an SWD whose
    descriptors share one normalisation across both sets.
  * precision_recall: diversity, which SWD mixes with everything else. Precision and recall by nearest
    neighbours (Kynkäänniemi et al. 2019) in SWD's descriptor space: are the samples' patterns like real
    ones, and does the variety of the real ones show up among the samples (a model that paints one cat
    over and over has a low recall, whatever its SWD).

Images are float (N, 3, 64, 64) in [-1, 1]; training images uint8, as data.py stores them.
Tests: python -m pytest -q tests/test_quality.py
"""
import torch
import torch.nn.functional as F

from lut import PATCH

# ----------------------------------------------------------------------------- sliced Wasserstein distance
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


def descriptors(level, ys, xs, size=7, like=None):
    """The size x size neighbourhoods at top-left corners (ys, xs), each (N, per_image), of the
    images of one pyramid level (N, 3, H, W), normalised per channel by the mean and std of this
    set of neighbourhoods, or of `like`'s at the same places -> (N * per_image, 3 * size * size)."""
    def neighbourhoods(x):  # image i's at corners (ys[i], xs[i]): (N * per_image, 3, 7, 7)
        windows = x.unfold(2, size, 1).unfold(3, size, 1)  # all of them, a view: (N, 3, H', W', 7, 7)
        return windows.permute(0, 2, 3, 1, 4, 5)[torch.arange(len(x))[:, None], ys, xs].flatten(0, 1)

    picked = neighbourhoods(level)
    reference = picked if like is None else neighbourhoods(like)
    mean, std = reference.mean((0, 2, 3), keepdim=True), reference.std((0, 2, 3), keepdim=True)
    return ((picked - mean) / std.clamp_min(1e-8)).flatten(1)  # flat images: zeros


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


def swd(a, b, seed=0, per_image=128, size=7, shared=False):
    """SWD x1e3 between two equally large image sets (N, 3, 64, 64) in [-1, 1] at each pyramid level
    (64, 32, 16 pixels), as Karras et al. 2018 with their settings; shared: one normalisation, b's, for
    both sets' descriptors, so that a loss of contrast or a colour cast shows. Both sets take
    neighbourhoods at the same random places, so that swd(a, a) = 0 (and swd(a, b) = swd(b, a) unshared)."""
    if len(a) != len(b):
        raise ValueError(f"SWD compares sets of equal size, not {len(a)} and {len(b)} images")
    generator = torch.Generator().manual_seed(seed)
    result = []
    for level_a, level_b in zip(laplacian_pyramid(a.float()), laplacian_pyramid(b.float())):
        H, W = level_a.shape[2:]
        ys, xs = (torch.randint(side - size + 1, (len(a), per_image), generator=generator) for side in (H, W))
        result.append(1e3 * sliced_wasserstein(descriptors(level_a, ys, xs, size, level_b if shared else None),
                                               descriptors(level_b, ys, xs, size), generator))
    return result


# ----------------------------------------------------------------------------- diversity
def precision_recall(samples, real, seed=0, per_set=2048, k=3, size=7):
    """Precision and recall by k nearest neighbours (Kynkäänniemi et al. 2019) at each pyramid level (64, 32,
    16 pixels), in SWD's descriptor space: per_set random 7x7 neighbourhoods of each set, both normalised by the
    real ones' statistics. Each descriptor's ball reaches its k-th nearest neighbour of its own set. Precision:
    the share of the samples' descriptors inside some real ball (are they like real ones?); recall: the share of
    the real descriptors inside some sample ball (does the variety of the real ones show up: diversity). Returns
    ([precision per level], [recall per level])."""
    generator = torch.Generator().manual_seed(seed)

    def pick(level):  # per_set images drawn at random, and a random corner in each: (per_set, 1) each
        corners = [torch.randint(side - size + 1, (per_set, 1), generator=generator) for side in level.shape[2:]]
        return level[torch.randint(len(level), (per_set,), generator=generator)], *corners

    inside = lambda a, b: (torch.cdist(a, b) <= radii(b, k)[None]).any(1).double().mean().item()  # a in b's balls
    precision, recall = [], []
    for level_s, level_r in zip(laplacian_pyramid(samples.float()), laplacian_pyramid(real.float())):
        real_picked, ys, xs = pick(level_r)
        r = descriptors(real_picked, ys, xs, size)
        picked, ys, xs = pick(level_s)
        s = descriptors(picked, ys, xs, size, like=real_picked)  # normalised by real neighbourhoods' statistics
        precision.append(inside(s, r))
        recall.append(inside(r, s))
    return precision, recall


def radii(points, k):
    """Each point's distance to its k-th nearest other point of the set (M, D) -> (M,)."""
    return torch.cdist(points, points).kthvalue(k + 1, dim=1).values  # the point itself is its own nearest


def detail(images, levels=3):
    """The rms of each Laplacian detail level (64, 32, 16 pixels) of images (N, 3, 64, 64): a list."""
    return [level.square().mean().sqrt().item() for level in laplacian_pyramid(images.float(), levels + 1)[:levels]]


def mean_colour(images):
    """The mean R, G and B of images (N, 3, H, W) in [-1, 1]: a list."""
    return images.float().mean((0, 2, 3)).tolist()


# ----------------------------------------------------------------------------- copying check
def nearest_distances(queries, train, k=2, leave_one_out=False, chunk=1024):
    """L2 distances from each query image (N, 3, 64, 64) in [-1, 1] to its k nearest training images
    (M, 3, 64, 64) uint8 -> (N, k), ascending. A training image counts at the nearer of itself and
    its mirror image, since training flips images. With leave_one_out, a query that is itself a
    training image skips that image (a mirrored twin still counts). In float64, so that exact copies
    come out near 0 (about 1e-5: cdist's fast matmul path), far below any two distinct images."""
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


# ----------------------------------------------------------------------------- seams
def seam_ratio(images):
    """The mean squared difference of neighbouring pixels across an 8x8 patch border (pixel columns
    7|8, 15|16, ..., and the same rows) over that of neighbouring pixels inside a patch, for images
    (N, 3, H, W). Real cat photos give 1.05-1.06; samples whose patches do not join up give more."""
    x = images.double()
    across, inside = [], []
    for diffs in (x.diff(dim=3), x.diff(dim=2).transpose(2, 3)):  # left-right pairs, then top-bottom ones
        border = torch.arange(diffs.shape[3]) % PATCH == PATCH - 1  # pair (j, j + 1) with j = 7, 15, ...
        across.append(diffs[..., border].square().flatten())
        inside.append(diffs[..., ~border].square().flatten())
    return (torch.cat(across).mean() / torch.cat(inside).mean()).item()


# ----------------------------------------------------------------------------- the report
def check_sets(n_samples, real, source="the real images"):
    """What compare needs of the samples and the real images, checked by sample.py before it samples:
    ValueError, in one line, if unmet."""
    if len(real) < 4:  # the floor needs two disjoint sets of at least 2 real images
        raise ValueError(f"--compare needs at least 4 real images; {source} has {len(real)}")
    if n_samples < 2:  # SWD compares sets
        raise ValueError("--compare needs at least 2 samples; give --n 2 or more")
    if n_samples > len(real) // 2:  # the floor needs two disjoint sets of n_samples real images
        raise ValueError(f"--n {n_samples}: the SWD floor needs twice as many real images, and {source} has "
                         f"{len(real)}; give --n {len(real) // 2} or fewer")


def check_training_set(train):
    """What the copying check needs of the training images: ValueError, in one line, if unmet."""
    if len(train) < 2:  # the nearest training image is compared with the next nearest
        raise ValueError(f"the copying check needs at least 2 training images, not {len(train)}: give --train-data DIR")


def compare(samples, real, train, seed=0, source="the real images"):
    """Print the report of sample.py --compare: SWD of the samples against real images next to its
    floor, the seam ratio of both, then the copying check. samples float (N, 3, 64, 64) in [-1, 1];
    real and train uint8 (M, 3, 64, 64), as check_sets allows."""
    check_sets(len(samples), real, source)
    check_training_set(train)
    n = len(samples)
    if n < 500:  # few images: sampling noise dominates both distances
        print(f"warning: with {n} images the SWD ratio leans towards 1; compare only figures of the same n "
              f"(the README's: 500)")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    real_a, real_b = (real[order[i * n:(i + 1) * n]].float() / 127.5 - 1 for i in range(2))
    samples = ((samples.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # as a PNG stores them

    for shared in (False, True):
        results = {"samples vs real": swd(samples, real_a, seed, shared=shared),
                   "real vs real (floor)": swd(real_b, real_a, seed, shared=shared)}
        print(f"sliced Wasserstein distance x1e3 (Karras et al. 2018), {n} vs {n} images, lower is better"
              if not shared else "the same with one normalisation, the real images', for both sets (sees blur and "
                                 "colour casts)")
        print(f"{'':22}{'64px':>8}{'32px':>8}{'16px':>8}{'mean':>8}")
        for name, levels in results.items():
            levels.append(sum(levels) / len(levels))
            print(f"{name:22}" + "".join(f"{v:8.2f}" for v in levels))
        # The mean column's ratio is that of the two means (the README's "SWD / floor"), not the mean of the ratios
        print(f"{'ratio (1 is perfect)':22}" + "".join(f"{m / f:8.2f}" for m, f in zip(*results.values())))
    real_detail = detail(real_a)
    ratios = {name: [d / r for d, r in zip(detail(images), real_detail)] for name, images in
              [("samples", samples), ("real", real_b)]}
    print("detail, rms of the 64 / 32 / 16px Laplacian levels over the real images': "
          + "   ".join(f"{name} " + " ".join(f"{v:.2f}" for v in values) for name, values in ratios.items()))
    shifts = {name: [c - r for c, r in zip(mean_colour(images), mean_colour(real_a))] for name, images in
              [("samples", samples), ("real", real_b)]}
    print("mean colour R G B minus the real images': "
          + "   ".join(f"{name} " + " ".join(f"{v:+.3f}" for v in values) for name, values in shifts.items()))
    figures = {name: precision_recall(images, real_a, seed) for name, images in [("samples", samples), ("real", real_b)]}
    print("precision | recall (diversity) of the 64 / 32 / 16px neighbourhoods, 3 nearest neighbours: " + "   ".join(
        f"{name} " + " ".join(f"{v:.2f}" for v in precision) + " | " + " ".join(f"{v:.2f}" for v in recall)
        for name, (precision, recall) in figures.items()))
    print(f"seam ratio, 8x8 patch borders / inside patches: samples {seam_ratio(samples):.2f}   "
          f"real {seam_ratio(real_a):.2f}")

    check = copying_check(samples, train, real_a)
    print(f"memorisation: nearest of {len(train)} training images or their mirrors (medians)")
    for name, key in [("L2 distance to the nearest", "nearest"), ("nearest / second-nearest (0: a copy)", "ratio")]:
        print(f"  {name:38}samples {check[key + '_samples']:6.3f}   real {check[key + '_real']:6.3f}")
    print(f"  {check['verdict']}")
