"""Data for LUT cats: 64x64 cat faces as uint8 tensors, random training batches, image grids.

Three sources of images:
  * no --data: 10,000 cartoon cats drawn with Pillow (toy_cats.py), cached in data/cache;
  * --data DIR: every .png/.jpg/.jpeg/.webp/.bmp under DIR (linked subfolders included), center-cropped
    and resized to 64x64, cached in data/cache so the second start is instant (load_folder);
  * `python data.py --download data/cats` fetches the real cat-face dataset into data/cats.

    python data.py --preview out.png              # 8x8 grid of a training batch of toy cats
    python data.py --preview out.png --data DIR   # ... or of your own images
    python data.py --download data/cats --parts 1 2 3

Images are stored as uint8 (N, 3, 64, 64) and handed to the model as float (B, 3, 64, 64) in [-1, 1].
"""
import argparse
import gzip
import hashlib
import os
import random
import shutil
import sys
import tarfile
import time
import urllib.request
import warnings
import zlib
from pathlib import Path

import torch
from PIL import Image, ImageOps

from atomic import save_atomically
from cli import output_folder, picture, stop_quietly, training_folder
from toy_cats import draw_toy_cat

SIZE = 64  # every image is SIZE x SIZE pixels
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_DIR = "data/cache"  # decoded images, relative to where a command runs
DOWNLOAD_URL = "https://github.com/fferlito/Cat-faces-dataset/raw/master"  # holds dataset-part{1,2,3}.tar.gz


def load_images(data=None, cache_dir=CACHE_DIR, seed=0):
    """Training images as uint8 (N, 3, SIZE, SIZE): the folder `data`, or 10,000 toy cats when data is None."""
    if data is not None:
        return load_folder(data, cache_dir)
    cache_file = Path(cache_dir) / f"toy_cats-v2-seed{seed}.pt"  # bump v2 whenever draw_toy_cat changes
    images = read_cache(cache_file)
    if images is None:
        print(f"drawing 10000 toy cats (once; then cached in {cache_file})", file=sys.stderr)
        images = toy_cats(10_000, seed)
        write_cache(images, cache_file)
    return images


def read_cache(file):
    """What a cache file holds, or None when it is missing or damaged (then it is made again)."""
    try:
        return torch.load(file)
    except Exception:  # missing, cut short by a full disk, written by an incompatible torch...
        return None


def write_cache(value, file):
    """Cache value in file, or say why not: the data is then decoded or drawn again next time."""
    try:
        save_atomically(value, file)
    except OSError as e:
        print(f"warning: cannot cache the images in {file} ({e.strerror or e}); they are made again next time",
              file=sys.stderr)


def files_under(folder):
    """Every file under folder, in linked subfolders too (each real folder once: a link to a folder
    above would loop), sorted by path. A folder that cannot be read stops it with a ValueError."""
    files, seen = [], set()
    for root, subfolders, names in os.walk(folder, followlinks=True, onerror=unreadable_folder):
        real = os.path.realpath(root)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        # By name, real folders before links, so that the same folder tree is always read the same way
        subfolders.sort(key=lambda name: (os.path.islink(os.path.join(root, name)), name))
        files += [Path(root, name) for name in names]
    return sorted(p for p in files if p.is_file())  # is_file: not a broken link


def unreadable_folder(error):
    """os.walk's onerror: a folder it cannot read stops the load, rather than leaving its images out unsaid."""
    raise ValueError(f"cannot read the folder {error.filename} ({error.strerror}): fix its permissions, or move "
                     f"it out of the folder of images")


