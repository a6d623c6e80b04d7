"""Plain containers passed between the pipeline's stages (numpy, one image each)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    """Keypoint candidates of one image: heatmap peaks in image coordinates."""

    pos: np.ndarray  # [N, 2] float, image pixels (x, y)
    joint: np.ndarray  # [N] int, joint type
    score: np.ndarray  # [N] float, heat value at the peak
    tag: np.ndarray  # [N, D] float, the candidate's own joint's tag (D=1 for scalar tags)

    def __post_init__(self) -> None:
        self.pos = np.asarray(self.pos, dtype=np.float32).reshape(-1, 2)
        self.joint = np.asarray(self.joint, dtype=np.int64).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        tag = np.asarray(self.tag, dtype=np.float32)
        self.tag = tag.reshape(len(self.joint), -1) if len(self.joint) else tag.reshape(0, 1)
        n = len(self.joint)
        if not (len(self.pos) == len(self.score) == len(self.tag) == n):
            raise ValueError("candidate arrays disagree in length")

    def __len__(self) -> int:
        return len(self.joint)


@dataclass
class People:
    """Assembled people of one image."""

    keypoints: np.ndarray  # [P, K, 3] float: x, y, heat score (0 where the joint is missing)
    scores: np.ndarray  # [P] float, person confidence
    assignment: np.ndarray  # [N] int, person of each candidate, -1 for none

    @classmethod
    def empty(cls, num_joints: int, num_candidates: int = 0) -> People:
        return cls(np.zeros((0, num_joints, 3), np.float32), np.zeros(0, np.float32),
                   np.full(num_candidates, -1, np.int64))

    def __len__(self) -> int:
        return len(self.scores)
