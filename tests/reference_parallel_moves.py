"""The parallel-moves decoder as it was before its speed-up (commit 6f81a8e), kept as the
reference the fast one must equal label for label: a dense [N, N] weight matrix for the
joint-by-joint start, and ``np.unique`` to renumber clusters each round."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

KINDS = ("merge", "move", "displace", "swap", "new")


def parallel_moves_decode(num_nodes: int, joint: np.ndarray, pair_index: np.ndarray,
                          weight: np.ndarray, order: tuple[int, ...] | None = None,
                          max_rounds: int | None = None, tol: float = 1e-9) -> np.ndarray:
    """Cluster label (0..C-1) per candidate from pair weights [M] of pairs [2, M];
    ``order`` is the joint types' order for the start (default 0..K-1)."""
    joint = np.asarray(joint, dtype=np.int64)
    i, j = np.asarray(pair_index, dtype=np.int64).reshape(2, -1)
    weight = np.asarray(weight, dtype=np.float64).reshape(-1)
    keep = (weight != 0) & (joint[i] != joint[j]) & (i != j)
    src = np.concatenate([i[keep], j[keep]])
    dst = np.concatenate([j[keep], i[keep]])
    w = np.concatenate([weight[keep], weight[keep]])
    if len(w) == 0:
        return np.arange(num_nodes)
    if order is None:
        order = range(int(joint.max()) + 1)
    dense = np.zeros((num_nodes, num_nodes))
    dense[src, dst] = w
    labels = joint_by_joint(dense, joint, order, tol)
    rounds = 10 * num_nodes + 100 if max_rounds is None else int(max_rounds)
    for _ in range(rounds):
        labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
        moved = _one_round(labels, joint, src, dst, w, dense, tol)
        if moved is None:
            break
        labels = moved
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def joint_by_joint(dense: np.ndarray, joint: np.ndarray, order, tol: float) -> np.ndarray:
    """The start from the [N, N] weights: joint types in ``order``, each assigned to the
    people so far."""
    num_nodes = len(joint)
    affinity = np.zeros((num_nodes, num_nodes))  # [candidate, person]: summed weight
    labels = np.full(num_nodes, -1, np.int64)
    people = 0
    for t in order:
        idx = np.flatnonzero(joint == t)
        if len(idx) == 0:
            continue
        who = np.full(len(idx), -1, np.int64)
        if people:
            gain = affinity[idx, :people]
            # one extra column per candidate: starting a person gains 0
            rows, cols = linear_sum_assignment(
                -np.hstack([gain, np.zeros((len(idx), len(idx)))]))
            ok = (cols < people) & (gain[rows, np.minimum(cols, people - 1)] > tol)
            who[rows[ok]] = cols[ok]
        fresh = who < 0
        who[fresh] = np.arange(people, people + int(fresh.sum()))
        people += int(fresh.sum())
        labels[idx] = who
        affinity[:, who] += dense[:, idx]
    return labels


