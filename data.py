"""Data for LUT cats: 64x64 cat faces as uint8 tensors, random training batches, image grids.

Three sources of images:
  * no --data: 10,000 cartoon cats drawn with Pillow (toy_cats), cached in data/cache;
  * --data DIR: every .png/.jpg/.jpeg/.webp/.bmp under DIR, center-cropped and resized to 64x64,
    cached in data/cache so the second start is instant (load_folder);
  * `python data.py --download data/cats` fetches the real cat-face dataset into data/cats.

    python data.py --preview out.png              # 8x8 grid of a training batch of toy cats
    python data.py --preview out.png --data DIR   # ... or of your own images
    python data.py --download data/cats --parts 1 2 3

Images are stored as uint8 (N, 3, 64, 64) and handed to the model as float (B, 3, 64, 64) in [-1, 1].
"""
import argparse
import gzip
import hashlib
import math
import os
import random
import shutil
import sys
import tarfile
import time
import urllib.request
import zlib
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from model import save_atomically

SIZE = 64  # every image is SIZE x SIZE pixels
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DOWNLOAD_URL = "https://github.com/fferlito/Cat-faces-dataset/raw/master"  # holds dataset-part{1,2,3}.tar.gz


def pil_to_bytes(image):
    """Center-crop a PIL image to a square, resize it to SIZE x SIZE RGB and return its raw bytes."""
    image.draft("RGB", (SIZE, SIZE))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that is still >= SIZE
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    if image.mode.startswith("I"):  # 16/32-bit grey: scale 0..65535 to 0..255 (a plain convert clips it to white)
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # composite alpha over white
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    return image.resize((SIZE, SIZE), Image.LANCZOS, box=box, reducing_gap=3.0).tobytes()


def bytes_to_images(raw, n):
    """A bytearray of n raw RGB images, one after the other -> uint8 tensor (n, 3, SIZE, SIZE)."""
    pixels = torch.frombuffer(raw, dtype=torch.uint8).view(n, SIZE, SIZE, 3)  # shares raw's memory...
    return pixels.permute(0, 3, 1, 2).contiguous()  # ...until this copy into channels-first order