def decode(file):
    """An image file as SIZE x SIZE RGB bytes (pil_to_bytes), or a str saying why it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's two lines, as one of ours:
            with Image.open(file) as image:
                if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                    print(f"note: {file} has {image.width * image.height / 1e6:.0f} Mpixels: decoding it takes a "
                          f"while", file=sys.stderr)
                return pil_to_bytes(image)  # decodes fully here, so a truncated file fails inside the try
    except Image.DecompressionBombError:  # over Pillow's limit of about 179 Mpixels, a guard for the memory
        return "too large"
    except Exception:  # Pillow raises many kinds (OSError, SyntaxError, ValueError...) for bad files
        return "unreadable"


def load_folder(path, cache_dir=CACHE_DIR):
    """All images under folder `path` (searched recursively) as uint8 (N, 3, SIZE, SIZE), sorted by path.

    The decoded tensor is cached in cache_dir under a hash of the folder and of every file's name,
    size and modification time, so any added, removed or changed file triggers a fresh decode, and so
    does a skipped file that can be read now (its permissions fixed, say); the folder's older cache
    files go. Unreadable or too large files are skipped, with a warning at every load. Nothing is ever written into
    the folder itself.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"no folder {folder}: give --data a folder of images, "
                         f"or fetch the cat dataset with `python data.py --download {folder}`")
    all_files = files_under(folder)
    files = [p for p in all_files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        found = ", ".join(sorted({p.suffix.lower() or "no extension" for p in all_files}))
        raise ValueError(f"no images in {folder}: found {len(all_files)} files{f' ({found})' if found else ''}; "
                         f"expected {'/'.join(IMAGE_EXTENSIONS)} files, anywhere under the folder")

    place = f"{folder.resolve().name}-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]}"
    key = hashlib.sha256()
    for file in files:
        stat = file.stat()
        key.update(f"\n{file.relative_to(folder)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    cache_file = Path(cache_dir) / f"{place}-{key.hexdigest()[:16]}-v4.pt"  # v4: why each file was skipped
    cached = read_cache(cache_file)
    if cached is not None and not any(isinstance(decode(folder / path), bytes) for path in cached["skipped"]):
        warn_skipped(cached["skipped"], folder)  # on every load: the files are still there
        return cached["images"]

    raw, skipped = bytearray(), {}  # skipped: path in the folder -> why
    show_progress = len(files) >= 1000
    for count, file in enumerate(files, 1):
        pixels = decode(file)
        if isinstance(pixels, str):
            skipped[str(file.relative_to(folder))] = pixels
        else:
            raw += pixels
        if show_progress and (count % 1000 == 0 or count == len(files)):
            print(f"\rloading {count}/{len(files)} images", end="\n" if count == len(files) else "", file=sys.stderr)
    warn_skipped(skipped, folder)
    if not raw:
        raise ValueError(f"no readable images in {folder}: all {len(files)} image files failed to decode")
    images = bytes_to_images(raw, len(files) - len(skipped))
    for older in Path(cache_dir).glob(f"{place}-*.pt"):  # this folder's earlier contents (a few MB each)
        older.unlink()
    write_cache({"images": images, "skipped": skipped}, cache_file)
    return images


def warn_skipped(skipped, folder):
    """One line naming the files of folder that were skipped (a dict: path inside it -> why), if any."""
    if skipped:
        named = [f"{path} ({why})" for path, why in list(skipped.items())[:3]]
        print(f"warning: skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} in {folder}: "
              f"{', '.join(named)}{', ...' if len(skipped) > 3 else ''}", file=sys.stderr)


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


def save_picture(image, path, **options):
    """A PIL image to path in the format its suffix names (options: Pillow's, such as a GIF's frames),
    atomically (safety.save_atomically): an interrupted write leaves the previous picture whole."""
    kind = Image.registered_extensions()[Path(path).suffix.lower()]
    save_atomically(image, path, write=lambda image, file: image.save(file, kind, **options))


# ---------------------------------------------------------------------------- decoding and drawing
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


def toy_cats(n, seed=0):
    """n procedurally drawn cat faces as uint8 (n, 3, SIZE, SIZE). Image i depends only on (seed, i)."""
    raw = bytearray()
    for i in range(n):
        rng = random.Random(f"toy cat {seed} {i}")  # string seeds hash to distinct streams: no (seed, i) collisions
        raw += draw_toy_cat(rng, SIZE).tobytes()
    return bytes_to_images(raw, n)


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
            if done < total:  # the server closed the connection early: keep the partial file to resume
                raise ConnectionError(f"the connection closed after {done / 1e6:.1f} of {total / 1e6:.1f} MB")
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
                                     usage=argparse.SUPPRESS,  # a bad flag: one line of error, no usage block
                                     epilog="example: python data.py --download data/cats && "
                                            "python data.py --preview cats.png --data data/cats")
    parser.add_argument("--preview", metavar="PNG", type=picture,
                        help="write an 8x8 grid of one training batch (flips included) to PNG")
    parser.add_argument("--data", metavar="DIR", type=training_folder,
                        help="folder of images to preview (default: the built-in toy cats)")
    parser.add_argument("--download", metavar="DIR", nargs="?", const="data/cats", type=output_folder,
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
            images = load_images(args.data)
            batch = get_batch(images, 64, torch.Generator().manual_seed(0), "cpu")
            save_picture(image_grid(batch, ncol=8, scale=2, pad=2), args.preview)
            print(f"wrote {args.preview}: a batch of 64 drawn from {len(images)} training images", file=sys.stderr)
    except ValueError as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # a full disk, say
        sys.exit(f"error: cannot write {error.filename or 'the files'}: {error.strerror or error}")


if __name__ == "__main__":
    stop_quietly("interrupted")
    main()
