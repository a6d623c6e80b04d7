"""The pose-maps contract (DESIGN.md), written once: file names, one image's arrays (how
they are checked, read and written), the default affine, the area of a person without
one and keypoint similarity (OKS). The dataset reader (:mod:`posegnn.data.maps`),
:class:`posegnn.writer.PoseMapsWriter`, the synthetic world's writer, ``posegnn-check``
and the API all go through these functions.

A message about a problem ends with ``; fix: ...`` when there is one to give.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANNOTATIONS = "annotations.json"
MAPS_DIR = "maps"
# annotations.json's info.heat_floor: a training dump (posegnn.writer) stored every pixel
# where no heatmap reaches this value as zero
HEAT_FLOOR = "heat_floor"
MAP_ARRAYS = {"heatmaps", "tags"}
OPTIONAL_ARRAYS = {"map_to_image"}
MAP_DTYPES = (np.float16, np.float32)
# Largest accepted maps of one image, heatmaps and tags together, counted as float32 once
# decompressed: HigherHRNet's COCO maps at a 1024-pixel input are about 70 MiB.
MAX_MAP_MIB = 256.0
AREA_FACTOR = 0.53  # crowdposetools' person area (no 'area'): 0.53 * box width * height
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed npz metadata: equal arrays give equal bytes
KNOWN_JOINT_COUNTS = {14: "crowdpose14", 17: "coco17"}


class DatasetError(ValueError):
    """A dataset file breaks the contract; the message names the file and the problem."""


@dataclass
class ImageMaps:
    """The network output for one image, with the affine from heatmap to image pixels."""

    image_id: int
    heatmaps: np.ndarray  # [K, Hh, Wh] float32
    tags: np.ndarray  # [K, Ht, Wt, D] float32
    map_to_image: np.ndarray  # [2, 3] float64: image = A @ [u, v, 1]

    def heatmap_to_image(self, uv: np.ndarray) -> np.ndarray:
        """Map heatmap pixel coordinates [N, 2] to image pixels."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return uv @ self.map_to_image[:, :2].T + self.map_to_image[:, 2]

    @property
    def tag_stride(self) -> tuple[float, float]:
        """Heatmap pixels per tag-map pixel along (x, y)."""
        return (self.heatmaps.shape[2] / self.tags.shape[2],
                self.heatmaps.shape[1] / self.tags.shape[1])


# -- geometry and people ---------------------------------------------------------------
def default_affine(width: float, height: float, heat_shape) -> np.ndarray:
    """``map_to_image`` of maps without one: the heatmap [.., Hh, Wh] spans the image."""
    hh, wh = heat_shape[-2:]
    return np.array([[width / wh, 0.0, 0.0], [0.0, height / hh, 0.0]])


def bbox_of(keypoints) -> list[float]:
    """[x, y, w, h] around the labeled keypoints [K, 3] of one person (zeros without)."""
    kps = np.asarray(keypoints, np.float64).reshape(-1, 3)
    xy = kps[kps[:, 2] > 0, :2]
    if not len(xy):
        return [0.0, 0.0, 0.0, 0.0]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def person_area(bbox) -> float:
    """The area of a person whose annotation has none (crowdposetools' rule)."""
    return AREA_FACTOR * float(bbox[2]) * float(bbox[3])


def keypoint_similarity(d2, sigmas, area) -> np.ndarray:
    """COCO's per-keypoint similarity exp(-d^2 / (2 * area * (2 sigma)^2)), broadcast over
    squared distances ``d2``, the joints' ``sigmas`` and the people's ``area``."""
    var = (2 * np.asarray(sigmas, np.float64)) ** 2
    return np.exp(-np.asarray(d2, np.float64) / (2 * var * (np.asarray(area, np.float64)
                                                              + np.spacing(1))))


