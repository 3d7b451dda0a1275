"""The record of a training run in its --out folder, which train.py writes as it goes. A reader
learning the model can skip this file.

    log.csv       one row per log line: step, loss, the image MSE in four bins of t, lr, img/s, and the
                  minutes the run has taken since it started, over every resume
    lut.csv       one row per picture step: what the LUT is doing (lut_figures) and the seam ratio
    samples_000500.png, lut.png, gram.png   at each picture step (pictures)
    progress.gif  one frame per picture step: the fixed-noise samples, so noise turns into cats
    loss.png      the curves of log.csv on a log scale, drawn with Pillow

All of them survive a resume: keep_up_to trims what an interrupted run wrote after its checkpoint.
Nothing to run: train.py imports this file.
"""
import csv
import io
import math

import torch
from PIL import Image, ImageDraw, ImageSequence

from data import image_grid, save_picture
from quality import detail, seam_ratio
from atomic import save_atomically
from model import SAMPLE_STEPS, sample

BINS = 4  # the loss is also reported per quarter of t, so trouble at one noise level shows
LOG_COLUMNS = ["step", "loss", *(f"mse_t{25 * i}-{25 * (i + 1)}" for i in range(BINS)), "lr", "img_per_s", "minutes"]
LUT_COLUMNS = ["step", "entries_in_use", "effective_entries", "mean_abs_cos", "seam_ratio", "cos_between_images",
               "detail_64px"]


def write_csv(rows, file):
    """rows into a binary file, as save_atomically's writer."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    file.write(text.getvalue().encode())


def read_csv(path):
    """The rows of a CSV file as lists of strings, header first; [] for a missing file."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        text = f.read()
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]  # blank lines: an editor's
    return rows if text.endswith("\n") else rows[:-1]  # a last line without its newline was cut short


def append_row(path, row):
    """One more row at the end of a CSV file; floats to 6 significant digits, None as empty."""
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row])


def keep_up_to(out, step):
    """Start log.csv, lut.csv and progress.gif over from `step`, the checkpoint's step (0 for a new run):
    rows and frames after it came from an interrupted run that this one redoes, so they go."""
    kept = {}
    for name, columns in [("log.csv", LOG_COLUMNS), ("lut.csv", LUT_COLUMNS)]:
        kept[name] = [row for row in read_csv(out / name)[1:] if int(row[0]) <= step]
        save_atomically([columns, *kept[name]], out / name, write=write_csv)
    FRAMES[out] = read_frames(out)[:len(kept["lut.csv"])]  # one frame per lut.csv row
    save_frames(out, FRAMES[out])
    plot_losses(out)


FRAMES = {}  # out -> the frames of its progress.gif, read once by keep_up_to and then added to


def read_frames(out):
    """The frames of progress.gif so far; [] before the first."""
    if not (out / "progress.gif").exists():
        return []
    with Image.open(out / "progress.gif") as gif:
        return [gif_frame(frame) for frame in ImageSequence.Iterator(gif)]


def gif_frame(picture):
    """The picture in 256 colours, as a GIF holds it. Each frame is quantized once, here: progress.gif is
    written whole at every picture step, and quantizing every earlier frame again would make each step dearer."""
    return picture.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)


def save_frames(out, frames):
    """progress.gif, written atomically: it is the only copy of the earlier sample grids."""
    if not frames:  # a new run in an old folder
        (out / "progress.gif").unlink(missing_ok=True)
        return
    save_picture(frames[0], out / "progress.gif", save_all=True, append_images=frames[1:], duration=400, loop=0)


def captioned(grid, text):
    """The picture with a black strip on top that holds `text`."""
    image = Image.new("RGB", (grid.width, grid.height + 14))
    image.paste(grid, (0, 14))
    ImageDraw.Draw(image).text((4, 2), text, fill="white")
    return image


def plot_losses(out):
    """loss.png: the loss and the MSE per t bin of log.csv against the step, on a log scale."""
    rows = [[float(v) for v in row[:2 + BINS]] for row in read_csv(out / "log.csv")[1:]]
    if not rows:  # a new run in an old folder
        (out / "loss.png").unlink(missing_ok=True)
        return
    W, H, left, right, top, bottom = 720, 400, 56, 120, 24, 40  # the plot area lies inside the margins
    values = [v for row in rows for v in row[1:] if v > 0]  # an empty t bin (nan) is left out
    low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    high = max(high, low + 1)
    last = max(int(rows[-1][0]), 1)
    x_of = lambda step: left + (W - left - right) * step / last
    y_of = lambda v: top + (H - top - bottom) * (high - math.log10(v)) / (high - low)
    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    for decade in range(low, high + 1):
        for m in (1, 2, 5)[:3 if decade < high else 1]:
            y = y_of(m * 10 ** decade)
            draw.line([(left, y), (W - right, y)], fill=(225, 225, 225) if m > 1 else (170, 170, 170))
            label = f"{m * 10 ** decade:g}"
            draw.text((left - 6 - draw.textlength(label), y - 6), label, fill="black")
    tick = min(m * 10 ** e for e in range(len(str(last))) for m in (1, 2, 5) if m * 10 ** e * 6 >= last)
    for i in range(0, last + 1, tick):
        x = x_of(i)
        draw.line([(x, H - bottom), (x, H - bottom + 4)], fill="black")
        label = f"{i}"
        draw.text((x - draw.textlength(label) / 2, H - bottom + 6), label, fill="black")
    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    draw.text(((left + W - right) / 2 - 10, H - 16), "step", fill="black")
    draw.text((left, 6), "training loss, and the image MSE by t (noisiest first), log scale", fill="black")
    colours = ["black", (31, 119, 180), (44, 160, 44), (255, 127, 14), (214, 39, 40)]
    for i, colour in enumerate(colours):
        draw.line([(x_of(row[0]), y_of(row[1 + i])) for row in rows if row[1 + i] > 0], fill=colour, width=2)
        label = "loss" if i == 0 else f"MSE, t {(i - 1) / BINS:g}-{i / BINS:g}"
        draw.text((W - right + 10, top + 16 * i), label, fill=colour)
    save_picture(image, out / "loss.png")


