"""Hostile files for the tests and benchmarks that try them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def write_bomb(path: Path, heat_shape: tuple, tag_shape: tuple) -> None:
    """A decompression bomb: an npz of all-zero float16 ``heatmaps`` and ``tags`` that
    takes a thousandth of its size on disk, streamed so that it is never held in memory."""
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, shape in (("heatmaps", heat_shape), ("tags", tag_shape)):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f2", "fortran_order": False, "shape": shape})
                left = 2 * int(np.prod(shape))
                while left > 0:
                    f.write(chunk[:min(left, len(chunk))])
                    left -= len(chunk)
