"""Decode people from same-person pair probabilities (the learned grouping's last step).
Every decoder keeps at most one candidate per joint type in a person.

``greedy``: agglomerative clustering; pairs by descending probability, two clusters
merged when they share no joint type and their linkage (mean, min or max probability
over their observed cross pairs) exceeds ``threshold``.

``local_moves``: correlation clustering on the log-odds ``w = logit(p) - logit(threshold)``
summed over the pairs inside each person. From the greedy result, the best strictly
improving move is applied until none is left (Kernighan-Lin style): a candidate to
another or a new person, into a taken slot (the occupant to a new person, or swapped),
or two persons with disjoint joint types merged. Never worse than greedy.

``parallel_moves`` (default): the same objective and moves from a joint-by-joint start,
in ``max_rounds`` rounds of parallel, non-conflicting moves on the sparse pairs
(:mod:`posegnn.grouping.parallel_moves`); its cost follows the scored pairs.

Unscored pairs carry no evidence (log-odds 0) unless ``unknown_prob`` gives them a
probability (dense decoders only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from posegnn.choices import SettingError, one_of
from posegnn.grouping.base import Grouping, heat_score
from posegnn.grouping.parallel_moves import parallel_moves_decode
from posegnn.grouping.person_features import person_features
from posegnn.layouts import Layout
from posegnn.types import Candidates, People

EPS_PROB = 1e-6
LINKAGES = ("mean", "min", "max")
DECODERS = ("greedy", "local_moves", "parallel_moves")
SCORES = ("heat_x_prob", "heat", "learned")


def logit(p: np.ndarray | float) -> np.ndarray:
    """Log-odds with probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS_PROB, 1 - EPS_PROB)
    return np.log(p) - np.log1p(-p)


