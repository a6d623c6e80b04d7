"""Correlation clustering on the sparse scored pairs: a joint-by-joint start, then rounds
of parallel local moves.

The objective is the one of :mod:`posegnn.grouping.gnn`'s ``local_moves`` decoder: the
sum, over pairs inside one person, of the log-odds weights ``w``; unscored pairs weigh
0, and a person holds at most one candidate per joint type.

The start visits the joint types in turn, as associative embedding does, and gives the
candidates of each type to the people found so far by an optimal assignment on their
summed weight to each person's members (a candidate with no positive match starts a
person). Then each round computes, from the current clusters, every improving move:

- ``merge`` two clusters with disjoint joint types (gain: the weights between them);
- ``move`` a candidate into a cluster where its joint type is free;
- ``displace``: move it into a cluster whose slot of its type is taken, the occupant
  going to a new cluster; ``swap``: the same, the occupant going to the mover's cluster;
- ``new``: move a candidate out to a new cluster of its own.

A move changes at most two existing clusters, and its gain depends on nothing else, so
moves touching disjoint clusters add up. Each round applies every move that ranks first
(by gain) among the moves touching each of its clusters, then starts again; every round
raises the objective strictly, so the search ends. The numpy form here does each round
in a few array operations on [N, C] (candidates x clusters); what runs by default is its
compiled form (:func:`posegnn.kernels.parallel_moves`), the same steps as loops, with the
same labels (tests/test_kernels.py).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from posegnn import kernels

KINDS = ("merge", "move", "displace", "swap", "new")


def parallel_moves_decode(num_nodes: int, joint: np.ndarray, pair_index: np.ndarray,
                          weight: np.ndarray, order: tuple[int, ...] | None = None,
                          max_rounds: int | None = None, tol: float = 1e-9,
                          reference: bool = False) -> np.ndarray:
    """Cluster label (0..C-1) per candidate from pair weights [M] of pairs [2, M] (each
    unordered pair at most once); ``order`` is the joint types' order for the start
    (default 0..K-1). Compiled (:func:`posegnn.kernels.parallel_moves`) unless
    ``reference``: the numpy form below, which tests compare it with."""
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
    rounds = 10 * num_nodes + 100 if max_rounds is None else int(max_rounds)
    if not reference:
        return kernels.parallel_moves(num_nodes, joint, src, dst, w,
                                      np.asarray(order, dtype=np.int64), rounds, float(tol))
    labels = joint_by_joint(joint, src, dst, w, order, tol)
    dense = np.zeros((num_nodes, num_nodes))
    dense[src, dst] = w
    for _ in range(rounds):
        labels = compact(labels)
        moved = _one_round(labels, joint, src, dst, w, dense, tol)
        if moved is None:
            break
        labels = moved
    return compact(labels)


def compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..C-1 in the order of their values (``np.unique``'s inverse,
    without sorting)."""
    low = int(labels.min())
    used = np.zeros(int(labels.max()) - low + 1, bool)
    used[labels - low] = True
    return (np.cumsum(used) - 1)[labels - low]


