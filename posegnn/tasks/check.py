"""``posegnn-check DIR``: validate a pose-maps dataset folder before training on it.

Everything the reader (:mod:`posegnn.data.maps`, :mod:`posegnn.contract`) would refuse
is collected instead of raised, one problem per file or entry, each with its fix; so is
an affine that puts the maps off their image (every candidate would land outside it) and
heat values that never reach the candidate threshold. Maps stretched over an image of
another aspect ratio (no affine) are a warning. The summary says what the folder holds.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posegnn.contract import (
    ANNOTATIONS,
    MAPS_DIR,
    DatasetError,
    affine_problem,
    npz_headers,
    read_maps,
    stretch_problem,
)
from posegnn.data.candidates import CandidateConfig
from posegnn.data.maps import PoseMapsDataset
from posegnn.evaluation.coco import crowd_level


@dataclass
class Problem:
    where: str
    what: str
    fix: str


@dataclass
class CheckResult:
    root: Path
    summary: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_PER_KEYPOINT = ("write one map per keypoint, in the category's keypoint order (check the "
                 "layout: crowdpose14 or coco17)")
# (words that must all appear in a reader's message, lower case; the fix), first match wins
_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("not a directory",), "give the dataset's folder: it holds annotations.json and maps/"),
    ((ANNOTATIONS, "missing"), "write annotations.json in COCO keypoints format (images, "
     "annotations, categories with keypoint names); posegnn.writer.PoseMapsWriter does"),
    (("not valid json",),
     "rewrite the file (a dump killed mid-write?): it must be one JSON object"),
    (("unreadable npz",), "re-export this file (a dump killed mid-write?), or leave such "
     "images out with data.skip_bad_maps=true"),
    (("nan or inf", ".npz"), "the network wrote NaN/inf values: check its output "
     "(np.nan_to_num hides the cause); data.skip_bad_maps=true leaves such images out"),
    (("channel-last",), "transpose to [K, H, W]: np.transpose(arr, (2, 0, 1))"),
    (("dtype",), "save float16 or float32 arrays: arr.astype(np.float32)"),
    (("name files by id",), "rename each map file to <image id>.npz (no zero padding)"),
    (("no maps for",), "write maps/<image id>.npz for every image annotations.json lists"),
    (("does not list",), "list the image in annotations.json, or remove its npz"),
    (("k=",), _PER_KEYPOINT),
    (("keypoints but",), _PER_KEYPOINT),
    (("field of view",), "resize the tag maps to cover the same field of view as the heatmaps"),
    (("map_to_image",),
     "write map_to_image as a float [2, 3] affine from heatmap to image pixels"),
    (("data.max_map_mib",), "downsample the maps, or raise data.max_map_mib"),
    (("annotation",), "correct this entry (COCO keypoints format); "
     "data.skip_bad_annotations=true leaves images with broken entries out"),
)


def _fix_for(message: str) -> str:
    """The fix for a reader's message: its own ``; fix: ...``, else the table's."""
    if "; fix: " in message:
        return message.split("; fix: ", 1)[1]
    text = message.lower()
    return next((fix for words, fix in _FIXES if all(w in text for w in words)),
                "see docs/dataset_contract.md")


def _problem(message: str) -> Problem:
    where, _, what = message.split("; fix: ", 1)[0].partition(": ")
    return Problem(where, what or message, _fix_for(message))


@contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} ({n})" for k, n in counter.most_common(4)) + (
        f", and {len(counter) - 4} more" if len(counter) > 4 else "")


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


class _MapStats:
    """What the readable map files hold, summed over the dataset."""

    def __init__(self) -> None:
        self.heat_shapes, self.tag_shapes, self.dtypes = Counter(), Counter(), Counter()
        self.strides, self.affines = Counter(), 0
        self.heat_range = [np.inf, -np.inf]
        self.tag_range = [np.inf, -np.inf]
        self.read = 0

    def add(self, headers: dict, maps) -> None:
        self.read += 1
        self.heat_shapes[_shape(headers["heatmaps"][0])] += 1
        self.tag_shapes[_shape(headers["tags"][0])] += 1
        self.dtypes[f"{headers['heatmaps'][1]}/{headers['tags'][1]}"] += 1
        self.strides["{:g} x {:g}".format(*maps.tag_stride)] += 1
        self.affines += "map_to_image" in headers
        for rng, arr in ((self.heat_range, maps.heatmaps), (self.tag_range, maps.tags)):
            rng[0], rng[1] = min(rng[0], float(arr.min())), max(rng[1], float(arr.max()))


def check_dataset(root: str | Path, sigmas: list[float] | None = None,
                  stop_at_first: bool = False) -> CheckResult:
    """Check a dataset folder; ``stop_at_first`` raises the first problem instead (to see
    where it comes from)."""
    root = Path(root)
    result = CheckResult(root)

    def found(message: str) -> None:
        if stop_at_first:
            raise DatasetError(message)
        result.problems.append(_problem(message))

    try:
        with _quiet("posegnn.data.maps"):
            ds = PoseMapsDataset(root, sigmas=sigmas, require_annotations=False,
                                 check_maps=False, skip_bad_annotations=True)
    except DatasetError as err:
        found(str(err))
        return result
    for image_id, message in ds.skipped.items():
        found(f"{message} [image {image_id}]" if str(image_id) not in message else message)
    _summarize_annotations(ds, result)
    if not ds.has_annotations:
        result.warnings.append(Problem(str(ds.ann_path), "no 'annotations' list",
                                       "fine for posegnn-predict; training and evaluation "
                                       "need the people of every image"))
    maps_dir = root / MAPS_DIR
    if not maps_dir.is_dir():
        found(f"{maps_dir}: missing (one npz of maps per image)")
        return result
    on_disk = {p.stem: p for p in maps_dir.glob("*.npz")}
    listed = {str(i): i for i in ds.image_ids}
    skipped = {str(i) for i in ds.skipped}
    for stem in sorted(set(on_disk) - set(listed) - skipped):
        if stem.lstrip("0") in listed and stem != stem.lstrip("0"):
            found(f"{on_disk[stem]}: maps for image id {stem.lstrip('0')} are named "
                  f"{stem}.npz; name files by id: {stem.lstrip('0')}.npz")
        else:
            found(f"{on_disk[stem]}: maps for an image that {ANNOTATIONS} does not list")
    missing = [s for s in listed if s not in on_disk
               and not any(p.lstrip("0") == s for p in on_disk)]
    for stem in missing[:20]:
        found(f"{maps_dir / (stem + '.npz')}: no maps for listed image {stem}")
    if len(missing) > 20:
        found(f"{maps_dir}: no maps for {len(missing) - 20} more listed images")

    stats, stretched, off_image = _MapStats(), [], []
    k = ds.layout.num_joints
    for stem, image_id in listed.items():
        path = on_disk.get(stem)
        if path is None:
            continue
        try:
            headers = npz_headers(path)
            maps = read_maps(path, ds.image(image_id), k, ds.max_map_mib, ds.layout.name)
        except DatasetError as err:
            found(str(err))
            continue
        except Exception as err:  # noqa: BLE001 - whatever a broken zip raises
            found(f"{path}: unreadable npz ({type(err).__name__}: {err})")
            continue
        stats.add(headers, maps)
        image = ds.image(image_id)
        if "map_to_image" in headers:
            problem = affine_problem(maps.map_to_image, maps.heatmaps.shape, image["width"],
                                     image["height"])
            if problem:
                off_image.append(f"{path}: {problem}")
        else:
            problem = stretch_problem(maps.heatmaps.shape, image["width"], image["height"])
            if problem:
                stretched.append(f"{path}: {problem}")
    for messages, to in ((off_image, found), (stretched, None)):
        if not messages:
            continue
        more = f" (and {len(messages) - 1} more images like it)" if len(messages) > 1 else ""
        head, _, fix = messages[0].partition("; fix: ")
        message = f"{head}{more}; fix: {fix}"
        if to is not None:
            to(message)
        else:
            result.warnings.append(_problem(message))
    _summarize_maps(stats, len(listed), result)
    threshold = CandidateConfig().threshold
    if stats.read and stats.heat_range[1] <= threshold:
        found(f"{maps_dir}: no heatmap value exceeds {stats.heat_range[1]:.3g}, below the "
              f"candidate threshold {threshold:g}: no keypoint would ever be found")
        result.problems[-1].fix = ("write the network's heatmaps after its final activation "
                                   "(values around 0..1), or lower "
                                   "graph.candidates.threshold")
    return result


def _summarize_annotations(ds: PoseMapsDataset, result: CheckResult) -> None:
    s = result.summary
    s.append(("layout", f"{ds.layout.name} ({ds.layout.num_joints} keypoints)"))
    s.append(("images", f"{len(ds.image_ids)}" + (f" ({len(ds.skipped)} more with broken "
                                                  "entries)" if ds.skipped else "")))
    if ds.heat_floor is not None:
        s.append(("maps", f"a training dump: heat below {ds.heat_floor:g} stored as 0 "
                          "(for training splits; validate and test on full maps)"))
    if not ds.has_annotations:
        s.append(("people", "no annotations (prediction only)"))
        return
    people = sum(1 for a in ds.annotations if not a["iscrowd"])
    crowd_regions = sum(1 for a in ds.annotations if a["iscrowd"])
    empty = sum(1 for i in ds.image_ids
                if not any(not a["iscrowd"] for a in ds.annotations_of(i)))
    s.append(("people", f"{people} ({people / max(len(ds.image_ids), 1):.1f} per image), "
                        f"{crowd_regions} crowd regions, {empty} images without people"))
    levels = Counter()
    for i in ds.image_ids:
        ci = ds.image(i).get("crowd_index")
        try:
            levels[crowd_level(ci)] += 1
        except (ValueError, TypeError):
            levels["no crowd index"] += 1
    s.append(("crowd levels", ", ".join(f"{name} {levels[name]}" for name in
                                        ("easy", "medium", "hard", "no crowd index")
                                        if levels[name])))


def _summarize_maps(stats: _MapStats, listed: int, result: CheckResult) -> None:
    s = result.summary
    s.append(("maps read", f"{stats.read} of {listed} images"))
    if not stats.read:
        return
    s.append(("heatmaps [K, H, W]", _counts(stats.heat_shapes)))
    s.append(("tags [K, H, W(, D)]", _counts(stats.tag_shapes)))
    s.append(("dtypes heatmaps/tags", _counts(stats.dtypes)))
    s.append(("heatmap values", f"{stats.heat_range[0]:.3g} .. {stats.heat_range[1]:.3g}"))
    s.append(("tag values", f"{stats.tag_range[0]:.3g} .. {stats.tag_range[1]:.3g}"))
    s.append(("tag stride (heatmap px per tag px)", _counts(stats.strides)))
    s.append(("map_to_image", f"in {stats.affines} of {stats.read} images" if stats.affines
              else "none: each map covers its whole image"))


def format_result(result: CheckResult) -> str:
    width = max((len(k) for k, _ in result.summary), default=0)
    lines = [f"{result.root}", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in result.summary]
    for title, items in ((f"{len(result.problems)} problem(s)", result.problems),
                         (f"{len(result.warnings)} warning(s)", result.warnings)):
        if items:
            lines += ["", f"{title}:"]
            for p in items:
                lines += [f"- {p.where}: {p.what}", f"  fix: {p.fix}"]
    lines += ["", "OK: posegnn can read this dataset" if result.ok else
              "NOT OK: fix the problems above"]
    return "\n".join(lines)
