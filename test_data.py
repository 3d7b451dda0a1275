"""Tests for data.py (CPU only, no network, only files under tmp_path): python -m pytest -q test_data.py"""
import torch

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