def outside_fraction(xy, width: float, height: float, margin: float = 0.05) -> float:
    """Fraction of points [N, 2] (image pixels) more than ``margin`` of the image size
    outside it: most candidates there means the affine is wrong."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if not len(xy):
        return 0.0
    lo = -margin * np.array([width, height])
    hi = (1 + margin) * np.array([width, height])
    return float(((xy < lo) | (xy > hi)).any(axis=1).mean())


def off_image_warning(graphs, image, source: str = "") -> str | None:
    """One line when most candidates of these graphs (``pos`` in image pixels,
    ``image_id``) fall outside their image (``image(id)`` gives its entry): the maps'
    affine is wrong, and every grouping's AP with it."""
    outside = total = 0
    for g in graphs:
        info = image(int(g.image_id))
        pos = np.asarray(g.pos).reshape(-1, 2)
        outside += round(outside_fraction(pos, info["width"], info["height"]) * len(pos))
        total += len(pos)
    if total == 0 or outside <= total / 2:
        return None
    return (f"{source + ': ' if source else ''}{outside} of {total} candidates "
            f"({outside / total:.0%}) fall outside their image: map_to_image is probably "
            "wrong (HigherHRNet's scale is in units of 200 pixels); run posegnn-check")


def affine_problem(affine, heat_shape, width: float, height: float,
                   tolerance: float = 0.05) -> str | None:
    """Why an affine does not put the heatmap [.., Hh, Wh] on a ``width`` x ``height``
    image (None when it does): the maps must cover the image and not spread far past it.
    Names HigherHRNet's scale unit (200 pixels) when that explains the mismatch."""
    a = np.asarray(affine, np.float64)
    hh, wh = heat_shape[-2:]
    corners = np.array([[0.0, 0.0], [wh, hh]]) @ a[:, :2].T + a[:, 2]
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = np.array([width, height], np.float64)
    tol = tolerance * size
    if (lo <= tol).all() and (hi >= size - tol).all() and ((hi - lo) <= 4 * size).all():
        return None
    where = (f"map_to_image puts the heatmap at x {lo[0]:.0f}..{hi[0]:.0f}, "
             f"y {lo[1]:.0f}..{hi[1]:.0f}, which does not fit the {width:g}x{height:g} image")
    span = hi - lo
    for factor, unit in ((200.0, "multiply scale by 200"), (1 / 200.0, "divide scale by 200")):
        if ((span * factor >= 0.5 * size) & (span * factor <= 4 * size)).all():
            return (f"{where}; its scale is off by {factor:g}x: HigherHRNet gives scale in "
                    f"units of 200 pixels; fix: {unit} before affine_from_center_scale")
    return (f"{where}; fix: map heatmap pixels to image pixels (not the inverse affine, "
            "image to heatmap), with scale in image pixels")


def stretch_problem(heat_shape, width: float, height: float) -> str | None:
    """Maps without ``map_to_image`` whose aspect ratio is not the image's by more than a
    heatmap pixel: padded (e.g. to a multiple of 64) or letterboxed, and so misplaced."""
    hh, wh = heat_shape[-2:]
    if abs(wh - hh * width / height) <= 1.0 or abs(hh - wh * height / width) <= 1.0:
        return None
    padded = " (padded to a multiple of 64 by the network's input?)" \
        if wh % 32 == 0 and hh % 32 == 0 else ""
    return (f"maps of {wh}x{hh} are stretched over an image of {width:g}x{height:g} "
            f"(no map_to_image){padded}; fix: write map_to_image, e.g. "
            "affine_from_center_scale (docs/real_networks.md)")


# -- one image's arrays ----------------------------------------------------------------
def _layout_hint(count: int, num_joints: int, name: str) -> str:
    if count in KNOWN_JOINT_COUNTS and count != num_joints:
        other = KNOWN_JOINT_COUNTS[count]
        return (f"; fix: {count} maps are {other}'s joints: write the dataset as {other} "
                f"(PoseMapsWriter(layout='{other}')), or run a {name or num_joints} network")
    if count == num_joints + 1:
        return (f"; fix: one map more than {num_joints} joints is a centre (or background) "
                f"channel: drop it, arr[:{num_joints}]")
    return ""