def joint_by_joint(joint: np.ndarray, src: np.ndarray, dst: np.ndarray, w: np.ndarray,
                   order, tol: float) -> np.ndarray:
    """The start from the directed weighted edges ``src -> dst`` (both directions of each
    pair): joint types in ``order``, each assigned to the people so far by its summed
    weight to each person's members (added in the order the members joined)."""
    num_nodes = len(joint)
    k = int(joint.max()) + 1
    order = [int(t) for t in order]
    visit = np.full(max(k, max(order) + 1), len(order), np.int64)  # place in ``order``
    visit[order] = np.arange(len(order))  # (a type left out comes after every visit)
    # edges by the place of their source's type, then of their target's (a stable sort)
    places = len(order) + 1
    key = visit[joint[src]] * places + visit[joint[dst]]
    e = np.argsort(key.astype(np.int16 if places * places < 2 ** 15 else np.int64),
                   kind="stable")
    src, dst, w, key = src[e], dst[e], w[e], key[e]
    by_type = np.argsort(joint, kind="stable")
    counts = np.bincount(joint, minlength=k)
    local = np.empty(num_nodes, np.int64)  # place of a candidate among those of its type
    local[by_type] = np.arange(num_nodes) - np.repeat(np.cumsum(counts) - counts, counts)
    labels = np.full(num_nodes, -1, np.int64)
    type_end = np.cumsum(counts).tolist()
    counts = counts.tolist()
    # each place's edges towards the types visited before it: key in [p * places, p * places + p)
    bounds = np.searchsorted(key, [b for p in range(len(order))
                                   for b in (p * places, p * places + p)]).tolist()
    people = 0
    for place, t in enumerate(order):
        if t >= k or counts[t] == 0:
            continue
        idx = by_type[type_end[t] - counts[t]:type_end[t]]
        m = len(idx)
        lo, stop = bounds[2 * place], bounds[2 * place + 1]
        if people and (stop > lo or tol < 0):  # without edges every candidate starts anew
            members = labels[dst[lo:stop]]
            gain = np.bincount(local[src[lo:stop]] * people + members, weights=w[lo:stop],
                               minlength=m * people).reshape(m, people)
            # one extra column per candidate: starting a person gains 0
            cost = np.zeros((m, people + m))
            cost[:, :people] = gain
            rows, cols = linear_sum_assignment(np.negative(cost, out=cost))
            ok = (cols < people) & (gain[rows, np.minimum(cols, people - 1)] > tol)
            who = np.full(m, -1, np.int64)
            who[rows[ok]] = cols[ok]
            fresh = who < 0
            count = int(fresh.sum())
            who[fresh] = np.arange(people, people + count)
        else:
            who, count = np.arange(people, people + m), m
        people += count
        labels[idx] = who
    return labels


def _one_round(labels: np.ndarray, joint: np.ndarray, src: np.ndarray, dst: np.ndarray,
               w: np.ndarray, dense: np.ndarray, tol: float) -> np.ndarray | None:
    """New labels after one round of non-conflicting improving moves; None if none."""
    n = len(labels)
    c_count = int(labels.max()) + 1
    k = int(joint.max()) + 1
    # a[v, c]: weight from candidate v to the members of cluster c
    to = labels[dst]
    a = np.bincount(src * c_count + to, weights=w,
                    minlength=n * c_count).reshape(n, c_count)
    own = a[np.arange(n), labels]
    size = np.bincount(labels, minlength=c_count)
    slot = np.full((c_count, k), -1, np.int64)
    slot[labels, joint] = np.arange(n)
    # merges: weights between clusters, for clusters without a common joint type
    between = np.bincount(labels[src] * c_count + to, weights=w,
                          minlength=c_count * c_count).reshape(c_count, c_count)
    ca, cb = np.nonzero(between > tol)
    upper = ca < cb
    ca, cb = ca[upper], cb[upper]
    has = slot >= 0
    disjoint = ~(has[ca] & has[cb]).any(axis=1)
    merge = np.where(disjoint, between[ca, cb], 0.0)
    # vertex moves towards the clusters a candidate has a scored pair with
    v, c = np.nonzero(a)
    cur = labels[v]
    away = c != cur
    v, c, cur = v[away], c[away], cur[away]
    u = slot[c, joint[v]]
    free = u < 0
    move = np.where(free, a[v, c] - own[v], 0.0)
    taken = ~free
    vt, ct, ut, curt = v[taken], c[taken], u[taken], cur[taken]
    w_vu = dense[vt, ut]
    displace = a[vt, ct] - w_vu - own[vt] - own[ut]
    swap = displace + a[ut, curt] - w_vu
    # leaving: a candidate whose cluster weighs against it starts a new one
    alone = np.flatnonzero((own < -tol) & (size[labels] > 1))
    # every offer in KINDS' order: gain, first and second cluster (-1: a new one), mover
    # and occupant (-1: none); kept where the gain beats tol
    gain = np.concatenate([merge, move, displace, swap, -own[alone]])
    ok = gain > tol
    if not ok.any():
        return None
    counts = [len(ca), len(v), len(vt), len(vt), len(alone)]
    none = np.full(max(counts), -1)
    gain = gain[ok]
    kind = np.repeat(np.arange(len(KINDS)), counts)[ok]
    c1 = np.concatenate([ca, cur, curt, curt, labels[alone]])[ok]
    c2 = np.concatenate([cb, c, ct, ct, none[:len(alone)]])[ok]
    v = np.concatenate([none[:len(ca)], v, vt, vt, alone])[ok]
    u = np.concatenate([none[:len(ca)], u, ut, ut, none[:len(alone)]])[ok]
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
