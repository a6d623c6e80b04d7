"""Scenes: people, their keypoint labels, body regions, occlusion and crowd index.

A :class:`Scene` is what the simulated detector sees (joint positions, labels, who hides
whom) plus the COCO entries the writer stores. :func:`synthetic_scene` builds one from
articulated bodies placed in crowds; :mod:`.poses` builds one from a real annotation file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posegnn.choices import one_of
from posegnn.contract import person_area
from posegnn.layouts import Layout

from . import body

CROWD_LEVELS = ("easy", "medium", "hard")
MIXED_PROBS = (0.2, 0.6, 0.2)  # about CrowdPose val's share of easy / medium / hard
# Crowd-index bands a level's draws aim for: CrowdPose's (easy < 0.2 <= medium < 0.8 <=
# hard), with hard capped near the top of real hard images (CrowdPose val: mean 0.99).
CROWD_BANDS = {"easy": (0.0, 0.2), "medium": (0.2, 0.8), "hard": (0.8, 1.6),
               "packed": (0.0, np.inf)}
# people per image (inclusive), clusters, person height / image height, cluster spread
LEVEL_SPECS = {
    "easy": dict(people=(2, 6), clusters=None, size=(0.2, 0.75), spread=0.0),
    "medium": dict(people=(2, 8), clusters=(1, 2), size=(0.25, 0.8), spread=0.55),
    "hard": dict(people=(3, 9), clusters=(1, 1), size=(0.3, 0.9), spread=0.4),
    # a stress test, not part of mixed: a stand of about 60 small people
    "packed": dict(people=(55, 70), clusters=(3, 5), size=(0.12, 0.3), spread=0.8),
}
CROWDS = (*LEVEL_SPECS, "mixed")  # what a synthetic world's ``crowd`` may be
MAX_TRIES = 12  # scene draws spent on landing in the level's crowd-index band
MIN_JOINTS = 3  # people with fewer labeled joints in the image are left out
# a person hidden below (``hidden_below``) is seen down to this fraction of its height
CUT_RANGE = (0.4, 0.8)
SQUARE_SHARE = 0.4  # share of synthetic images at the network's input size (no letterbox)
ASPECTS = (4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 1.0)

# Body-region capsule radii, as fractions of body height, by joint-name pattern.
TORSO_RADIUS, HEAD_RADIUS, FACE_RADIUS = 0.07, 0.07, 0.05
LIMB_RADII = {"shoulder-elbow": 0.05, "elbow-wrist": 0.04, "hip-knee": 0.065,
              "knee-ankle": 0.05}


@dataclass
class Regions:
    """Body regions as capsules (segments a-b with radii), [P, L] per person."""

    a: np.ndarray  # [P, L, 2]
    b: np.ndarray  # [P, L, 2]
    radius: np.ndarray  # [P, L]
    valid: np.ndarray  # [P, L] bool
    torso: np.ndarray  # [L] bool, capsules that make up the trunk


@dataclass
class Scene:
    """One image: COCO entries to write and what the detector needs."""

    image: dict
    annotations: list[dict]
    joints: np.ndarray  # [P, K, 2] image pixels of the people the detector sees
    labels: np.ndarray  # [P, K] int visibility 0/1/2
    occluded: np.ndarray  # [P, K] bool, hidden from the detector (weaker, missed more)
    height: np.ndarray  # [P] body height in image pixels
    regions: Regions
    facing_back: np.ndarray  # [P] bool, left joints on the image's left


# -- body regions -----------------------------------------------------------------------
def _limb_radius(name_a: str, name_b: str) -> float:
    parts = sorted(n.split("_")[-1] for n in (name_a, name_b))
    key = f"{parts[0]}-{parts[1]}"
    for pat, r in LIMB_RADII.items():
        if sorted(pat.split("-")) == parts:
            return r
    if set(parts) <= {"shoulder", "hip"}:
        return TORSO_RADIUS
    if "head" in key or "neck" in key:
        return HEAD_RADIUS
    return FACE_RADIUS


def region_spec(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Capsules of a layout: joint index pairs, radius factors and torso flags.

    The layout's limbs plus the trunk's diagonals, so the trunk is filled.
    """
    names = layout.joints
    pairs = list(layout.limbs)
    idx = {n: i for i, n in enumerate(names)}
    for a, b in (("left_shoulder", "right_hip"), ("right_shoulder", "left_hip")):
        if a in idx and b in idx:
            pairs.append((idx[a], idx[b]))
    pa = np.array([p[0] for p in pairs], dtype=np.int64)
    pb = np.array([p[1] for p in pairs], dtype=np.int64)
    radius = np.array([_limb_radius(names[i], names[j]) for i, j in pairs])
    trunk = {"left_shoulder", "right_shoulder", "left_hip", "right_hip"}
    torso = np.array([names[i] in trunk and names[j] in trunk for i, j in pairs])
    return pa, pb, radius, torso