def load_folder(path, cache_dir="data/cache"):
    """All images under folder `path` (searched recursively) as uint8 (N, 3, SIZE, SIZE), sorted by path.

    The decoded tensor is cached in cache_dir under a hash of the folder and of every file's name,
    size and modification time, so any added, removed or changed file triggers a fresh decode.
    Unreadable files are skipped with a warning. Nothing is ever written into the folder itself.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"no folder {folder}: give --data a folder of images, "
                         f"or fetch the cat dataset with `python data.py --download {folder}`")
    all_files = sorted(p for p in folder.rglob("*") if p.is_file())
    files = [p for p in all_files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        found = ", ".join(sorted({p.suffix.lower() or "no extension" for p in all_files}))
        raise ValueError(f"no images in {folder}: found {len(all_files)} files{f' ({found})' if found else ''}; "
                         f"expected {'/'.join(IMAGE_EXTENSIONS)} files, anywhere under the folder")

    key = hashlib.sha256(str(folder.resolve()).encode())
    for file in files:
        stat = file.stat()
        key.update(f"\n{file.relative_to(folder)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    cache_file = Path(cache_dir) / f"{folder.resolve().name}-{key.hexdigest()[:16]}.pt"
    if cache_file.exists():
        return torch.load(cache_file)

    raw, skipped = bytearray(), []
    show_progress = len(files) >= 1000
    for count, file in enumerate(files, 1):
        try:
            with Image.open(file) as image:
                raw += pil_to_bytes(image)  # decodes fully here, so a truncated file fails inside the try
        except Exception:  # Pillow raises many kinds (OSError, SyntaxError, ValueError...) for bad files
            skipped.append(file.name)
        if show_progress and (count % 1000 == 0 or count == len(files)):
            print(f"\rloading {count}/{len(files)} images", end="\n" if count == len(files) else "", file=sys.stderr)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable files in {folder} "
              f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})", file=sys.stderr)
    if not raw:
        raise ValueError(f"no readable images in {folder}: all {len(files)} image files failed to decode")
    images = bytes_to_images(raw, len(files) - len(skipped))
    if len(images) < 64:
        print(f"warning: only {len(images)} images in {folder}; the model will memorise them", file=sys.stderr)
    save_atomically(images, cache_file)
    return images


# ---------------------------------------------------------------------------- toy cats
FUR = {"black": (28, 26, 30), "white": (236, 232, 226), "ginger": (222, 132, 52), "grey": (128, 130, 138),
       "cream": (236, 204, 160), "brown": (112, 78, 52)}
EYES = [(90, 170, 60), (220, 190, 40), (230, 140, 30), (80, 150, 220), (170, 190, 60), (190, 100, 30)]


def draw_toy_cat(rng):
    """One cartoon cat face drawn with Pillow from random generator rng -> RGB PIL image, SIZE x SIZE."""
    big = 2 * SIZE  # draw at twice the size, then shrink: smooth (anti-aliased) edges
    # Background: vertical gradient between two random colours (a 1x2 image stretched bilinearly).
    grey = rng.randrange(40, 220)  # mostly muted colours, like rooms, sofas and gardens behind real cats
    top, bottom = [tuple((grey + rng.randrange(30, 230)) // 2 for _ in range(3)) for _ in range(2)]
    gradient = Image.new("RGB", (1, 2))
    gradient.putdata([top, bottom if rng.random() < 0.6 else top])
    canvas = gradient.resize((big, big), Image.BILINEAR)

    # Fur: a pattern drawn over the whole layer, later cut to the head's silhouette.
    fur_name = rng.choice(list(FUR))
    fur_color = FUR[fur_name]
    dark = tuple(max(0, c - 70) for c in fur_color)
    fur = Image.new("RGB", (big, big), fur_color)
    paint = ImageDraw.Draw(fur)
    cx, cy = big / 2, big * rng.uniform(0.56, 0.62)  # face centre
    head_w, head_h = big * rng.uniform(0.40, 0.48), big * rng.uniform(0.34, 0.40)  # half-axes of the head
    pattern = rng.choice(["solid", "tabby", "calico", "bicolour"])
    if pattern == "tabby":  # stripes on the forehead and the cheeks
        for k in (-1, 0, 1):
            x = cx + k * head_w * 0.22
            paint.line([(x, cy - head_h * 1.1), (x + k * 4, cy - head_h * 0.45)], fill=dark, width=5)
        for side in (-1, 1):
            for k in range(3):
                y = cy + head_h * (-0.05 + 0.2 * k)
                paint.line([(cx + side * head_w, y), (cx + side * head_w * 0.62, y - 4)], fill=dark, width=4)
    elif pattern == "calico":  # ginger and black patches
        for color in (FUR["ginger"], FUR["black"]) * rng.randint(1, 2):
            px, py, r = rng.uniform(0, big), rng.uniform(0, big * 0.75), rng.uniform(14, 30)
            paint.ellipse([px - r, py - r * 0.8, px + r, py + r * 0.8], fill=color)
    if pattern == "bicolour" or (pattern == "calico" and rng.random() < 0.5):  # white blaze, muzzle and chin
        muzzle_w = head_w * rng.uniform(0.35, 0.6)
        blaze_y = cy + head_h * 0.2
        blaze = [(cx, cy - head_h * 0.8), (cx - muzzle_w * 0.6, blaze_y), (cx + muzzle_w * 0.6, blaze_y)]
        paint.polygon(blaze, fill=FUR["white"])
        paint.ellipse([cx - muzzle_w, cy + head_h * 0.05, cx + muzzle_w, cy + head_h * 1.2], fill=FUR["white"])

    # Silhouette: head ellipse plus two triangular ears, each with its own size and outward angle.
    silhouette = Image.new("L", (big, big), 0)
    shape = ImageDraw.Draw(silhouette)
    shape.ellipse([cx - head_w, cy - head_h, cx + head_w, cy + head_h], fill=255)
    ear_size, ear_spread = rng.uniform(0.55, 0.85) * head_h, rng.uniform(0.15, 0.55)
    inner_ear = (230, 150, 150) if fur_name != "black" else (120, 80, 90)
    ears = []
    for side in (-1, 1):
        base_x, base_y = cx + side * head_w * 0.62, cy - head_h * 0.62
        angle = side * ear_spread + rng.uniform(-0.08, 0.08)  # radians away from vertical
        tip = (base_x + math.sin(angle) * ear_size * 1.5, base_y - math.cos(angle) * ear_size * 1.5)
        outer = [(base_x - side * ear_size * 0.55, base_y - ear_size * 0.3), tip,
                 (base_x + side * ear_size * 0.75, base_y + ear_size * 0.4)]
        shape.polygon(outer, fill=255)
        ears.append([(0.55 * x + 0.45 * base_x, 0.55 * y + 0.45 * (base_y + 6)) for x, y in outer])  # pink inside
    cat = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    cat.paste(fur, mask=silhouette)
    face = ImageDraw.Draw(cat)
    for inner in ears:
        face.polygon(inner, fill=inner_ear)

    # Eyes: iris colour and size, round or slit pupils, a shared gaze direction, a highlight.
    eye_r, eye_dx = head_h * rng.uniform(0.2, 0.3), head_w * rng.uniform(0.36, 0.46)  # radius, distance from centre
    eye_y = cy - head_h * rng.uniform(0.05, 0.2)
    iris = rng.choice(EYES)
    pupil_w = eye_r * (rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(0.12, 0.22))
    pupil_h = eye_r * rng.uniform(0.6, 0.85)
    gaze_x, gaze_y = rng.uniform(-0.35, 0.35) * eye_r, rng.uniform(-0.2, 0.2) * eye_r
    for side in (-1, 1):
        ex = cx + side * eye_dx
        face.ellipse([ex - eye_r, eye_y - eye_r * 0.85, ex + eye_r, eye_y + eye_r * 0.85],
                     fill=iris, outline=(20, 20, 20), width=2)
        px, py = ex + gaze_x, eye_y + gaze_y
        face.ellipse([px - pupil_w, py - pupil_h, px + pupil_w, py + pupil_h], fill=(10, 10, 12))
        glint = [px - eye_r * 0.5, py - eye_r * 0.5, px - eye_r * 0.2, py - eye_r * 0.2]
        face.ellipse(glint, fill=(250, 250, 250))

    # Nose, mouth and whiskers.
    nose_y, nose_r = cy + head_h * rng.uniform(0.22, 0.32), head_w * rng.uniform(0.07, 0.11)
    nose = rng.choice([(230, 120, 130), (60, 40, 40), (200, 110, 100)])
    nose_top, nose_tip = nose_y - nose_r * 0.6, nose_y + nose_r * 0.6
    face.polygon([(cx - nose_r, nose_top), (cx + nose_r, nose_top), (cx, nose_tip)], fill=nose)
    line = (40, 30, 30) if fur_name not in ("black", "brown") else (150, 140, 140)
    mouth_y = nose_y + nose_r * 1.5
    face.line([(cx, nose_tip), (cx, mouth_y)], fill=line, width=2)
    for left in (cx - nose_r * 1.6, cx):  # two lower half-circles: the cartoon "w" mouth
        face.arc([left, mouth_y - nose_r, left + nose_r * 1.6, mouth_y + nose_r * 0.6], 0, 180, fill=line, width=2)
    whisker = (245, 245, 245) if fur_name in ("black", "brown", "grey") else (60, 50, 50)
    for side in (-1, 1):
        for k in range(rng.randint(2, 3)):
            end = (cx + side * head_w * rng.uniform(1.0, 1.25), nose_y - 6 + k * 9 + rng.uniform(-4, 4))
            face.line([(cx + side * nose_r * 2.2, nose_y + k * 4), end], fill=whisker, width=1)

    # Head pose: tilt, zoom and shift in one affine warp, then composite over the background.
    tilt, zoom = math.radians(rng.uniform(-18, 18)), rng.uniform(1.0, 1.25)
    shift_x, shift_y = rng.uniform(-8, 8), rng.uniform(-6, 6)
    cos, sin = math.cos(tilt) / zoom, math.sin(tilt) / zoom  # maps each output pixel back to the drawing
    ox, oy = big / 2 + shift_x, big / 2 + shift_y
    warp = (cos, sin, big / 2 - cos * ox - sin * oy, -sin, cos, big / 2 + sin * ox - cos * oy)
    cat = cat.transform((big, big), Image.AFFINE, warp, Image.BILINEAR)
    canvas.paste(cat, mask=cat)
    small = canvas.reduce(2)  # average each 2x2 block: anti-aliased edges
    noise = Image.frombytes("RGB", small.size, rng.randbytes(3 * SIZE * SIZE))  # uniform 0..255
    return Image.blend(small, noise, 0.05)  # mild camera-like noise (about +-6 levels)


def toy_cats(n, seed=0):
    """n procedurally drawn cat faces as uint8 (n, 3, SIZE, SIZE). Image i depends only on (seed, i)."""
    raw = bytearray()
    for i in range(n):  # about 1 ms each; a process pool was no faster on a 2-core machine
        rng = random.Random(f"toy cat {seed} {i}")  # string seeds hash to distinct streams: no (seed, i) collisions
        raw += draw_toy_cat(rng).tobytes()
    return bytes_to_images(raw, n)


def load_images(data=None, cache_dir="data/cache", seed=0):
    """Training images as uint8 (N, 3, SIZE, SIZE): the folder `data`, or 10,000 toy cats when data is None."""
    if data is not None:
        return load_folder(data, cache_dir)
    cache_file = Path(cache_dir) / f"toy_cats-v2-seed{seed}.pt"  # bump v2 whenever draw_toy_cat changes
    if cache_file.exists():
        return torch.load(cache_file)
    print(f"drawing 10000 toy cats (once; then cached in {cache_file})", file=sys.stderr)
    images = toy_cats(10_000, seed)
    save_atomically(images, cache_file)
    return images


def get_batch(images, batch_size, generator, device):
    """batch_size random images (with replacement), each flipped left-right with probability 1/2.

    images: uint8 (N, 3, SIZE, SIZE) on the CPU; generator: a CPU torch.Generator, so the same seed gives
    the same batches. Under DDP, train.py seeds each rank's generator with seed + rank so ranks see
    different images. Returns float32 (batch_size, 3, SIZE, SIZE) in [-1, 1] on `device`.
    """
    index = torch.randint(len(images), (batch_size,), generator=generator)
    flip = torch.rand(batch_size, generator=generator) < 0.5
    batch = images[index]  # (B, 3, SIZE, SIZE) uint8
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    return batch.to(device).float() / 127.5 - 1  # move as uint8: 4x less to copy than float


def image_grid(images, ncol=8, scale=1, pad=0):
    """Tile float images (N, 3, H, W) in [-1, 1] into one PIL image, ncol per row.

    Each tile is enlarged `scale` times (nearest neighbour, so pixels stay crisp)
    and tiles are separated by `pad` black pixels.
    """
    n, _, h, w = images.shape
    ncol = min(ncol, n)
    nrow = (n + ncol - 1) // ncol
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, 3, h*s, w*s)
    tile_h, tile_w = h * scale, w * scale
    grid = torch.zeros(3, nrow * (tile_h + pad) - pad, ncol * (tile_w + pad) - pad, dtype=torch.uint8)
    for i in range(n):
        top, left = (i // ncol) * (tile_h + pad), (i % ncol) * (tile_w + pad)
        grid[:, top:top + tile_h, left:left + tile_w] = pixels[i]
    rgb_bytes = bytearray(grid.numel())  # Pillow wants (H, W, 3) row-major bytes: copy via a tensor view, no numpy
    torch.frombuffer(rgb_bytes, dtype=torch.uint8).copy_(grid.permute(1, 2, 0).flatten())
    return Image.frombytes("RGB", (grid.shape[2], grid.shape[1]), rgb_bytes)


# ---------------------------------------------------------------------------- download
def fetch(url, target):
    """Download url to file target, resuming a partial file with an HTTP Range request; shows bytes and speed."""
    have = target.stat().st_size if target.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 206:  # server (or file://) ignored the Range: start again from byte 0
                have = 0
            total = have + int(response.headers.get("Content-Length", 0))
            name, start, done = url.rsplit("/", 1)[-1], time.time(), have
            with open(target, "ab" if have else "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    speed = (done - have) / max(time.time() - start, 1e-6)
                    print(f"\r{name}: {done / 1e6:.1f} of {total / 1e6:.1f} MB, {speed / 1e6:.1f} MB/s",
                          end="", file=sys.stderr)
            print(file=sys.stderr)
    except OSError as error:  # URLError, timeouts and dropped connections are all OSErrors
        if getattr(error, "code", None) == 416:  # HTTP "range not satisfiable": the partial file is already whole
            return
        raise ValueError(f"could not download {url}: {error}; run the same command again to resume") from None


def check_archive(archive):
    """Raise ValueError unless archive is an intact .tar.gz holding only plain files and folders inside it."""
    try:
        with gzip.open(archive) as stream:  # reading to the end makes gzip check its CRC: catches corruption
            while stream.read(1 << 20):
                pass
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise ValueError(f"{archive} is corrupt ({error}); deleted it, run the same command again") from None
    for member in members:
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            raise ValueError(f"{archive} holds unsafe entry {member.name!r} (absolute path, '..' or a link); "
                             f"deleted it, extract it by hand only if you trust it")


def download(dest, parts=(1,), base_url=DOWNLOAD_URL):
    """Download and extract parts of the cat-face dataset (64x64 PNGs) into folder dest/part{N}.

    Each part is fetched to dest/.part{N}.tar.gz (resuming a partial download), checked, extracted
    into dest/.part{N}.extracting and only then renamed to dest/part{N}: an existing dest/part{N}
    means that part is complete, so running again skips it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        final = dest / f"part{part}"
        if final.is_dir():
            print(f"part {part} is already in {final}, skipping", file=sys.stderr)
            continue
        archive, partial = dest / f".part{part}.tar.gz", dest / f".part{part}.tar.gz.part"
        if not archive.exists():
            fetch(f"{base_url}/dataset-part{part}.tar.gz", partial)
            os.replace(partial, archive)
        try:
            check_archive(archive)
        except ValueError:
            archive.unlink()
            raise
        staging = dest / f".part{part}.extracting"
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of an interrupted run
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")  # the "data" filter is a second guard against unsafe entries
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        archive.unlink()
        print(f"part {part}: extracted into {final}", file=sys.stderr)
    print(f"done; train with: python train.py --data {dest}")


