"""Tests for data.py (CPU only, no network, only files under tmp_path): python -m pytest -q tests/test_data.py"""
import http.server
import io
import os
import sys
import tarfile
import threading

import pytest
import torch
from PIL import Image

import data


def test_image_grid_size_and_pixels():
    images = -torch.ones(10, 3, 8, 8)  # black
    images[0] = 1  # first tile white
    grid = data.image_grid(images, ncol=4, scale=2, pad=1)
    assert grid.size == (4 * 16 + 3, 3 * 16 + 2)  # (width, height): 4 columns, 3 rows
    assert grid.getpixel((0, 0)) == (255, 255, 255)
    assert grid.getpixel((15, 15)) == (255, 255, 255)
    assert grid.getpixel((16, 0)) == (0, 0, 0)  # the pad column
    assert data.image_grid(images[:1], ncol=8).size == (8, 8)


def make_mixed_folder(folder):
    """Images in many formats, modes and sizes, one corrupt file and a non-image; returns names in load order."""
    (folder / "z_sub").mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 200, 0)).save(folder / "a_rgb.png")
    Image.new("L", (100, 80), 90).save(folder / "b_grey.JPG")
    Image.new("LA", (50, 70), (200, 255)).save(folder / "c_la.png")
    Image.new("RGB", (64, 64), (0, 0, 200)).convert("P").save(folder / "d_palette.png")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(folder / "e_transparent.webp", lossless=True)
    Image.new("CMYK", (80, 80), (0, 0, 0, 255)).save(folder / "f_cmyk.jpg")
    Image.new("I;16", (64, 64), 32768).save(folder / "g_deep.png")  # 16-bit grey at half brightness
    wide = Image.new("RGB", (120, 40), (0, 0, 255))  # blue sides ...
    wide.paste((255, 0, 0), (40, 0, 80, 40))  # ... around a red 40x40 centre
    wide.save(folder / "z_sub" / "h_wide.bmp")
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(png, "PNG")
    (folder / "c_corrupt.png").write_bytes(png.getvalue()[:60])  # truncated
    (folder / "notes.txt").write_text("not an image")
    return ["a_rgb", "b_grey", "c_la", "d_palette", "e_transparent", "f_cmyk", "g_deep", "h_wide"]


def test_load_folder_mixed_formats(tmp_path, capsys):
    folder = tmp_path / "cats"
    names = make_mixed_folder(folder)
    images = data.load_folder(folder, tmp_path / "cache")
    assert images.shape == (len(names), 3, 64, 64) and images.dtype == torch.uint8
    mean = {name: images[i].float().mean(dim=(1, 2)) for i, name in enumerate(names)}  # (3,) per image
    assert torch.allclose(mean["a_rgb"], torch.tensor([0.0, 200, 0]), atol=2)
    assert torch.allclose(mean["b_grey"], torch.tensor([90.0] * 3), atol=3)
    assert torch.allclose(mean["d_palette"], torch.tensor([0.0, 0, 200]), atol=8)
    assert (images[names.index("e_transparent")] >= 250).all()  # transparent -> white background
    assert mean["f_cmyk"].max() < 40  # CMYK full black stays black
    assert torch.allclose(mean["g_deep"], torch.tensor([128.0] * 3), atol=2)  # not clipped to white
    wide = images[names.index("h_wide")]  # center crop keeps only the red middle, even at the edges
    assert (wide[0] > 200).all() and (wide[2] < 60).all()
    err = capsys.readouterr().err
    assert f"skipped 1 file in {folder}: c_corrupt.png (unreadable)" in err
    assert torch.equal(data.load_folder(folder, tmp_path / "cache"), images)  # from the cache, which still
    assert "c_corrupt.png (unreadable)" in capsys.readouterr().err  # names the skipped file
    assert not any(name.endswith(".pt") for name in os.listdir(folder))  # nothing written into the folder


