"""What the grouping knows of each assembled person, as the person scorer's input."""

from __future__ import annotations

import numpy as np

from posegnn import kernels
from posegnn.types import People


def person_features(people: People, pair_index: np.ndarray, prob: np.ndarray,
                    reference: bool = False) -> np.ndarray:
    """[P, 4K + 7] per person: which joints it has, their heat, their offsets from its
    centre over its size; the share of joints present, the heat-x-probability score, the
    mean and least probability of its own pairs, the largest and mean probability of its
    pairs to candidates outside it, and its log size. ``people.assignment`` and
    ``pair_index`` index the same candidates. The pair statistics are compiled
    (:func:`posegnn.kernels.pair_statistics`); ``reference``: their numpy form."""
    kp = people.keypoints.astype(np.float64)
    p, k = kp.shape[:2]
    present = kp[:, :, 2] > 0
    count = np.maximum(present.sum(1), 1)
    centre = (kp[:, :, :2] * present[..., None]).sum(1) / count[:, None]
    offset = (kp[:, :, :2] - centre[:, None]) * present[..., None]
    size = np.sqrt((offset ** 2).sum((1, 2)) / count + 1.0)
    a = people.assignment
    i, j = np.asarray(pair_index, np.int64).reshape(2, -1)
    prob = np.asarray(prob, np.float64).reshape(-1)
    if reference:
        mean_in, min_in, max_out, mean_out = _pair_statistics(a, i, j, prob, p)
    else:
        mean_in, min_in, max_out, mean_out = kernels.pair_statistics(a, i, j, prob, p)
    summary = [present.mean(1), kp[:, :, 2].mean(1) * mean_in, mean_in, min_in, max_out,
               mean_out, np.log(size)]
    return np.concatenate([present, kp[:, :, 2], (offset / size[:, None, None]).reshape(p, -1),
                           np.stack(summary, 1)], axis=1).astype(np.float32)


def _pair_statistics(a: np.ndarray, i: np.ndarray, j: np.ndarray, prob: np.ndarray,
                     p: int) -> tuple[np.ndarray, ...]:
    """The numpy reference of :func:`posegnn.kernels.pair_statistics`."""
    ai, aj = a[i], a[j]
    inside = (ai == aj) & (ai >= 0)
    n_in = np.bincount(ai[inside], minlength=p)
    mean_in = np.bincount(ai[inside], prob[inside], minlength=p) / np.maximum(n_in, 1)
    min_in = np.ones(p)
    np.minimum.at(min_in, ai[inside], prob[inside])
    across = ai != aj
    owner = np.concatenate([ai[across], aj[across]])
    p_out = np.concatenate([prob[across], prob[across]])
    p_out, owner = p_out[owner >= 0], owner[owner >= 0]
    n_out = np.bincount(owner, minlength=p)
    mean_out = np.bincount(owner, p_out, minlength=p) / np.maximum(n_out, 1)
    max_out = np.zeros(p)
    np.maximum.at(max_out, owner, p_out)
    return np.where(n_in > 0, mean_in, 1.0), min_in, max_out, mean_out
