"""Articulated 3D bodies from a kinematic tree, posed and projected to the image.

Units are body heights (H = 1). The body frame has x to the person's left, y up and z
forward (towards the camera when the person faces it); image x follows x, image y follows
-y, and z is depth (larger is nearer the camera).
"""

from __future__ import annotations

import numpy as np

# Every joint either layout may ask for; a layout picks its joints by name.
JOINTS = (
    "head", "neck", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
J = {name: i for i, name in enumerate(JOINTS)}
FACE = (J["nose"], J["left_eye"], J["right_eye"])
EARS = (J["left_ear"], J["right_ear"])
ARMS = (J["left_elbow"], J["right_elbow"], J["left_wrist"], J["right_wrist"])

# Segment lengths (fractions of body height, adult averages).
UPPER_ARM, FOREARM, THIGH, SHIN = 0.17, 0.15, 0.245, 0.245
SHOULDER_HALF, HIP_HALF, SHOULDER_UP, NECK_UP, HEAD_UP = 0.125, 0.09, 0.285, 0.30, 0.17

# Pose kinds and their probabilities.
POSE_KINDS = ("stand", "walk", "gesture", "sit", "bend")
POSE_PROBS = (0.33, 0.25, 0.17, 0.12, 0.13)


def rot_x(a: float) -> np.ndarray:
    """Rotation about x: tips +y towards +z (a forward bend)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    """Rotation about the vertical axis (yaw / twist)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    """Rotation in the image plane (side lean / roll)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def limb_dir(flex: float, abduct: float, side: float) -> np.ndarray:
    """Unit direction of a limb hanging down, raised forward by ``flex`` and sideways
    (away from the body on ``side`` = +1 left / -1 right) by ``abduct``."""
    ca = np.cos(abduct)
    return np.array([side * np.sin(abduct), -ca * np.cos(flex), ca * np.sin(flex)])


def bend_towards(d: np.ndarray, target: np.ndarray, angle: float) -> np.ndarray:
    """Rotate unit vector ``d`` by ``angle`` in the plane it spans with ``target``."""
    perp = target - (target @ d) * d
    n = np.linalg.norm(perp)
    if n < 1e-6:
        return d
    return np.cos(angle) * d + np.sin(angle) * perp / n


def _u(rng: np.random.Generator, lo: float, hi: float, size=None) -> np.ndarray:
    """Uniform angles given in degrees, returned in radians."""
    return np.deg2rad(rng.uniform(lo, hi, size))


def sample_angles(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    """Joint angles (radians) for one pose kind; arrays of 2 are [left, right]."""
    a = {
        "bend": _u(rng, -8, 10), "lean": _u(rng, -6, 6), "twist": _u(rng, -20, 20),
        "nod": _u(rng, -15, 20), "head_yaw": _u(rng, -35, 35),
        "hip_f": _u(rng, -8, 15, 2), "hip_a": _u(rng, 0, 10, 2), "knee": _u(rng, 0, 15, 2),
        "sh_f": _u(rng, -15, 35, 2), "sh_a": _u(rng, 3, 30, 2), "elbow": _u(rng, 0, 70, 2),
    }
    if kind == "walk":
        swing = _u(rng, 10, 30)
        a["hip_f"] = np.array([swing, -swing]) * rng.choice([-1, 1])
        a["knee"] = _u(rng, 5, 45, 2)
        a["sh_f"] = -0.8 * a["hip_f"] + _u(rng, -5, 5, 2)
    elif kind == "gesture":
        raised = rng.random(2) < np.array([0.6, 0.6])
        raised[rng.integers(2)] = True
        a["sh_f"] = np.where(raised, _u(rng, 40, 170, 2), a["sh_f"])
        a["sh_a"] = np.where(raised, _u(rng, 10, 100, 2), a["sh_a"])
        a["elbow"] = np.where(raised, _u(rng, 0, 120, 2), a["elbow"])
    elif kind == "sit":
        a["hip_f"] = _u(rng, 65, 100, 2)
        a["knee"] = _u(rng, 60, 110, 2)
        a["hip_a"] = _u(rng, 0, 20, 2)
        a["sh_f"] = _u(rng, 5, 60, 2)
        a["elbow"] = _u(rng, 30, 110, 2)
    elif kind == "bend":
        a["bend"] = _u(rng, 30, 85)
        a["knee"] = _u(rng, 0, 35, 2)
        a["hip_f"] = _u(rng, -5, 25, 2)
        a["sh_f"] = a["bend"] + _u(rng, -25, 25, 2)
        a["nod"] = _u(rng, -40, 0)
    return a


def build_body(rng: np.random.Generator, kind: str) -> np.ndarray:
    """3D joints [len(JOINTS), 3] of one posed body, pelvis at the origin."""
    a = sample_angles(rng, kind)
    p = np.zeros((len(JOINTS), 3))
    torso = rot_x(a["bend"]) @ rot_z(a["lean"]) @ rot_y(a["twist"])
    head = torso @ rot_x(a["nod"]) @ rot_y(a["head_yaw"])
    neck = torso @ np.array([0.0, NECK_UP, 0.0])
    p[J["neck"]] = neck
    p[J["head"]] = neck + head @ np.array([0.0, HEAD_UP, 0.0])
    p[J["nose"]] = neck + head @ np.array([0.0, 0.09, 0.065])
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        p[J[f"{side}_eye"]] = neck + head @ np.array([sgn * 0.032, 0.11, 0.052])
        p[J[f"{side}_ear"]] = neck + head @ np.array([sgn * 0.07, 0.10, -0.005])
    for i, (side, sgn) in enumerate((("left", 1.0), ("right", -1.0))):
        shoulder = torso @ np.array([sgn * SHOULDER_HALF, SHOULDER_UP, -0.01])
        upper = torso @ limb_dir(a["sh_f"][i], a["sh_a"][i], sgn)
        elbow = shoulder + UPPER_ARM * upper
        target = torso @ np.array([-sgn * rng.uniform(-0.3, 0.8), rng.uniform(-0.3, 0.6), 1.0])
        wrist = elbow + FOREARM * bend_towards(upper, target, a["elbow"][i])
        hip = np.array([sgn * HIP_HALF, 0.0, 0.0])
        thigh = limb_dir(a["hip_f"][i], a["hip_a"][i], sgn)
        knee = hip + THIGH * thigh
        shin = bend_towards(thigh, np.array([0.0, -0.7, -0.7]), a["knee"][i])
        p[J[f"{side}_shoulder"]], p[J[f"{side}_elbow"]], p[J[f"{side}_wrist"]] = (
            shoulder, elbow, wrist)
        p[J[f"{side}_hip"]], p[J[f"{side}_knee"]], p[J[f"{side}_ankle"]] = (
            hip, knee, knee + SHIN * shin)
    return p


def sample_view(rng: np.random.Generator) -> np.ndarray:
    """Global rotation: mostly facing the camera, some from the back, some sideways."""
    r = rng.random()
    if r < 0.6:
        yaw = rng.normal(0.0, 0.6)
    elif r < 0.85:
        yaw = np.pi + rng.normal(0.0, 0.6)
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    return rot_z(rng.normal(0.0, 0.06)) @ rot_x(rng.normal(0.0, 0.14)) @ rot_y(yaw)


def visibility_3d(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Self-occlusion from a posed, rotated body [J, 3].

    Returns ``labeled`` (face points turned away from the camera are unlabeled, as
    annotators leave them) and ``behind`` (arm joints behind the torso's depth).
    """
    labeled = np.ones(len(JOINTS), dtype=bool)
    head_c = 0.5 * (p[J["left_ear"]] + p[J["right_ear"]])
    labeled[list(FACE)] = p[list(FACE), 2] > head_c[2] + 0.005
    labeled[list(EARS)] = p[list(EARS), 2] > head_c[2] - 0.03
    torso_z = p[[J["left_shoulder"], J["right_shoulder"], J["left_hip"], J["right_hip"]], 2]
    behind = np.zeros(len(JOINTS), dtype=bool)
    behind[list(ARMS)] = p[list(ARMS), 2] < torso_z.mean() - 0.02
    return labeled, behind


def sample_person(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A posed, viewed body: image-plane offsets [J, 2] (units of height, y down),
    labeled [J] and behind-torso [J] flags."""
    kind = POSE_KINDS[rng.choice(len(POSE_KINDS), p=POSE_PROBS)]
    p = build_body(rng, kind) @ sample_view(rng).T
    labeled, behind = visibility_3d(p)
    xy = np.stack([p[:, 0], -p[:, 1]], axis=1)
    return xy, labeled, behind
