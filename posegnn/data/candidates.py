"""Keypoint candidates: heatmap peaks per joint type, refined to sub-pixel positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CandidateConfig:
    """Peak detection settings: max-pool NMS kernel, top-k per joint type, threshold."""

    nms_kernel: int = 5
    top_k: int = 30
    threshold: float = 0.1
    refine: bool = True


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
    k, h, w = heatmaps.shape
    pad = cfg.nms_kernel // 2
    is_peak = (heatmaps == max_filter(heatmaps, pad)) & (heatmaps > cfg.threshold)
    flat = heatmaps.masked_fill(~is_peak, float("-inf")).reshape(k, -1)
    top_val, top_idx = flat.topk(min(cfg.top_k, h * w), dim=1)
    keep = torch.isfinite(top_val) & ~_plateau_duplicates(top_val, top_idx, w, pad)
    joint = torch.arange(k).unsqueeze(1).expand_as(top_idx)[keep]
    idx, score = top_idx[keep], top_val[keep]
    row, col = (idx // w).float(), (idx % w).float()
    uv = torch.stack([col, row], dim=1)
    if cfg.refine and len(idx):
        uv = uv + _quadratic_offset(heatmaps, joint, idx // w, idx % w)
    return Peaks(uv, joint, score)


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


def _plateau_duplicates(val: torch.Tensor, idx: torch.Tensor, width: int,
                        radius: int) -> torch.Tensor:
    """[K, T] mask of peaks that tie with an earlier peak of the same map inside the NMS
    window (a plateau: equal neighbours, common in float16 maps); the first one stays."""
    row, col = idx // width, idx % width
    near = ((row.unsqueeze(2) - row.unsqueeze(1)).abs() <= radius) & (
        (col.unsqueeze(2) - col.unsqueeze(1)).abs() <= radius)
    tie = (val.unsqueeze(2) == val.unsqueeze(1)) & torch.isfinite(val).unsqueeze(2)
    earlier = idx.unsqueeze(1) < idx.unsqueeze(2)  # [k, i, j]: j comes before i
    return (near & tie & earlier).any(dim=2)


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
