"""Train the learned detector as HigherHRNet is trained: heatmap MSE against Gaussian
targets plus the associative-embedding pull/push loss on tags at ground-truth joints."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from posegnn.data.synthetic import PoseFile, Scene, synthetic_scene
from posegnn.data.synthetic.writer import image_rng
from posegnn.io import atomic_write
from posegnn.layouts import Layout, get_layout

from .network import BottomUpNet
from .render import letterbox_geometry, render_scene

log = logging.getLogger(__name__)
STRIDE = 2  # input pixels per output pixel
SCENE_STREAM, RENDER_STREAM = 10, 11  # image_rng streams, apart from the synthetic world's


@dataclass
class DetectorConfig:
    """How the learned detector is built and trained (``posegnn-detector train``)."""

    layout: str = "crowdpose14"
    input_size: int = 128  # the square network input; the maps are half of it
    width: int = 16  # channels of the first level (level i has width * (i + 1))
    depth: int = 3  # down-sampling levels after the stem
    # a CrowdPose/COCO keypoint file whose people are rendered beside synthetic skeletons;
    # its first ``holdout`` images (in the seeded order of posegnn's pose splits) never
    # train the detector: they are the test images of every world drawn from the file
    poses: str | None = None
    holdout: int = 500
    split_seed: int = 0
    real_share: float = 0.5  # share of training images from ``poses``, when given
    num_scenes: int = 1500  # synthetic scenes in the training pool
    crowd: str = "mixed"
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    heat_sigma: float = 1.5  # Gaussian target std, output pixels
    # the heatmap MSE weights a pixel 1 + heat_foreground * target: peaks are learned in
    # the few steps a CPU affords, not after the background (0: HigherHRNet's plain MSE)
    heat_foreground: float = 10.0
    init: str | None = None  # start from these detector weights
    # the pull and push loss factor: 50x HigherHRNet's 1e-3 (beside a heatmap loss the
    # foreground weights make about 5x larger), at which tags, in the steps a CPU
    # affords, stay all equal, where push has no gradient
    tag_weight: float = 5e-2
    seed: int = 0
    threads: int = 1  # one thread: on a shared CPU more spin and lose time


def held_out_ids(poses: PoseFile, count: int, split_seed: int) -> set[int]:
    """The first ``count`` images of a pose file in the order posegnn's pose splits use
    (``data=crowdpose_poses`` takes its test split from the front of it)."""
    ids = [int(i) for i in poses.images]
    order = np.random.default_rng(split_seed).permutation(len(ids))
    return {ids[i] for i in order[:count]}


def training_scenes(cfg: DetectorConfig, layout: Layout) -> list[Scene]:
    """Synthetic scenes, and the pose file's scenes outside the held-out images."""
    scenes = [synthetic_scene(image_rng(cfg.seed, i, SCENE_STREAM), i, layout, cfg.crowd,
                              input_size=512) for i in range(1, cfg.num_scenes + 1)]
    if cfg.poses:
        poses = PoseFile(cfg.poses)
        held = held_out_ids(poses, cfg.holdout, cfg.split_seed)
        real = [poses.scene(i) for i in sorted(poses.images) if i not in held]
        scenes += [s for s in real if len(s.joints)]
    return scenes


def flip_joints(xy: np.ndarray, labels: np.ndarray, layout: Layout,
                size: int) -> tuple[np.ndarray, np.ndarray]:
    """Joints [P, K, 2] (input pixels) and labels of the mirrored input."""
    perm = layout.flip_permutation()
    xy = xy[:, perm].copy()
    xy[..., 0] = size - xy[..., 0]
    return xy, labels[:, perm]


def heatmap_targets(xy: np.ndarray, labels: np.ndarray, k: int, res: int,
                    sigma: float) -> np.ndarray:
    """Gaussian targets [K, R, R] at the labeled joints; output pixel u is the input
    point STRIDE * (u + 0.5), so a joint at input x lies at x / STRIDE - 0.5."""
    out = np.zeros((k, res, res), dtype=np.float32)
    uv = xy / STRIDE - 0.5
    grid = np.arange(res, dtype=np.float64)
    for p, j in zip(*np.nonzero(labels > 0), strict=True):
        u, v = uv[p, j]
        if not (-2 * sigma < u < res + 2 * sigma and -2 * sigma < v < res + 2 * sigma):
            continue
        gx = np.exp(-((grid - u) ** 2) / (2 * sigma**2))
        gy = np.exp(-((grid - v) ** 2) / (2 * sigma**2))
        np.maximum(out[j], np.outer(gy, gx), out=out[j])
    return out


def joint_pixels(xy: np.ndarray, labels: np.ndarray, res: int) -> np.ndarray:
    """Rows (person, joint, row, col) of the labeled joints inside the output maps."""
    uv = np.round(xy / STRIDE - 0.5).astype(np.int64)
    p, j = np.nonzero(labels > 0)
    u, v = uv[p, j, 0], uv[p, j, 1]
    ok = (u >= 0) & (u < res) & (v >= 0) & (v < res)
    return np.stack([p[ok], j[ok], v[ok], u[ok]], axis=1)