def shape_problem(name: str, shape, num_joints: int, layout_name: str = "") -> str | None:
    """What is wrong with the shape of ``heatmaps`` ([K, H, W]) or ``tags`` ([K, H, W] or
    [K, H, W, D]), with the fix for the usual slips; None when it is right."""
    shape, k = tuple(int(s) for s in shape), num_joints
    ranks = (3,) if name == "heatmaps" else (3, 4)
    want = f"[{k}, H, W]" if name == "heatmaps" else f"[{k}, H, W] or [{k}, H, W, D]"
    head = f"'{name}' has shape {shape}, expected {want}" + (
        f" for layout {layout_name}" if layout_name else "")
    if len(shape) in (4, 5) and shape[0] == 1 and shape[1] == k and len(shape) - 1 in ranks:
        return f"{head}; fix: drop the batch axis, arr[0]"
    if len(shape) in ranks and shape[0] == k:
        if len(shape) == 4 and shape[1] < 8 <= shape[3]:
            return (f"{head}: this looks like [K, D, H, W]; fix: D goes last, "
                    "tags.transpose(0, 2, 3, 1)")
        if min(shape) == 0:
            return f"'{name}' is empty {shape}"
        return None
    if len(shape) in ranks and shape[-1] == k or len(shape) == 4 and shape[2] == k:
        order = "(2, 0, 1)" if len(shape) == 3 else (
            "(2, 0, 1, 3)" if shape[2] == k else "(3, 0, 1, 2)")
        return f"{head}: channel-last; fix: put the joint axis first, arr.transpose{order}"
    if len(shape) not in ranks:
        return f"{head} (rank {len(shape)})"
    return f"{head}: {shape[0]} maps, the layout has {k}" + _layout_hint(shape[0], k,
                                                                          layout_name)


def check_arrays(where: str, heat_shape, tag_shape, heat_dtype, tag_dtype, num_joints: int,
                 layout_name: str = "", max_mib: float | None = None) -> None:
    """Shapes, dtypes, field of view and size of one image's maps (the reader checks them
    from the npz headers, the writer and the API from the arrays)."""
    for name, shape, dtype in (("heatmaps", heat_shape, heat_dtype),
                               ("tags", tag_shape, tag_dtype)):
        problem = shape_problem(name, shape, num_joints, layout_name)
        if problem:
            raise DatasetError(f"{where}: {problem}")
        if np.dtype(dtype) not in MAP_DTYPES:
            raise DatasetError(f"{where}: '{name}' has dtype {dtype}, expected float16 or "
                               "float32; fix: arr.astype(np.float32)")
    heat, tags = tuple(heat_shape), tuple(tag_shape)
    stride_x, stride_y = heat[2] / tags[2], heat[1] / tags[1]
    if abs(stride_x / stride_y - 1) > 0.05:
        raise DatasetError(f"{where}: heatmaps {heat[1:]} and tags {tags[1:3]} do not cover "
                           f"the same field of view (strides {stride_x:g} in x, {stride_y:g} "
                           "in y); fix: resize the tags to the heatmaps' field of view")
    mib = 4 * (np.prod(heat) + np.prod(tags)) / 2**20
    if max_mib is not None and mib > max_mib:
        raise DatasetError(f"{where}: heatmaps {heat} and tags {tags} take {mib:,.0f} MiB as "
                           f"float32, above the {max_mib:g} MiB allowed per image "
                           "(data.max_map_mib); fix: downsample the maps, or raise "
                           "data.max_map_mib")


def check_affine(where: str, affine) -> np.ndarray:
    """``map_to_image`` as a finite float [2, 3] (a [3, 3] with its last row dropped)."""
    a = np.asarray(affine, np.float64)
    if a.shape == (3, 3) and np.allclose(a[2], [0, 0, 1]):
        a = a[:2]
    if a.shape != (2, 3) or not np.isfinite(a).all():
        raise DatasetError(f"{where}: 'map_to_image' must be a finite [2, 3] affine from "
                           f"heatmap to image pixels, got shape {a.shape}")
    return a


def check_values(where: str, heatmaps: np.ndarray, tags: np.ndarray) -> None:
    for name, arr in (("heatmaps", heatmaps), ("tags", tags)):
        if not np.isfinite(arr).all():
            raise DatasetError(f"{where}: '{name}' contains NaN or inf "
                               f"({int((~np.isfinite(arr)).sum())} values)")