def test_a_too_large_image_is_called_so(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "cats"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    Image.new("RGB", (200, 200)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels is then what 200 Mpixels is to Pillow
    assert len(data.load_folder(folder, tmp_path / "cache")) == 1
    assert capsys.readouterr().err.splitlines() == [f"warning: skipped 1 file in {folder}: big.png (too large)"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match=r"no folder .*nowhere.*--download"):
        data.load_folder(tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    (tmp_path / "empty" / "b.csv").write_text("x")
    with pytest.raises(ValueError, match=r"no images in .*empty: found 2 files \(\.csv, \.txt\); expected \.png/"):
        data.load_folder(tmp_path / "empty", tmp_path / "cache")


def test_cache_is_used_then_invalidated(tmp_path, monkeypatch):
    folder = tmp_path / "cats"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (10 * i, 0, 0)).save(folder / f"{i}.png")
    first = data.load_folder(folder, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    decoded = []
    real_decoder = data.pil_to_bytes
    monkeypatch.setattr(data, "pil_to_bytes", lambda image: decoded.append(1) or real_decoder(image))
    assert torch.equal(data.load_folder(folder, tmp_path / "cache"), first)
    assert decoded == []  # served from the cache

    Image.new("RGB", (64, 64), (0, 0, 250)).save(folder / "1.png")
    os.utime(folder / "1.png", ns=(1, 1))  # a different mtime even on coarse-clock file systems
    changed = data.load_folder(folder, tmp_path / "cache")
    assert len(decoded) == 3
    assert changed[1, 2].float().mean() > 240 and torch.equal(changed[0], first[0])

    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # the folder's older cache file is gone

    [cache_file] = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(b"cut short")  # as a full disk leaves it: a miss
    real_decode = data.decode
    monkeypatch.setattr(data, "decode", lambda file: "unreadable" if file.name == "2.png" else real_decode(file))
    assert torch.equal(data.load_folder(folder, tmp_path / "cache"), changed[:2]) and len(decoded) == 5
    monkeypatch.setattr(data, "decode", real_decode)  # 2.png readable again (its permissions fixed, say)
    assert torch.equal(data.load_folder(folder, tmp_path / "cache"), changed) and len(decoded) == 9


def test_a_cache_that_cannot_be_written_only_warns(tmp_path, capsys):
    folder = tmp_path / "cats"
    folder.mkdir()
    Image.new("RGB", (64, 64), (0, 250, 0)).save(folder / "0.png")
    (tmp_path / "afile").write_text("")
    images = data.load_folder(folder, tmp_path / "afile" / "cache")
    assert images.shape == (1, 3, 64, 64) and images[0, 1].float().mean() > 240
    assert "warning: cannot cache the images in" in capsys.readouterr().err


def test_a_folder_that_cannot_be_read_stops_the_load_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "cats" / "locked").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "cats" / "0.png")
    real_scandir = os.scandir

    def scandir(path):  # as a folder without read permission answers (root reads any, so chmod cannot show it)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ValueError, match=r"^cannot read the folder .*locked \(Permission denied\): fix its "
                                         r"permissions, or move it out of the folder of images$"):
        data.load_folder(tmp_path / "cats", tmp_path / "cache")


def test_linked_subfolders_are_read_once(tmp_path):
    folder, elsewhere = tmp_path / "cats", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for i, place in enumerate([folder, folder / "sub", elsewhere]):
        Image.new("RGB", (64, 64), (80 * i, 0, 0)).save(place / f"{i}.png")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # a link to a folder above
    (folder / "gone.png").symlink_to(tmp_path / "nothing.png")  # a broken link: no file
    images = data.load_folder(folder, tmp_path / "cache")
    assert images[:, 0].float().mean((1, 2)).round().tolist() == [0, 160, 80]  # by path: 0, linked/2, sub/1