# ----------------------------------------------------------------------------- the LUT's pictures and figures

def lut_atlas(lut):
    """One LUT (K, 3, 8, 8) as K tiles (K, 3, 8, 8) in [-1, 1], for image_grid with about sqrt(K) per row.
    The tanh and dynamic entries have no fixed range, so the whole LUT is divided by its largest
    absolute value: mid-grey is zero, and signs stay visible."""
    lut = lut.detach().float().cpu()
    return lut / lut.abs().max().clamp_min(1e-8)


def gram_image(lut):
    """The LUT's Gram matrix as a heat map (1, 3, K, K) in [-1, 1], normalised to cosine similarities
    so the diagonal is 1: red = similar, white = orthogonal, blue = opposite."""
    cos = cosines(lut.cpu()).clamp(-1, 1)  # (K, K)
    pos, neg = cos.clamp_min(0), (-cos).clamp_min(0)
    rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos])  # white -> red or blue: (3, K, K) in [0, 1]
    return rgb[None] * 2 - 1


IN_USE = 0.01  # an entry is in use when its mean |weight| is above 1% of the most used entry's


def cosines(lut):
    """Cosine similarities between the entries of a LUT (..., K, 3, 8, 8) -> (..., K, K), in fp32."""
    flat = lut.detach().float().flatten(-3)  # (..., K, 192)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return flat @ flat.transpose(-1, -2)


def off_diagonal_mean(matrices):
    """The mean of the off-diagonal elements of (..., n, n), over all leading dimensions too."""
    n = matrices.shape[-1]
    return matrices[..., ~torch.eye(n, dtype=torch.bool, device=matrices.device)].mean().item()


def entry_usage(weights):
    """How much each entry is used: the mean |weight| over a batch's patches, (B, N, K) -> (K,)."""
    return weights.detach().float().abs().mean((0, 1))


def lut_figures(weights, lut):
    """What the LUT is doing, from a batch's weights (B, N, K) and the LUT they mixed, (K, 3, 8, 8)
    or per image (B, K, 3, 8, 8). A dict of
      in_use:    entries whose usage (entry_usage) is above IN_USE times the largest usage;
      effective: the effective number of entries, exp of the entropy of the usage normalised to sum
                 to 1: K when all are used equally, 1 when one does all the work;
      cos:       the mean |cos| between two different entries of a LUT: 0 when orthogonal;
      between:   dynamic LUTs only (else None), the mean cos between entry k of one image's LUT and
                 entry k of another image's, over k and every pair of images: 1 when the LUT does not
                 change from image to image."""
    usage = entry_usage(weights)
    p = usage / usage.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return {"in_use": int((usage > IN_USE * usage.max()).sum()), "effective": entropy.exp().item(),
            "cos": off_diagonal_mean(cosines(lut).abs()),
            "between": off_diagonal_mean(cosines(lut.transpose(0, 1))) if lut.dim() == 5 else None}


def pictures(out, step, model, noise, autocast, t_sampling, real):
    """The picture step: samples of `model` (the EMA weights) from fixed noise (64, 3, 64, 64), unguided, recorded
    with what the LUT did as the last sampling step painted them (record_pictures)."""
    painted = {}  # the head's (weights (64, 64, K), LUT (K, 3, 8, 8) or (64, K, 3, 8, 8)) at the last call
    hook = model.lut_head.register_forward_hook(lambda module, inputs, output: painted.update(last=output))
    with autocast:
        samples = sample(model, noise, SAMPLE_STEPS, t_sampling).clamp(-1, 1)
    hook.remove()
    record_pictures(out, step, samples, *painted["last"], real)