def make_regions(layout: Layout, joints: np.ndarray, present: np.ndarray,
                 height: np.ndarray) -> Regions:
    """Capsules of every person from joints [P, K, 2], present [P, K], height [P]."""
    pa, pb, radius, torso = region_spec(layout)
    return Regions(a=joints[:, pa], b=joints[:, pb],
                   radius=radius[None, :] * height[:, None],
                   valid=present[:, pa] & present[:, pb], torso=torso)


def capsule_distance(points: np.ndarray, reg: Regions) -> np.ndarray:
    """Distance of points [N, 2] to every capsule in radii units: [N, P, L] (inf if
    the capsule is absent); below 1 means inside."""
    ab = reg.b - reg.a  # [P, L, 2]
    len2 = np.maximum((ab**2).sum(-1), 1e-9)
    ap = points[:, None, None, :] - reg.a[None]  # [N, P, L, 2]
    t = np.clip((ap * ab[None]).sum(-1) / len2[None], 0.0, 1.0)
    d = np.linalg.norm(ap - t[..., None] * ab[None], axis=-1)
    d = d / np.maximum(reg.radius[None], 1e-6)
    return np.where(reg.valid[None], d, np.inf)


def region_distance(points: np.ndarray, reg: Regions) -> np.ndarray:
    """Distance of points [N, 2] to each person's body region: [N, P]."""
    if reg.a.shape[0] == 0:
        return np.zeros((len(points), 0))
    return capsule_distance(points, reg).min(axis=2)


# -- crowd index, boxes -----------------------------------------------------------------
def crowd_index(keypoints: np.ndarray, bboxes: np.ndarray) -> float:
    """CrowdPose crowd index: mean over people of (other people's labeled joints inside
    its box) / (its own labeled joints). keypoints [P, K, 3], bboxes [P, 4] xywh."""
    if len(keypoints) == 0:
        return 0.0
    lab = keypoints[..., 2] > 0
    x, y = keypoints[..., 0], keypoints[..., 1]
    bx, by, bw, bh = (bboxes[:, i][:, None, None] for i in range(4))
    inside = lab[None] & (x[None] >= bx) & (x[None] <= bx + bw) & (y[None] >= by) & (
        y[None] <= by + bh)  # [P box, P joints' owner, K]
    counts = inside.sum(axis=2)
    others = counts.sum(axis=1) - np.diagonal(counts)
    own = lab.sum(axis=1)
    ok = own > 0
    if not ok.any():
        return 0.0
    return float(np.mean(others[ok] / own[ok]))