def _one_round(labels: np.ndarray, joint: np.ndarray, src: np.ndarray, dst: np.ndarray,
               w: np.ndarray, dense: np.ndarray, tol: float) -> np.ndarray | None:
    """New labels after one round of non-conflicting improving moves; None if none."""
    n = len(labels)
    c_count = int(labels.max()) + 1
    k = int(joint.max()) + 1
    # a[v, c]: weight from candidate v to the members of cluster c
    a = np.bincount(src * c_count + labels[dst], weights=w,
                    minlength=n * c_count).reshape(n, c_count)
    own = a[np.arange(n), labels]
    size = np.bincount(labels, minlength=c_count)
    slot = np.full((c_count, k), -1, np.int64)
    slot[labels, joint] = np.arange(n)
    gains, first, second, kinds, movers, occupants = [], [], [], [], [], []

    def offer(gain, c1, c2, kind, v, u):
        ok = gain > tol
        gains.append(gain[ok])
        first.append(c1[ok])
        second.append(c2[ok])
        kinds.append(np.full(int(ok.sum()), KINDS.index(kind)))
        movers.append(v[ok])
        occupants.append(u[ok])

    # merges: weights between clusters, for clusters without a common joint type
    between = np.bincount(labels[src] * c_count + labels[dst], weights=w,
                          minlength=c_count * c_count).reshape(c_count, c_count)
    ca, cb = np.nonzero(np.triu(between > tol, 1))
    has = slot >= 0
    disjoint = ~(has[ca] & has[cb]).any(axis=1)
    none = np.full(len(ca), -1)
    offer(np.where(disjoint, between[ca, cb], 0.0), ca, cb, "merge", none, none)
    # vertex moves towards the clusters a candidate has a scored pair with
    v, c = np.nonzero(a)
    cur = labels[v]
    away = c != cur
    v, c, cur = v[away], c[away], cur[away]
    u = slot[c, joint[v]]
    free = u < 0
    gain = a[v, c] - own[v]
    offer(np.where(free, gain, 0.0), cur, c, "move", v, u)
    taken = ~free
    vt, ct, ut, curt = v[taken], c[taken], u[taken], cur[taken]
    w_vu = dense[vt, ut]
    displace = a[vt, ct] - w_vu - own[vt] - own[ut]
    swap = displace + a[ut, curt] - w_vu
    offer(displace, curt, ct, "displace", vt, ut)
    offer(swap, curt, ct, "swap", vt, ut)
    # leaving: a candidate whose cluster weighs against it starts a new one
    alone = np.flatnonzero((own < -tol) & (size[labels] > 1))
    offer(-own[alone], labels[alone], np.full(len(alone), -1), "new", alone,
          np.full(len(alone), -1))
    gain = np.concatenate(gains)
    if len(gain) == 0:
        return None
    c1, c2 = np.concatenate(first), np.concatenate(second)
    kind, v, u = np.concatenate(kinds), np.concatenate(movers), np.concatenate(occupants)
    chosen = _disjoint_best(gain, kind, c1, c2, c_count)
    return _apply(labels, c_count, c1[chosen], c2[chosen], kind[chosen], v[chosen],
                  u[chosen])


def _disjoint_best(gain: np.ndarray, kind: np.ndarray, c1: np.ndarray, c2: np.ndarray,
                   c_count: int) -> np.ndarray:
    """Mask of a maximal set of moves touching pairwise disjoint clusters, preferring
    higher gains: a move is taken when it ranks first at each cluster it touches among
    the moves still open; then moves touching a taken cluster close, and again."""
    order = np.lexsort((kind, -gain))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    second = np.where(c2 >= 0, c2, c_count)  # c_count: a cluster no move conflicts on
    chosen = np.zeros(len(gain), bool)
    open_ = np.ones(len(gain), bool)
    while open_.any():
        idx = np.flatnonzero(open_)
        best = np.full(c_count + 1, len(order), np.int64)
        np.minimum.at(best, c1[idx], rank[idx])
        np.minimum.at(best, second[idx], rank[idx])
        best[c_count] = len(order)
        take = idx[(best[c1[idx]] == rank[idx])
                   & ((second[idx] == c_count) | (best[second[idx]] == rank[idx]))]
        chosen[take] = True
        busy = np.zeros(c_count + 1, bool)
        busy[c1[take]] = busy[second[take]] = True
        busy[c_count] = False
        open_ &= ~busy[c1] & ~busy[second] & ~chosen
    return chosen


def _apply(labels: np.ndarray, c_count: int, c1: np.ndarray, c2: np.ndarray,
           kind: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Labels after the chosen (pairwise non-conflicting) moves."""
    labels = labels.copy()
    fresh = c_count  # next unused cluster id
    remap = np.arange(c_count + len(kind))
    for name in KINDS:
        sel = kind == KINDS.index(name)
        count = int(sel.sum())
        if name == "merge":
            remap[c2[sel]] = c1[sel]
        elif name == "move":
            labels[v[sel]] = c2[sel]
        elif name in ("new", "displace"):  # the mover, or the displaced occupant, leaves
            labels[(v if name == "new" else u)[sel]] = np.arange(fresh, fresh + count)
            fresh += count
            if name == "displace":
                labels[v[sel]] = c2[sel]
        else:  # swap
            labels[u[sel]] = c1[sel]
            labels[v[sel]] = c2[sel]
    return remap[labels]