def main():
    parser = argparse.ArgumentParser(description="Look at the training data, or download the real cat faces.",
                                     epilog="example: python data.py --download data/cats && "
                                            "python data.py --preview cats.png --data data/cats")
    parser.add_argument("--preview", metavar="PNG",
                        help="write an 8x8 grid of one training batch (flips included) to PNG")
    parser.add_argument("--data", metavar="DIR", help="folder of images to preview (default: the built-in toy cats)")
    parser.add_argument("--cache-dir", default="data/cache",
                        help="where decoded images are cached (default: %(default)s)")
    parser.add_argument("--download", metavar="DIR", nargs="?", const="data/cats",
                        help="download the cat-face dataset into DIR (default: %(const)s)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1], choices=[1, 2, 3],
                        help="which of the 3 parts (about 10k faces each) to download (default: 1)")
    args = parser.parse_args()
    if not (args.preview or args.download):
        parser.print_help()
        return
    try:
        if args.download:
            download(args.download, args.parts)
        if args.preview:
            images = load_images(args.data, args.cache_dir)
            batch = get_batch(images, 64, torch.Generator().manual_seed(0), "cpu")
            image_grid(batch, ncol=8, scale=2, pad=2).save(args.preview)
            print(f"wrote {args.preview}: 64 of {len(images)} training images", file=sys.stderr)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