def image_maps(image_id: int, heatmaps, tags, width: float, height: float,
               map_to_image=None, num_joints: int | None = None,
               layout_name: str = "", where: str | None = None) -> ImageMaps:
    """One image's arrays checked and wrapped as float32 :class:`ImageMaps` (the API's
    path; the reader's is :func:`read_maps`)."""
    where = where or f"image {image_id}"
    heat, tag = np.asarray(heatmaps), np.asarray(tags)
    k = num_joints if num_joints is not None else heat.shape[0]
    for name, arr in (("heatmaps", heat), ("tags", tag)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise DatasetError(f"{where}: '{name}' has dtype {arr.dtype}; fix: pass floats")
    check_arrays(where, heat.shape, tag.shape, np.float32, np.float32, k, layout_name)
    heat, tag = heat.astype(np.float32), tag.astype(np.float32)
    check_values(where, heat, tag)
    affine = default_affine(width, height, heat.shape) if map_to_image is None else \
        check_affine(where, map_to_image)
    return ImageMaps(int(image_id), heat, tag if tag.ndim == 4 else tag[..., None], affine)


# -- npz files -------------------------------------------------------------------------
def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an npz, read from the ``.npy`` headers without
    decompressing any data (a small file may hold gigabytes of zeros)."""
    headers = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"array '{name}' has npy format {version}")
            headers[name] = (shape, dtype)
    return headers


def check_headers(path: Path, headers: dict, num_joints: int, max_mib: float,
                  layout_name: str = "") -> None:
    """Names, shapes, dtypes and total size of the arrays, before reading their data."""
    names = set(headers)
    missing, extra = MAP_ARRAYS - names, names - MAP_ARRAYS - OPTIONAL_ARRAYS
    if missing or extra:
        raise DatasetError(f"{path}: arrays {sorted(names)}; "
                           f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    (heat, heat_dtype), (tags, tag_dtype) = headers["heatmaps"], headers["tags"]
    check_arrays(str(path), heat, tags, heat_dtype, tag_dtype, num_joints, layout_name,
                 max_mib)
    if "map_to_image" in headers and tuple(headers["map_to_image"][0]) != (2, 3):
        raise DatasetError(f"{path}: 'map_to_image' must be a finite [2, 3] affine, got "
                           f"shape {headers['map_to_image'][0]}")


def _float32(arr: np.ndarray) -> np.ndarray:
    """``arr`` as float32; from float16 through torch, whose conversion is about twice
    as fast as numpy's (both exact)."""
    if arr.dtype == np.float16:
        import torch

        return torch.from_numpy(arr).float().numpy()
    return arr.astype(np.float32, copy=False)


def read_maps(path: Path, image: dict, num_joints: int, max_mib: float = MAX_MAP_MIB,
              layout_name: str = "") -> ImageMaps:
    """Read one ``maps/<id>.npz``: names, shapes, dtypes and size are checked from the
    headers before any data is decompressed, then the values' finiteness."""
    try:
        check_headers(path, npz_headers(path), num_joints, max_mib, layout_name)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DatasetError(f"{path}: unreadable npz ({type(e).__name__}: {e}); "
                           "data.skip_bad_maps=true leaves such images out") from None
    # float32 first: the finiteness check is much cheaper there than on float16, and
    # from 4 bytes or fewer the conversion keeps every NaN and inf and adds none
    heat, tags = _float32(arrays["heatmaps"]), _float32(arrays["tags"])
    check_values(str(path), heat, tags)
    if tags.ndim == 3:
        tags = tags[..., None]
    affine = arrays.get("map_to_image")
    if affine is None:
        affine = default_affine(image["width"], image["height"], heat.shape)
    elif not np.isfinite(affine).all():
        raise DatasetError(f"{path}: 'map_to_image' must be a finite [2, 3] affine")
    return ImageMaps(int(image["id"]), heat, tags, np.asarray(affine, dtype=np.float64))


def save_npz(file, arrays: dict[str, np.ndarray], level: int = 6) -> None:
    """Write ``arrays`` as a compressed npz to a path or a binary file, with fixed zip
    metadata, so equal arrays give equal bytes."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=level) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=level)


def write_maps(path: str | Path, heatmaps: np.ndarray, tags: np.ndarray,
               map_to_image: np.ndarray | None = None, atomic: bool = True) -> Path:
    """``maps/<id>.npz`` of one image (arrays already checked, in their stored dtype);
    atomic unless the caller writes into a folder of its own that it moves into place."""
    from posegnn.io import atomic_write

    arrays = {"heatmaps": heatmaps, "tags": tags}
    if map_to_image is not None:
        arrays["map_to_image"] = map_to_image
    path = Path(path)
    if atomic:
        atomic_write(path, lambda f: save_npz(f, arrays))
    else:
        save_npz(path, arrays)
    return path
