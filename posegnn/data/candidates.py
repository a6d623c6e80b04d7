"""Keypoint candidates: heatmap peaks per joint type, at sub-pixel positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CandidateConfig:
    """Peak detection settings: max-pool NMS kernel, top-k per joint type, threshold."""

    nms_kernel: int = 5
    top_k: int = 30
    threshold: float = 0.1
    subpixel: bool = True  # a quadratic fit around each peak (else its integer pixel)


@dataclass
class Peaks:
    """Peaks in heatmap pixel coordinates."""

    uv: torch.Tensor  # [N, 2] float (u = column, v = row)
    joint: torch.Tensor  # [N] long
    score: torch.Tensor  # [N] float


def find_peaks(heatmaps: torch.Tensor, cfg: CandidateConfig) -> Peaks:
    """Local maxima of each heatmap [K, H, W] above ``threshold``, at most ``top_k`` each."""
    if cfg.nms_kernel < 1 or cfg.nms_kernel % 2 == 0:
        raise ValueError(f"nms_kernel must be a positive odd number, got {cfg.nms_kernel}")
    pad = cfg.nms_kernel // 2
    joint, row, col = local_maxima(heatmaps, pad, cfg.threshold)
    score = heatmaps[joint, row, col]
    # group by joint type, strongest first, and keep the first top_k of each group
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(joint[order], stable=True)]
    joint, row, col, score = joint[order], row[order], col[order], score[order]
    rank = torch.arange(len(joint)) - torch.searchsorted(joint, joint)
    keep = rank < cfg.top_k
    joint, row, col, score = joint[keep], row[keep], col[keep], score[keep]
    keep = ~_plateau_duplicates(joint, row, col, score, pad)
    joint, row, col, score = joint[keep], row[keep], col[keep], score[keep]
    uv = torch.stack([col, row], dim=1).float()
    if cfg.subpixel and len(joint):
        uv = uv + _quadratic_offset(heatmaps, joint, row, col)
    return Peaks(uv, joint, score)


def local_maxima(maps: torch.Tensor, radius: int, threshold: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(map, row, column) in raster order of every pixel above ``threshold`` that equals
    the maximum of its (2r+1) x (2r+1) window: ``maps == max_filter(maps, r)``, checked
    only at the few pixels above the threshold (found with numpy, several times faster
    than ``nonzero`` here). A window cut by the border compares with border pixels
    instead, which lie inside the window anyway."""
    k, h, w = maps.shape
    if maps.device.type == "cpu" and not maps.requires_grad:
        at = torch.from_numpy(np.flatnonzero(maps.numpy() > threshold))
    else:
        at = (maps > threshold).reshape(-1).nonzero().squeeze(1)
    if len(at) * (2 * radius + 1) ** 2 > 2 * maps.numel():  # most pixels: filter all
        return ((maps == max_filter(maps, radius)) & (maps > threshold)).nonzero(
            as_tuple=True)
    if len(at) == 0:
        return at, at, at
    joint = at // (h * w)
    row = at % (h * w) // w
    col = at % w
    shifts = torch.arange(-radius, radius + 1, device=maps.device)
    rows = (row.unsqueeze(1) + shifts).clamp_(0, h - 1)  # [P, 2r+1]
    cols = (col.unsqueeze(1) + shifts).clamp_(0, w - 1)
    window = ((joint * h).unsqueeze(1) + rows).mul_(w).unsqueeze(2) + cols.unsqueeze(1)
    flat = maps.reshape(-1)
    peak = (flat.index_select(0, at).unsqueeze(1)
            >= flat[window.reshape(len(at), -1)]).all(dim=1)
    return joint[peak], row[peak], col[peak]


def max_filter(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2r+1) x (2r+1) window of each map [K, H, W], as two separable
    passes of shifted maxima (much faster on a CPU than max_pool2d with stride 1)."""
    out = maps
    for dim in (1, 2):
        padded = F.pad(out, (radius, radius) if dim == 2 else (0, 0, radius, radius),
                       value=float("-inf"))
        size = out.shape[dim]
        out = padded.narrow(dim, 0, size)
        for shift in range(1, 2 * radius + 1):
            out = torch.maximum(out, padded.narrow(dim, shift, size))
    return out


def _plateau_duplicates(joint: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                        score: torch.Tensor, radius: int) -> torch.Tensor:
    """Mask of peaks that tie with an earlier (in raster order) peak of the same map inside
    the NMS window: a plateau of equal neighbours, common in float16 maps, keeps one."""
    near = ((row.unsqueeze(1) - row.unsqueeze(0)).abs() <= radius) & (
        (col.unsqueeze(1) - col.unsqueeze(0)).abs() <= radius)
    same = (joint.unsqueeze(1) == joint.unsqueeze(0)) & (score.unsqueeze(1) == score.unsqueeze(0))
    above = row.unsqueeze(0) < row.unsqueeze(1)
    left = (row.unsqueeze(0) == row.unsqueeze(1)) & (col.unsqueeze(0) < col.unsqueeze(1))
    earlier = above | left  # [i, j]: j comes before i in raster order
    return (near & same & earlier).any(dim=1)


def _quadratic_offset(heat: torch.Tensor, joint, row, col) -> torch.Tensor:
    """Sub-pixel offset [N, 2] from a parabola through each peak and its neighbours."""
    _, h, w = heat.shape
    offsets = []
    for _axis_len, d_row, d_col in ((w, 0, 1), (h, 1, 0)):
        lo = heat[joint, (row - d_row).clamp(0, h - 1), (col - d_col).clamp(0, w - 1)]
        hi = heat[joint, (row + d_row).clamp(0, h - 1), (col + d_col).clamp(0, w - 1)]
        mid = heat[joint, row, col]
        curvature = lo + hi - 2 * mid
        step = torch.where(curvature < 0, 0.5 * (lo - hi) / curvature.clamp(max=-1e-6),
                           torch.zeros_like(mid))
        offsets.append(step.clamp(-0.5, 0.5))
    return torch.stack(offsets, dim=1)


def bilinear(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample maps [C, H, W] at points uv [N, 2] (pixel coordinates) -> [N, C]."""
    c, h, w = maps.shape
    u = uv[:, 0].clamp(0, w - 1)
    v = uv[:, 1].clamp(0, h - 1)
    u0, v0 = u.floor().long().clamp(max=w - 2 if w > 1 else 0), v.floor().long().clamp(
        max=h - 2 if h > 1 else 0)
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    fu, fv = (u - u0).unsqueeze(1), (v - v0).unsqueeze(1)
    top = maps[:, v0, u0].T * (1 - fu) + maps[:, v0, u1].T * fu
    bottom = maps[:, v1, u0].T * (1 - fu) + maps[:, v1, u1].T * fu
    return top * (1 - fv) + bottom * fv
