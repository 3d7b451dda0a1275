"""Data for LUT cats: loading 64x64 cat faces, drawing toy cats, batching, image grids.

    python data.py --preview out.png              # 8x8 grid of the built-in toy cats
    python data.py --preview out.png --data DIR   # ... or of a folder of your images
    python data.py --download data/cats           # fetch the real cat-face dataset
"""
import torch
from PIL import Image


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
    rgb_bytes = bytes(grid.permute(1, 2, 0).contiguous().untyped_storage())  # (H, W, 3) row-major, no numpy needed
    return Image.frombytes("RGB", (grid.shape[2], grid.shape[1]), rgb_bytes)