def dense_probabilities(n: int, pair_index: np.ndarray, prob: np.ndarray,
                        unknown_prob: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric [N, N] probabilities and a mask of the pairs with evidence."""
    pair_index = np.asarray(pair_index, dtype=np.int64).reshape(2, -1)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    if prob.shape[0] != pair_index.shape[1]:
        raise ValueError(f"{prob.shape[0]} probabilities for {pair_index.shape[1]} pairs")
    if pair_index.size and (pair_index.min() < 0 or pair_index.max() >= n):
        raise ValueError(f"pair_index outside 0..{n - 1}")
    fill = 0.5 if unknown_prob is None else float(unknown_prob)
    p = np.full((n, n), fill)
    known = np.zeros((n, n), bool) if unknown_prob is None else np.ones((n, n), bool)
    i, j = pair_index
    p[i, j] = p[j, i] = prob
    known[i, j] = known[j, i] = True
    np.fill_diagonal(known, False)
    return p, known


def pair_weights(p: np.ndarray, known: np.ndarray, joint: np.ndarray,
                 threshold: float = 0.5) -> np.ndarray:
    """Log-odds weights relative to ``threshold``; 0 without evidence or for equal types."""
    w = logit(p) - logit(threshold)
    w[~known | (joint[:, None] == joint[None, :])] = 0.0
    return w


def objective(weights: np.ndarray, labels: np.ndarray) -> float:
    """Sum of weights over pairs inside one cluster (label -1 is never a cluster)."""
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    return float(np.triu(np.where(same, weights, 0.0), 1).sum())


def greedy_decode(p: np.ndarray, known: np.ndarray, joint: np.ndarray,
                  threshold: float = 0.5, linkage: str = "mean") -> np.ndarray:
    """Agglomerative clustering with the joint-type constraint; returns a label per vertex."""
    n = len(joint)
    link_sum = np.where(known, p, 0.0)
    link_cnt = known.astype(np.float64)
    link_min = np.where(known, p, np.inf)
    link_max = np.where(known, p, -np.inf)
    labels = np.arange(n)
    types = [1 << int(j) for j in joint]
    i, j = np.nonzero(np.triu(known & (p > threshold) & (joint[:, None] != joint[None, :]), 1))
    for e in np.lexsort((j, i, -p[i, j])):
        a, b = labels[i[e]], labels[j[e]]
        if a == b or types[a] & types[b]:
            continue
        if linkage == "mean":
            link = link_sum[a, b] / link_cnt[a, b]
        else:
            link = link_min[a, b] if linkage == "min" else link_max[a, b]
        if link <= threshold:
            continue
        a, b = min(a, b), max(a, b)
        link_sum[a] += link_sum[b]
        link_cnt[a] += link_cnt[b]
        np.minimum(link_min[a], link_min[b], out=link_min[a])
        np.maximum(link_max[a], link_max[b], out=link_max[a])
        for m in (link_sum, link_cnt, link_min, link_max):
            m[:, a] = m[a]
        types[a] |= types[b]
        labels[labels == b] = a
    return labels


class _Clusters:
    """Clusters in N fixed slots, with A[v, c] = sum of weights from v to members of c."""

    def __init__(self, weights: np.ndarray, joint: np.ndarray, labels: np.ndarray) -> None:
        n = len(joint)
        self.w, self.joint = weights, joint
        self.labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
        onehot = np.zeros((n, n))
        onehot[np.arange(n), self.labels] = 1.0
        self.a = weights @ onehot
        self.size = onehot.sum(axis=0).astype(np.int64)
        self.slot = np.full((n, int(joint.max()) + 1), -1, np.int64)
        self.slot[self.labels, joint] = np.arange(n)

    def move(self, v: int, to: int) -> None:
        old = self.labels[v]
        self.a[:, old] -= self.w[:, v]
        self.a[:, to] += self.w[:, v]
        self.size[old] -= 1
        self.size[to] += 1
        self.slot[old, self.joint[v]] = -1
        self.slot[to, self.joint[v]] = v
        self.labels[v] = to

    def empty_slot(self) -> int:
        return int(np.flatnonzero(self.size == 0)[0])


def _vertex_move_gains(c: _Clusters, act: np.ndarray) -> tuple[np.ndarray, ...]:
    """Gains [N, M] of moving v into active cluster act[m]: plain, displace and swap."""
    n = len(c.joint)
    rows = np.arange(n)[:, None]
    cv = c.labels[:, None]
    a_cur = c.a[rows, cv]
    a_to = c.a[:, act]
    occupant = c.slot[act][:, c.joint].T  # [N, M]: vertex holding v's joint type in act[m]
    free = occupant < 0
    other = act[None, :] != cv
    u = np.where(free, 0, occupant)
    w_vu = c.w[rows, u]
    plain = np.where(free & other, a_to - a_cur, -np.inf)
    displace = a_to - w_vu - a_cur - c.a[u, act[None, :]]
    swap = displace + c.a[u, cv] - w_vu
    taken = ~free & other
    return plain, np.where(taken, displace, -np.inf), np.where(taken, swap, -np.inf)


def _best_move(c: _Clusters) -> tuple[float, str, int, int]:
    """The best move as (gain, kind, vertex or cluster, target cluster index)."""
    act = np.flatnonzero(c.size > 0)
    plain, displace, swap = _vertex_move_gains(c, act)
    a_cur = c.a[np.arange(len(c.labels)), c.labels]
    new = np.where(c.size[c.labels] > 1, -a_cur, -np.inf)
    order = np.argsort(c.labels, kind="stable")
    starts = np.searchsorted(c.labels[order], act)
    between = np.add.reduceat(c.a[order][:, act], starts, axis=0)  # [M, M] cluster sums
    has = (c.slot[act] >= 0).astype(np.int64)
    merge = np.where(np.triu((has @ has.T) == 0, 1), between, -np.inf)
    options = [("move", plain), ("displace", displace), ("swap", swap), ("merge", merge),
               ("new", new[:, None])]
    best = (0.0, "", -1, -1)
    for kind, gains in options:
        if gains.size == 0:
            continue
        k = int(np.argmax(gains))
        g = float(gains.flat[k])
        if g > best[0]:
            r, m = np.unravel_index(k, gains.shape)
            best = (g, kind, int(r), int(m))
    if best[1] == "merge":
        best = (best[0], "merge", int(act[best[2]]), int(act[best[3]]))
    elif best[1] in ("move", "displace", "swap"):
        best = (best[0], best[1], best[2], int(act[best[3]]))
    return best


def _apply(c: _Clusters, kind: str, r: int, to: int) -> None:
    if kind == "merge":
        for v in np.flatnonzero(c.labels == to):
            c.move(int(v), r)
    elif kind == "new":
        c.move(r, c.empty_slot())
    elif kind == "move":
        c.move(r, to)
    else:  # displace or swap
        old = int(c.labels[r])
        u = int(c.slot[to, c.joint[r]])
        c.move(u, c.empty_slot())  # free the slot first (keeps one vertex per type)
        c.move(r, to)
        if kind == "swap":
            c.move(u, old)


def local_moves_decode(weights: np.ndarray, joint: np.ndarray, labels: np.ndarray,
                       max_moves: int | None = None, tol: float = 1e-9) -> np.ndarray:
    """Improve a valid clustering by single-vertex, swap and merge moves (see module doc)."""
    n = len(joint)
    if n == 0:
        return labels.copy()
    c = _Clusters(weights, joint, labels)
    for _ in range(10 * n + 100 if max_moves is None else int(max_moves)):
        gain, kind, r, to = _best_move(c)
        if gain <= tol:
            break
        _apply(c, kind, r, to)
    return c.labels.copy()


@dataclass
class GNNGroupingConfig:
    """Settings of the learned grouping (``grouping.gnn``); the CLI, the Python API and
    :class:`GNNGrouping` all take their defaults from here."""

    threshold: float = 0.1  # pair probability where joining starts to pay (chosen on val)
    decoder: str = "parallel_moves"  # greedy | local_moves | parallel_moves
    linkage: str = "mean"  # greedy merges: mean | min | max pair probability
    unknown_prob: float | None = None  # dense decoders: probability of unscored pairs
    min_keypoints: int = 1  # smaller people are dropped
    # person score: learned (the checkpoint's person scorer; heat_x_prob without one) |
    # heat_x_prob | heat
    score: str = "learned"
    max_moves: int | None = None  # local_moves: stop after this many moves
    # parallel_moves: rounds of moves after the joint-by-joint start (None: until no move
    # gains); later rounds move few candidates and gained no AP on either test split
    max_rounds: int | None = 2
    # from a model with a vertex head (model.vertex_head): candidates less likely than this
    # to belong to anybody are left out (0 keeps them all)
    drop_below: float = 0.0
    # HigherHRNet's steps after grouping, as for ae (posegnn.grouping.refine)
    adjust: bool = False
    refine: bool = True

    def __post_init__(self) -> None:
        one_of("grouping.gnn.decoder", self.decoder, DECODERS)
        one_of("grouping.gnn.linkage", self.linkage, LINKAGES)
        one_of("grouping.gnn.score", self.score, SCORES)
        if not 0.0 < float(self.threshold) < 1.0:
            raise SettingError(f"grouping.gnn.threshold={self.threshold} must lie strictly "
                               "between 0 and 1")
        if not 0.0 <= float(self.drop_below) < 1.0:
            raise SettingError(f"grouping.gnn.drop_below={self.drop_below} must lie in [0, 1)")
        if self.max_rounds is not None and int(self.max_rounds) < 0:
            raise SettingError(f"grouping.gnn.max_rounds={self.max_rounds} must be >= 0 "
                               "(or null: until no move gains)")
        if self.decoder == "parallel_moves" and self.unknown_prob is not None:
            raise SettingError("grouping.gnn.unknown_prob needs a dense decoder (greedy or "
                               "local_moves)")


class GNNGrouping(Grouping):
    """People from same-person probabilities (``pair_index`` [2, M], ``prob`` [M]).

    Person score: mean heat over all K joints (missing count 0) times the mean observed
    probability of the person's internal pairs (1 for a single candidate) when
    ``score="heat_x_prob"``, the heat term alone with ``score="heat"``. ``score="learned"``
    is the expected OKS that ``scorer`` (a fitted :class:`~posegnn.models.person_scorer.
    PersonScorer`'s ``score``) gives the person's features; heat_x_prob without one.
    Candidates with ``vertex_prob`` (from a model with a vertex head) below
    ``drop_below`` join nobody.
    """

    name = "gnn"
    Config = GNNGroupingConfig

    def __init__(self, settings: GNNGroupingConfig | None = None, *,
                 layout: Layout | str | None = None, num_joints: int | None = None,
                 scorer: Callable[[np.ndarray], np.ndarray | None] | None = None) -> None:
        super().__init__(settings, layout=layout, num_joints=num_joints)
        self.scorer = scorer

    def decode(self, p: np.ndarray, known: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """Cluster label per candidate from dense probabilities."""
        labels = greedy_decode(p, known, joint, self.settings.threshold, self.settings.linkage)
        if self.settings.decoder == "local_moves":
            w = pair_weights(p, known, joint, self.settings.threshold)
            labels = local_moves_decode(w, joint, labels, self.settings.max_moves)
        return labels

    def _group(self, cands: Candidates, *, pair_index: np.ndarray | None,
               prob: np.ndarray | None, person: np.ndarray | None,
               vertex_prob: np.ndarray | None) -> People:
        if pair_index is None or prob is None:
            raise ValueError("GNNGrouping needs `pair_index` and `prob`")
        prob = np.asarray(prob, dtype=np.float64).reshape(-1)
        if prob.shape[0] != pair_index.shape[1]:
            raise ValueError(f"{prob.shape[0]} probabilities for {pair_index.shape[1]} pairs")
        nobody = (np.zeros(len(cands), bool) if vertex_prob is None
                  else vertex_prob < self.settings.drop_below)
        if nobody.any():  # their pairs carry no evidence
            kept = ~(nobody[pair_index[0]] | nobody[pair_index[1]])
            pair_index, prob = pair_index[:, kept], prob[kept]
        if self.settings.decoder == "parallel_moves":
            weight = logit(prob) - logit(self.settings.threshold)
            order = self.layout.ae_order if self.layout else None
            labels = parallel_moves_decode(len(cands), cands.joint, pair_index, weight, order,
                                           self.settings.max_rounds)
        else:
            p, known = dense_probabilities(len(cands), pair_index, prob,
                                           self.settings.unknown_prob)
            labels = self.decode(p, known, cands.joint)
        labels[nobody] = -1
        people = self._people(cands, labels)
        if self.settings.score == "heat":
            return people
        learned = None
        if self.settings.score == "learned" and self.scorer is not None:
            learned = self.scorer(person_features(people, pair_index, prob))
        people.scores = (learned if learned is not None else heat_score(people.keypoints)
                         * internal_probability(pair_index, prob, people.assignment,
                                                len(people))).astype(np.float32)
        return people


def internal_probability(pair_index: np.ndarray, prob: np.ndarray,
                         assignment: np.ndarray, num_people: int) -> np.ndarray:
    """Mean probability over each person's scored internal pairs (1 where none)."""
    i, j = pair_index
    inside = (assignment[i] == assignment[j]) & (assignment[i] >= 0)
    who = assignment[i[inside]]
    sums = np.bincount(who, weights=prob[inside], minlength=num_people)
    counts = np.bincount(who, minlength=num_people)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
