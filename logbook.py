"""The record of a training run in its --out folder, which train.py writes as it goes:

    log.csv       one row per log line: step, loss, the image MSE in four bins of t, lr, img/s, and the
                  minutes the run has taken since it started, over every resume
    lut.csv       one row per picture step: what the LUT is doing (lut.lut_figures) and the seam ratio
    progress.gif  one frame per picture step: the fixed-noise samples, so noise turns into cats
    loss.png      the curves of log.csv on a log scale, drawn with Pillow

All of them survive a resume: keep_up_to trims what an interrupted run wrote after its checkpoint.
Nothing to run: train.py imports this file.
"""
import csv
import io
import math

from PIL import Image, ImageDraw, ImageSequence

from data import save_picture
from model import save_atomically

BINS = 4  # the loss is also reported per quarter of t, so trouble at one noise level shows
LOG_COLUMNS = ["step", "loss", *(f"mse_t{25 * i}-{25 * (i + 1)}" for i in range(BINS)), "lr", "img_per_s", "minutes"]
LUT_COLUMNS = ["step", "entries_in_use", "effective_entries", "mean_abs_cos", "seam_ratio", "cos_between_images"]


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
    rows = list(csv.reader(io.StringIO(text, newline="")))
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
    save_frames(out, read_frames(out)[:len(kept["lut.csv"])])  # one frame per lut.csv row
    plot_losses(out)


def read_frames(out):
    """The frames of progress.gif so far; [] before the first."""
    if not (out / "progress.gif").exists():
        return []
    with Image.open(out / "progress.gif") as gif:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(gif)]


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