def record_pictures(out, step, samples, weights, luts, real):
    """The picture step: the grid of samples (64, 3, 64, 64), lut.png and gram.png (the first sample's LUT if
    dynamic; entries by usage, most used first) from the head's weights (64, 64, K) and LUT(s) as the last
    sampling step painted them, the figures of lut_figures, the seam ratio and the samples' finest detail
    over that of real training images (N, 3, 64, 64) as a printed line and a lut.csv row; then the grid
    becomes a frame of progress.gif and loss.png is redrawn."""
    real_detail = detail(real)[0]  # flat training images (one 1x1 picture, say) have none: then no figure
    figures = {**lut_figures(weights, luts), "seams": seam_ratio(samples.cpu()),
               "detail": detail(samples.cpu())[0] / real_detail if real_detail > 1e-3 else None}
    lut = (luts[0] if luts.dim() == 5 else luts)[entry_usage(weights).argsort(descending=True)]  # (K, 3, 8, 8)
    print(f"lut: {figures['in_use']}/{len(lut)} entries in use, effective {figures['effective']:.1f}, "
          f"mean |cos| {figures['cos']:.3f}, seam ratio {figures['seams']:.2f}, detail "
          + ("-" if figures["detail"] is None else f"{figures['detail']:.2f}")
          + (f", cos between images {figures['between']:.3f}" if figures["between"] is not None else ""), flush=True)
    save_picture(image_grid(samples, ncol=8, scale=2, pad=2), out / f"samples_{step:06d}.png")
    save_picture(image_grid(lut_atlas(lut), ncol=math.ceil(math.sqrt(len(lut))), scale=4, pad=1), out / "lut.png")
    save_picture(image_grid(gram_image(lut), ncol=1, scale=max(1, 256 // len(lut))), out / "gram.png")
    append_row(out / "lut.csv", [step, *(figures[k] for k in ("in_use", "effective", "cos", "seams", "between",
                                                                "detail"))])
    FRAMES[out].append(gif_frame(captioned(image_grid(samples, ncol=8, pad=1), f"step {step}")))
    save_frames(out, FRAMES[out])
    plot_losses(out)


# ----------------------------------------------------------------------------- how a head paints (sample.py --paint)
PAINTED_PATCH = 3 * 8 + 2  # the patch taken apart: row 3, column 2 of the 8x8 grid, where a cat's eye is
TERMS = 5  # the entries shown, largest weight first; the rest of the sum as one more term


def terms_of(weights, lut, patch=PAINTED_PATCH, n=TERMS):
    """One image's patch as a sum: weights (64, K) and its LUT (K, 3, 8, 8) -> the n largest terms w_k L[k]
    (n, 3, 8, 8), the rest of the sum (3, 8, 8), and those n weights and entries' indices, (n,) each."""
    w = weights[patch].float()  # (K,)
    top = w.abs().topk(n).indices  # (n,)
    terms = w[top, None, None, None] * lut[top].float()  # (n, 3, 8, 8)
    whole = torch.einsum("k,kchw->chw", w, lut.float())  # the patch as apply_lut paints it
    return terms, whole - terms.sum(0), w[top], top


def paint_picture(images, weights, luts, rows=4, scale=3):
    """The picture of how a head paints, a row for each of the first `rows` images: the image as the head
    painted it at the last sampling step (images (B, 3, 64, 64), the patch taken apart outlined), the LUT it
    was painted with (its 64 most used entries, most used first: each row has its own for the dynamic head), and
    the patch as its largest weighted entries adding up. weights (B, 64, K); luts (K, 3, 8, 8) or (B, K, 3, 8, 8)."""
    font_h, gap = 12, 4 * scale
    tile = lambda x, s: image_grid(x[None], scale=s)  # (3, h, w) in [-1, 1] -> a PIL image, s times as large
    pictures = []
    for b in range(min(rows, len(images))):
        lut = luts[b] if luts.dim() == 5 else luts
        used = entry_usage(weights[b:b + 1]).argsort(descending=True)[:64]
        atlas = image_grid(lut_atlas(lut[used]), ncol=8, scale=scale, pad=1)
        terms, rest, w, top = terms_of(weights[b], lut)
        parts = [(tile(t, 4 * scale), f"{v:+.2f} x #{k}") for t, v, k in zip(terms, w.tolist(), top.tolist())]
        parts += [(tile(rest, 4 * scale), "+ the rest"), (tile(terms.sum(0) + rest, 4 * scale), "= the patch")]
        painted = tile(images[b], scale)
        y, x = divmod(PAINTED_PATCH, 8)
        ImageDraw.Draw(painted).rectangle([x * 8 * scale - 1, y * 8 * scale - 1, (x + 1) * 8 * scale,
                                           (y + 1) * 8 * scale], outline=(255, 0, 0))
        pieces = [(painted, "painted"), (atlas, "its LUT, most used first"), *parts]
        width = sum(p.width for p, _ in pieces) + gap * (len(pieces) - 1)
        row = Image.new("RGB", (width, max(p.height for p, _ in pieces) + font_h), "white")
        left = 0
        for piece, label in pieces:
            row.paste(piece, (left, font_h))
            ImageDraw.Draw(row).text((left, 0), label, fill="black")
            left += piece.width + gap
        pictures.append(row)
    sheet = Image.new("RGB", (max(p.width for p in pictures), sum(p.height + gap for p in pictures)), "white")
    for i, row in enumerate(pictures):
        sheet.paste(row, (0, sum(p.height + gap for p in pictures[:i])))
    return sheet