def test_get_batch_range_flips_and_seeds():
    images = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    images[:, :, :, :32] = 255  # left half white: a flip makes the right half white
    images[:, 1] = torch.arange(4, dtype=torch.uint8)[:, None, None] * 50  # green channel tells images apart
    batch = data.get_batch(images, 64, torch.Generator().manual_seed(0), "cpu")
    assert batch.shape == (64, 3, 64, 64) and batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert batch.min() == -1 and batch.max() == 1
    flipped = batch[:, 0, 0, 0] == -1  # red channel: left edge black means flipped
    assert 10 < flipped.sum() < 54
    assert (batch[flipped, 0, 0, -1] == 1).all()
    assert len(set(batch[:, 1, 0, 0].tolist())) == 4  # all four images drawn
    again = data.get_batch(images, 64, torch.Generator().manual_seed(0), "cpu")
    other = data.get_batch(images, 64, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(batch, again) and not torch.equal(batch, other)


def test_toy_cats_deterministic_and_varied():
    cats = data.toy_cats(6, seed=0)
    assert cats.shape == (6, 3, 64, 64) and cats.dtype == torch.uint8
    assert torch.equal(cats[:4], data.toy_cats(4, seed=0))  # image i does not depend on n
    assert not torch.equal(cats, data.toy_cats(6, seed=1))
    assert (cats.float().std(dim=(1, 2, 3)) > 20).all()  # real pictures, not flat colours
    assert all(not torch.equal(cats[i], cats[j]) for i in range(6) for j in range(i))


def test_load_images_caches_toy_cats(tmp_path, monkeypatch):
    calls = []
    def fake_toy_cats(n, seed):
        calls.append((n, seed))
        return torch.full((2, 3, 64, 64), seed, dtype=torch.uint8)
    monkeypatch.setattr(data, "toy_cats", fake_toy_cats)
    first = data.load_images(None, tmp_path / "cache", seed=3)
    assert torch.equal(data.load_images(None, tmp_path / "cache", seed=3), first)
    assert calls == [(10_000, 3)] and first[0, 0, 0, 0] == 3


def make_tarball(path, members):
    """Write a .tar.gz at path from (name, bytes) pairs; bytes None makes a symlink to /etc."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc"
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def png_bytes(color):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_download_extracts_skips_and_restarts(tmp_path, capsys):
    server = tmp_path / "server"
    server.mkdir()
    make_tarball(server / "dataset-part1.tar.gz", [("cats/0.png", png_bytes((255, 0, 0))),
                                                    ("cats/1.png", png_bytes((0, 255, 0)))])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".part1.tar.gz.part").write_bytes(b"junk from an interrupted run")  # file:// cannot resume: restart
    data.download(dest, parts=(1,), base_url=server.as_uri())
    assert sorted(os.listdir(dest)) == ["part1"]  # no archive, partial or staging folder left behind
    assert len(data.load_folder(dest, tmp_path / "cache")) == 2
    assert "python train.py --data" in capsys.readouterr().out

    (server / "dataset-part1.tar.gz").unlink()  # a second run must not need the server
    data.download(dest, parts=(1,), base_url=server.as_uri())
    assert "already in" in capsys.readouterr().err
    with pytest.raises(ValueError, match="could not download .*dataset-part2"):
        data.download(dest, parts=(2,), base_url=server.as_uri())


def test_fetch_resumes_with_http_range(tmp_path):
    payload = os.urandom(5000)
    starts, cut = [], [3500]  # the first answer ends at byte 3500 though it announced all: a dropped connection

    class RangeServer(http.server.BaseHTTPRequestHandler):  # a local server that honours "Range: bytes=N-"
        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-")[6:-1])
            starts.append(start)
            if start >= len(payload):
                return self.send_error(416)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:cut.pop() if cut else None])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), RangeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/dataset-part1.tar.gz"
    target = tmp_path / "download.part"
    target.write_bytes(payload[:2000])  # an interrupted earlier download
    with pytest.raises(ValueError, match="connection closed after .*; run the same command again to resume"):
        data.fetch(url, target)
    assert target.read_bytes() == payload[:3500]  # kept, to resume from
    data.fetch(url, target)
    data.fetch(url, target)  # already whole: the server answers 416, the file stays as it is
    server.shutdown()
    assert starts == [2000, 3500, 5000] and target.read_bytes() == payload


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_download_rejects_corrupt_archive(tmp_path, damage):
    server = tmp_path / "server"
    server.mkdir()
    make_tarball(server / "dataset-part1.tar.gz", [(f"cats/{i}.png", os.urandom(5000)) for i in range(4)])
    good = (server / "dataset-part1.tar.gz").read_bytes()
    middle = len(good) // 2
    bad = good[:-30] if damage == "truncate" else good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:]
    (server / "dataset-part1.tar.gz").write_bytes(bad)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="corrupt.*deleted it"):
        data.download(dest, parts=(1,), base_url=server.as_uri())
    assert os.listdir(dest) == []  # bad download deleted, nothing half-extracted


@pytest.mark.parametrize("name", ["../evil", "/tmp/abs_evil", "cats/link"])
def test_download_rejects_unsafe_members(tmp_path, name):
    server = tmp_path / "server"
    server.mkdir()
    content = None if name == "cats/link" else b"gotcha"
    make_tarball(server / "dataset-part1.tar.gz", [("cats/0.png", png_bytes((1, 2, 3))), (name, content)])
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="unsafe entry"):
        data.download(dest, parts=(1,), base_url=server.as_uri())
    assert os.listdir(dest) == [] and not (tmp_path / "evil").exists()


def test_preview_cli(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cats"
    folder.mkdir()
    Image.new("RGB", (64, 64), "red").save(folder / "0.png")
    out = tmp_path / "preview.png"
    monkeypatch.chdir(tmp_path)  # its cache goes to ./data/cache
    monkeypatch.setattr(sys, "argv", ["data.py", "--preview", str(out), "--data", str(folder)])
    data.main()
    assert Image.open(out).size == (8 * 128 + 7 * 2,) * 2
    assert len(list((tmp_path / "data" / "cache").glob("cats-*.pt"))) == 1
    monkeypatch.setattr(sys, "argv", ["data.py", "--preview", str(out), "--data", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit:
        data.main()
    assert exit.value.code == 2
    nowhere = tmp_path / "nowhere"
    assert capsys.readouterr().err.endswith(f"error: argument --data: no folder {nowhere}; to fetch real cat faces "
                                            f"into it: python data.py --download {nowhere}\n")
    empty = tmp_path / "empty"  # as a download that failed leaves it: only a hidden part file
    empty.mkdir()
    (empty / ".part1.tar.gz.part").write_bytes(b"x")
    monkeypatch.setattr(sys, "argv", ["data.py", "--preview", str(out), "--data", str(empty)])
    with pytest.raises(SystemExit):
        data.main()
    assert capsys.readouterr().err.endswith(f"error: argument --data: {empty} is empty; to fetch real cat faces "
                                            f"into it: python data.py --download {empty}\n")
