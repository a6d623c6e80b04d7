"""Learned person scores: each assembled person's expected OKS, for AP's ranking.

AP ranks people by their score. The heat-based score (mean heat times the mean
probability of the person's pairs) ranks poorly in crowds: scored by their true OKS the
default model's people would gain 0.03 AP (RESULTS.md). :class:`PersonScorer` is a small
MLP, in the manner of DEKR's rescoring net, that predicts a person's OKS with the best
ground-truth person from what the grouping knows of it
(:func:`~posegnn.grouping.person_features.person_features`). It is fitted after
training, on the training split's people
(:func:`posegnn.evaluation.runner.fit_person_scorer`), and travels in the checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the features of posegnn.grouping.person_features: 4 per joint type, then the share of
# joints, heat x prob, pair statistics (4) and the log size
SUMMARY_FEATURES = 7


def feature_width(num_joints: int) -> int:
    return 4 * num_joints + SUMMARY_FEATURES


class PersonScorer(nn.Module):
    """Features of :func:`person_features` in, expected OKS in [0, 1] out. Unfitted (a
    checkpoint saved before the fit, e.g. ``last.ckpt``), it gives None."""

    def __init__(self, num_joints: int, hidden: int = 64) -> None:
        super().__init__()
        width = feature_width(num_joints)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.register_buffer("fitted", torch.tensor(False))
        self.requires_grad_(False)  # trained by fit() alone, never by the pair loss (DDP)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net((x - self.mean) / self.std)).squeeze(1)

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray | None:
        """Expected OKS [P] of the people whose ``features`` are given; None unfitted."""
        if not bool(self.fitted):
            return None
        x = torch.as_tensor(features, dtype=self.mean.dtype, device=self.mean.device)
        return self.forward(x).cpu().numpy() if len(x) else np.zeros(0, np.float32)

    def fit(self, features: np.ndarray, oks: np.ndarray, epochs: int = 100,
            batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> float:
        """Fit to the people's OKS (mean squared error, Adam); returns the last epoch's
        mean loss."""
        x = torch.as_tensor(features, dtype=torch.float32)
        y = torch.as_tensor(oks, dtype=torch.float32)
        if len(x) < 2:
            raise ValueError(f"{len(x)} people to fit the person scorer on; it needs 2")
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-6))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.net.requires_grad_(True)
        with torch.enable_grad(), torch.inference_mode(False):
            for _ in range(epochs):
                total = 0.0
                for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                    loss = F.mse_loss(self.forward(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
        self.net.requires_grad_(False)
        self.fitted.fill_(True)
        return total / len(x)