def facing_back(layout: Layout, joints: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """People whose left shoulder lies left of their right shoulder in the image."""
    names = layout.joints
    if "left_shoulder" not in names or "right_shoulder" not in names:
        return np.zeros(len(joints), dtype=bool)
    ls, rs = names.index("left_shoulder"), names.index("right_shoulder")
    both = (labels[:, ls] > 0) & (labels[:, rs] > 0)
    return both & (joints[:, ls, 0] < joints[:, rs, 0])


# -- synthetic scenes -------------------------------------------------------------------
def sample_image_size(rng: np.random.Generator, input_size: int) -> tuple[int, int]:
    """Image width and height: the network's input size, or a letterboxed other size."""
    if rng.random() < SQUARE_SHARE:
        return input_size, input_size
    long_side = rng.uniform(400, 1000)
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    if aspect >= 1:
        return int(round(long_side)), int(round(long_side / aspect))
    return int(round(long_side * aspect)), int(round(long_side))


def _cluster_layout(rng, w: int, h: int, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Person centers [P, 2] and heights [P] in image pixels for one crowd level."""
    n = int(rng.integers(spec["people"][0], spec["people"][1] + 1))
    lo, hi = np.log(spec["size"][0]), np.log(spec["size"][1])
    if spec["clusters"] is None:  # spread out: every person on their own
        ref = h * np.exp(rng.uniform(lo, hi, n))
        centers = np.stack([rng.uniform(0.1, 0.9, n) * w, rng.uniform(0.35, 0.65, n) * h], 1)
        return centers, ref * rng.uniform(0.9, 1.1, n)
    k = int(rng.integers(spec["clusters"][0], spec["clusters"][1] + 1))
    c_xy = np.stack([rng.uniform(0.2, 0.8, k) * w, rng.uniform(0.38, 0.62, k) * h], 1)
    c_ref = h * np.exp(rng.uniform(lo, hi, k))
    member = rng.integers(k, size=n)
    ref = c_ref[member]
    dx = rng.normal(0.0, spec["spread"], n) * ref
    dy = rng.normal(0.0, 0.07, n) * ref
    heights = ref * rng.uniform(0.85, 1.15, n) * np.clip(1.0 + 0.8 * dy / ref, 0.6, 1.4)
    return c_xy[member] + np.stack([dx, dy], 1), heights


def _place_bodies(rng, w: int, h: int, spec: dict):
    """Posed bodies placed in the image: joints [P, J, 2], labeled, behind, heights."""
    centers, heights = _cluster_layout(rng, w, h, spec)
    xy, lab, beh = zip(*(body.sample_person(rng) for _ in range(len(heights))), strict=True)
    xy = np.stack(xy)  # [P, J, 2], units of height
    mid = 0.5 * (xy.min(axis=1) + xy.max(axis=1))
    joints = (xy - mid[:, None]) * heights[:, None, None] + centers[:, None]
    return joints, np.stack(lab), np.stack(beh), heights


def _seen_above(rng, full: np.ndarray, share: float) -> np.ndarray:
    """Which body joints [P, J] are seen: a ``share`` of the people is hidden below a
    line (by the image edge, a foreground object, a row in front) and keeps only the
    joints above it, as a real crowd's people often show no legs."""
    seen = np.ones(full.shape[:2], dtype=bool)
    if share <= 0.0 or len(full) == 0:  # draws nothing: worlds without it stay as they are
        return seen
    cut_people = rng.random(len(full)) < share
    top, bottom = full[:, :, 1].min(axis=1), full[:, :, 1].max(axis=1)
    cut = top + rng.uniform(*CUT_RANGE, len(full)) * (bottom - top)
    return seen & ~(cut_people[:, None] & (full[:, :, 1] > cut[:, None]))


def _boxes(all_joints: np.ndarray, seen: np.ndarray, heights: np.ndarray, w: int,
           h: int) -> np.ndarray:
    """COCO boxes [P, 4] around the seen body (its seen body joints), clipped to the
    image."""
    m = 0.035 * heights[:, None]
    lo = np.where(seen[..., None], all_joints, np.inf).min(axis=1)
    hi = np.where(seen[..., None], all_joints, -np.inf).max(axis=1)
    lo, hi = np.clip(lo - m, 0, [w, h]), np.clip(hi + m, 0, [w, h])
    return np.concatenate([lo, hi - lo], axis=1)


def _draw_people(rng, layout: Layout, w: int, h: int, spec: dict,
                 hidden_below: float = 0.0) -> dict:
    """One draw of the people of an image, with labels, occlusion and boxes."""
    pick = np.array([body.J[n] for n in layout.joints])
    full, lab3d, behind3d, heights = _place_bodies(rng, w, h, spec)
    seen = _seen_above(rng, full, hidden_below)
    lab3d = lab3d & seen
    joints, labeled, behind = full[:, pick], lab3d[:, pick], behind3d[:, pick]
    in_img = ((joints >= 0) & (joints < [w, h])).all(axis=2)
    keep = (labeled & in_img).sum(axis=1) >= MIN_JOINTS
    full, seen, joints, labeled, behind, in_img, heights = (
        a[keep] for a in (full, seen, joints, labeled, behind, in_img, heights))
    regions = make_regions(layout, joints, np.ones(joints.shape[:2], dtype=bool), heights)
    p, k = joints.shape[:2]
    if p == 0:  # nobody landed in the image
        return dict(joints=joints, vis=np.zeros((0, k), dtype=np.int64), heights=heights,
                    regions=regions, boxes=np.zeros((0, 4)), ci=0.0)
    caps = capsule_distance(joints.reshape(-1, 2), regions).reshape(p, k, p, -1)
    inside = caps.min(axis=3) < 1.0  # [P, K, P owner]
    bottom = full[:, :, 1].max(axis=1) + rng.normal(0.0, 0.03, p) * heights
    rank = np.argsort(np.argsort(-bottom))  # 0 = nearest the camera
    in_front = rank[None, :] < rank[:, None]  # [P, P]: column person is in front of row
    hidden = (inside & in_front[:, None, :]).any(axis=2)
    own = np.arange(p)
    own_torso = caps[own, :, own][..., regions.torso]  # [P, K, torso capsules]
    self_hidden = behind & (own_torso.min(axis=2, initial=np.inf) < 1.0)
    vis = np.where(labeled & in_img, np.where(hidden | self_hidden, 1, 2), 0)
    kpts = np.concatenate([joints, vis[..., None]], axis=2)
    boxes = _boxes(full, seen, heights, w, h)
    return dict(joints=joints, vis=vis, heights=heights, regions=regions,
                boxes=boxes, ci=crowd_index(kpts, boxes))


def _band_gap(ci: float, level: str) -> float:
    """How far a crowd index lies outside the level's band (0 inside)."""
    lo, hi = CROWD_BANDS[level]
    if lo <= ci < hi:
        return 0.0
    return lo - ci if ci < lo else ci - hi + 1e-9


def synthetic_scene(rng: np.random.Generator, image_id: int, layout: Layout, crowd: str,
                    input_size: int = 512, hidden_below: float = 0.0) -> Scene:
    """A synthetic image of articulated people at the given crowd level; a
    ``hidden_below`` share of them is seen only down to a line across the body."""
    level = crowd
    if crowd == "mixed":
        level = CROWD_LEVELS[rng.choice(len(CROWD_LEVELS), p=MIXED_PROBS)]
    one_of("crowd", crowd, CROWDS)
    w, h = sample_image_size(rng, input_size)
    best, best_gap = None, np.inf
    for _ in range(MAX_TRIES):
        people = _draw_people(rng, layout, w, h, LEVEL_SPECS[level], hidden_below)
        if len(people["joints"]) == 0:
            continue
        gap = _band_gap(people["ci"], level)
        if gap < best_gap:
            best, best_gap = people, gap
        if gap == 0.0:
            break
    if best is None:  # nobody landed in the image: an empty image is still valid
        best = _draw_people(rng, layout, w, h, LEVEL_SPECS[level], hidden_below)
    return _to_scene(best, layout, image_id, w, h)


def _to_scene(people: dict, layout: Layout, image_id: int, w: int, h: int) -> Scene:
    joints, vis, boxes = people["joints"], people["vis"], people["boxes"]
    image = {"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": w, "height": h,
             "crowd_index": round(people["ci"], 4)}
    anns = []
    for i in range(len(joints)):
        kp = np.where(vis[i, :, None] > 0, np.round(joints[i], 2), 0.0)
        kp = np.concatenate([kp, vis[i, :, None]], axis=1)
        box = np.round(boxes[i], 2)
        anns.append({
            "id": image_id * 1000 + i + 1, "image_id": image_id, "category_id": 1,
            "keypoints": [float(v) if j % 3 < 2 else int(v)
                          for j, v in enumerate(kp.reshape(-1).tolist())],
            "num_keypoints": int((vis[i] > 0).sum()), "bbox": box.tolist(),
            "area": round(person_area(box), 2), "iscrowd": 0,
        })
    return Scene(image=image, annotations=anns, joints=joints, labels=vis,
                 occluded=vis == 1, height=people["heights"], regions=people["regions"],
                 facing_back=facing_back(layout, joints, vis))