def ae_loss(tags: torch.Tensor, joints: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """HigherHRNet's associative-embedding loss, averaged over the images of a batch:
    pull = mean squared distance of a person's joint tags to their mean, push = mean of
    exp(-d^2) over pairs of people's mean tags (times 0.5). tags [B, K, R, R]; joints per
    image: rows (person, joint, row, col)."""
    pulls, pushes = [], []
    for b, rows in enumerate(joints):
        if not len(rows):
            continue
        rows_t = torch.from_numpy(rows)
        t = tags[b, rows_t[:, 1], rows_t[:, 2], rows_t[:, 3]]
        people, person = torch.unique(rows_t[:, 0], return_inverse=True)
        n = len(people)
        count = torch.zeros(n).index_add_(0, person, torch.ones(len(t)))
        mean = torch.zeros(n).index_add_(0, person, t) / count
        pulls.append((torch.zeros(n).index_add_(0, person, (t - mean[person]) ** 2)
                      / count).mean())
        if n > 1:
            diff = mean[:, None] - mean[None, :]
            push = torch.exp(-diff**2).sum() - n
            pushes.append(push / (n * (n - 1)) * 0.5)
    zero = tags.sum() * 0.0
    pull = torch.stack(pulls).mean() if pulls else zero
    push = torch.stack(pushes).mean() if pushes else zero
    return pull, push


def make_batch(scenes: list[Scene], layout: Layout, cfg: DetectorConfig,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Rendered inputs [B, C, S, S], heatmap targets and joint pixels of random scenes,
    zoomed, shifted and mirrored at random."""
    s, res = cfg.input_size, cfg.input_size // STRIDE
    images, targets, joints = [], [], []
    for i in rng.integers(len(scenes), size=cfg.batch_size):
        scene = scenes[i]
        zoom = float(np.exp(rng.uniform(np.log(0.8), np.log(1.6))))
        geom = letterbox_geometry(scene.image["width"], scene.image["height"], s, zoom,
                                  tuple(rng.uniform(-0.15, 0.15, 2)))
        img = render_scene(scene, layout, geom, rng)
        xy, labels = geom.to_input(scene.joints), scene.labels
        if rng.random() < 0.5:
            img = img[:, :, ::-1].copy()
            xy, labels = flip_joints(xy, labels, layout, s)
        images.append(img)
        targets.append(heatmap_targets(xy, labels, layout.num_joints, res, cfg.heat_sigma))
        joints.append(joint_pixels(xy, labels, res))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)), joints


def train_detector(cfg: DetectorConfig, out: str | Path | None = None,
                   log_every: int = 100) -> tuple[BottomUpNet, dict[str, float]]:
    """Train the network; save ``{settings, state_dict, config}`` to ``out`` when given.
    Returns the network and the last losses, with the wall time."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(cfg.threads, 1))
    layout = get_layout(cfg.layout)
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    scenes = training_scenes(cfg, layout)
    log.info("%d training scenes in %.0f s", len(scenes), time.perf_counter() - start)
    net = BottomUpNet(layout.num_joints, width=cfg.width, depth=cfg.depth,
                      input_size=cfg.input_size)
    if cfg.init:
        net.load_state_dict(load_detector(cfg.init).state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(cfg.steps, 1),
                                                pct_start=0.05)
    synthetic, drawn = scenes[:cfg.num_scenes], scenes[cfg.num_scenes:]
    stats: dict[str, float] = {}
    net.train()
    for step in range(cfg.steps):
        pool = drawn if drawn and rng.random() < cfg.real_share else synthetic
        images, heat_t, joints = make_batch(pool, layout, cfg, rng)
        heat, tags = net(images)
        heat_loss = ((heat - heat_t) ** 2 * (1.0 + cfg.heat_foreground * heat_t)).mean()
        pull, push = ae_loss(tags, joints)
        loss = heat_loss + cfg.tag_weight * (pull + push)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        stats = {"heat_loss": heat_loss.item(), "pull": pull.item(), "push": push.item()}
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            log.info("step %d/%d  heat %.5f  pull %.4f  push %.4f  (%.0f s)", step + 1,
                     cfg.steps, stats["heat_loss"], stats["pull"], stats["push"],
                     time.perf_counter() - start)
    stats["train_s"] = time.perf_counter() - start
    net.eval()
    if out is not None:
        save_detector(net, cfg, out)
    return net, stats


def save_detector(net: BottomUpNet, cfg: DetectorConfig, out: str | Path) -> Path:
    """Plain values only: the constructor's settings, the state dict, the config."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    config = {k: v for k, v in asdict(cfg).items() if k != "poses"}
    config["poses"] = Path(cfg.poses).name if cfg.poses else None
    payload = {"settings": net.settings(), "state_dict": state, "config": config}
    atomic_write(out, lambda f: torch.save(payload, f))
    return out


def load_detector(path: str | Path) -> BottomUpNet:
    """A saved detector (weights only: nothing in the file can run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no detector weights (train them with "
                                "posegnn-detector train out=PATH)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = BottomUpNet(**payload["settings"])
        net.load_state_dict(payload["state_dict"])
    except Exception as err:  # a foreign or broken file: say which, and why
        raise ValueError(f"{path}: not a posegnn detector file ({err})") from None
    return net.eval()
