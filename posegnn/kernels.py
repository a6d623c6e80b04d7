"""Compiled (numba) forms of the grouping's hot loops.

Each kernel returns what its plain numpy reference returns, bit for bit on the benchmark
images (tests/test_kernels.py checks it): the references stay beside their callers
(:mod:`posegnn.grouping.refine`, :mod:`posegnn.grouping.parallel_moves`,
:mod:`posegnn.grouping.person_features`, :mod:`posegnn.data.graph`).

Every kernel is compiled with ``cache=True`` on its first call: a few seconds once, then
loaded from the cache by every later process. The cache lies beside this file, or under
``NUMBA_CACHE_DIR`` when that is set or this folder is read-only (an installed,
read-only site-packages).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as err:  # a hard dependency: say so in one line, not deep in a call
    raise ImportError(f"posegnn needs numba (pip install 'numba>=0.60'), which failed to "
                      f"load: {err}") from None

INF = np.inf


# --- refine: the best pixel of each person's missing joints -----------------------------

@njit(cache=True, fastmath=True)  # only maxima and minima: exact on finite maps
def block_bounds(hj, tj, rlo, rhi, clo, chi, block, bmax, tmin, tmax):
    """Into ``bmax`` [B], ``tmin`` and ``tmax`` [B, D]: per block of ``block`` x ``block``
    heatmap pixels, its hottest pixel and the least and largest value, per dimension, of
    the tag cells its pixels are sampled from (bilinear values lie between them)."""
    h, w = hj.shape
    d = tj.shape[2]
    nbc = (w + block - 1) // block
    for br in range((h + block - 1) // block):
        r0, r1 = br * block, min(br * block + block, h)
        for bc in range(nbc):
            c0, c1 = bc * block, min(bc * block + block, w)
            m = np.float32(-INF)
            for r in range(r0, r1):
                for c in range(c0, c1):
                    m = max(m, hj[r, c])
            b = br * nbc + bc
            bmax[b] = m
            for dd in range(d):
                lo, hi = np.float32(INF), np.float32(-INF)
                for tr in range(rlo[r0], rhi[r1 - 1] + 1):
                    for tc in range(clo[c0], chi[c1 - 1] + 1):
                        lo = min(lo, tj[tr, tc, dd])
                        hi = max(hi, tj[tr, tc, dd])
                tmin[b, dd] = lo
                tmax[b, dd] = hi


@njit(cache=True)
def refine_argmax(heat, tags, rlo, rhi, rfrac, clo, chi, cfrac, means, need, block):
    """Flat index [P, K] of the first pixel maximizing ``heat - rint(|tag - mean|)`` over
    joint ``j``'s heatmap for every person ``p`` with ``need[p, j]`` (-1 elsewhere).

    ``heat`` [K, H, W] and ``tags`` [K, Th, Tw, D] float32; tags are sampled at each
    heatmap pixel bilinearly from the axis weights (lower/upper index and the upper's
    weight per row and per column); ``means`` [P, D] float32. The search visits blocks
    of ``block`` x ``block`` pixels by an upper bound of their best value (their hottest
    pixel minus the rounded least tag distance any of their pixels can have) and stops
    when no block left can beat the best pixel found: the result is the exhaustive
    search's."""
    k, h, w = heat.shape
    d = tags.shape[3]
    p_count = means.shape[0]
    out = np.full((p_count, k), -1, np.int64)
    nbr = (h + block - 1) // block
    nbc = (w + block - 1) // block
    nb = nbr * nbc
    bmax = np.empty(nb, np.float32)
    tmin = np.empty((nb, d), np.float32)
    tmax = np.empty((nb, d), np.float32)
    ub = np.empty(nb, np.float64)
    one = np.float32(1.0)
    for j in range(k):
        wanted = False
        for q in range(p_count):
            wanted = wanted or need[q, j]
        if not wanted:
            continue
        hj = heat[j]
        tj = tags[j]
        block_bounds(hj, tj, rlo, rhi, clo, chi, block, bmax, tmin, tmax)
        for q in range(p_count):
            if not need[q, j]:
                continue
            mean = means[q]
            for b in range(nb):
                s = 0.0
                for dd in range(d):
                    gap = max(tmin[b, dd] - mean[dd], mean[dd] - tmax[b, dd], 0.0)
                    s += gap * gap
                # a margin for the float32 rounding of the sampled tags and distances
                least = np.float32(np.rint(max(np.sqrt(s) - 1e-3, 0.0)))
                ub[b] = bmax[b] - least
            order = np.argsort(-ub, kind="mergesort")
            best = np.float32(-INF)
            best_idx = -1
            for t in range(nb):
                b = order[t]
                if ub[b] < best:
                    break
                br, bc = b // nbc, b % nbc
                if ub[b] == best and br * block * w + bc * block > best_idx:
                    continue  # at most a tie, and later than the best pixel
                for r in range(br * block, min(br * block + block, h)):
                    ra, rb, fr = rlo[r], rhi[r], rfrac[r]
                    for c in range(bc * block, min(bc * block + block, w)):
                        v = hj[r, c]
                        # the rounded distance is never negative: the gain is at most v
                        if v < best or (v == best and r * w + c > best_idx):
                            continue
                        ca, cb, fc = clo[c], chi[c], cfrac[c]
                        s32 = np.float32(0.0)
                        for dd in range(d):
                            top = tj[ra, ca, dd] * (one - fc) + tj[ra, cb, dd] * fc
                            bottom = tj[rb, ca, dd] * (one - fc) + tj[rb, cb, dd] * fc
                            diff = top * (one - fr) + bottom * fr - mean[dd]
                            if d == 1:
                                s32 = abs(diff)
                            else:
                                s32 += diff * diff
                        dist = s32 if d == 1 else np.sqrt(s32)
                        g = v - np.float32(np.rint(dist))
                        idx = r * w + c
                        if g > best or (g == best and idx < best_idx):
                            best, best_idx = g, idx
            out[q, j] = best_idx
    return out


# --- the parallel-moves decoder ----------------------------------------------------------

@njit(cache=True)
def assign(cost):
    """Column of each row [R] of a least-cost assignment of a finite cost [R, C] with
    R <= C: the shortest-augmenting-path method (Crouse 2016), row by row, ties broken as
    ``scipy.optimize.linear_sum_assignment`` breaks them (tests check it)."""
    nr, nc = cost.shape
    u = np.zeros(nr)
    v = np.zeros(nc)
    spc = np.empty(nc)
    path = np.full(nc, -1, np.int64)
    col4row = np.full(nr, -1, np.int64)
    row4col = np.full(nc, -1, np.int64)
    seen_row = np.zeros(nr, np.bool_)
    seen_col = np.zeros(nc, np.bool_)
    remaining = np.empty(nc, np.int64)
    for cur in range(nr):
        min_val = 0.0
        left = nc
        for it in range(nc):
            remaining[it] = nc - it - 1
        seen_row[:] = False
        seen_col[:] = False
        spc[:] = INF
        sink = -1
        i = cur
        while sink == -1:
            index = -1
            lowest = INF
            seen_row[i] = True
            for it in range(left):
                j = remaining[it]
                r = min_val + cost[i, j] - u[i] - v[j]
                if r < spc[j]:
                    path[j] = i
                    spc[j] = r
                if spc[j] < lowest or (spc[j] == lowest and row4col[j] == -1):
                    lowest = spc[j]
                    index = it
            min_val = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            seen_col[j] = True
            left -= 1
            remaining[index] = remaining[left]
        u[cur] += min_val
        for i in range(nr):
            if seen_row[i] and i != cur:
                u[i] += min_val - spc[col4row[i]]
        for j in range(nc):
            if seen_col[j]:
                v[j] -= min_val - spc[j]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == cur:
                break
    return col4row


@njit(cache=True)
def compact(labels):
    """Labels renumbered 0..C-1 in the order of their values."""
    low, high = labels.min(), labels.max()
    new = np.zeros(high - low + 1, np.int64)
    for x in labels:
        new[x - low] = 1
    count = -1
    for x in range(len(new)):
        if new[x]:
            count += 1
            new[x] = count
    out = np.empty_like(labels)
    for v in range(len(labels)):
        out[v] = new[labels[v] - low]
    return out


@njit(cache=True)
def joint_by_joint(joint, src, dst, w, order, tol):
    """The decoder's start (see :func:`posegnn.grouping.parallel_moves.joint_by_joint`)."""
    n = len(joint)
    k = joint.max() + 1
    places = len(order) + 1
    visit = np.full(max(k, order.max() + 1), len(order), np.int64)
    for p in range(len(order)):
        visit[order[p]] = p
    key = visit[joint[src]] * places + visit[joint[dst]]
    start = np.zeros(places * places + 1, np.int64)  # a stable counting sort by key
    for x in key:
        start[x + 1] += 1
    start = np.cumsum(start)
    at = start.copy()
    e = np.empty(len(key), np.int64)
    for x in range(len(key)):
        e[at[key[x]]] = x
        at[key[x]] += 1
    src, dst, w = src[e], dst[e], w[e]
    counts = np.zeros(k, np.int64)
    local = np.empty(n, np.int64)
    for v in range(n):
        local[v] = counts[joint[v]]
        counts[joint[v]] += 1
    labels = np.full(n, -1, np.int64)
    people = 0
    for place in range(len(order)):
        t = order[place]
        if t >= k or counts[t] == 0:
            continue
        idx = np.flatnonzero(joint == t)
        m = len(idx)
        lo, stop = start[place * places], start[place * places + place]
        who = np.arange(people, people + m)
        count = m
        if people and (stop > lo or tol < 0):
            gain = np.zeros((m, people))
            for x in range(lo, stop):
                gain[local[src[x]], labels[dst[x]]] += w[x]
            cost = np.zeros((m, people + m))
            cost[:, :people] = -gain
            cols = assign(cost)
            count = 0
            for r in range(m):
                if cols[r] < people and gain[r, cols[r]] > tol:
                    who[r] = cols[r]
                else:
                    who[r] = people + count
                    count += 1
        people += count
        labels[idx] = who
    return labels


@njit(cache=True)
def one_round(labels, joint, src, dst, w, dense, tol):
    """New labels after one round of non-conflicting improving moves, and whether any
    move was made (see :func:`posegnn.grouping.parallel_moves._one_round`)."""
    n = len(labels)
    cc = labels.max() + 1
    k = joint.max() + 1
    a = np.zeros((n, cc))
    between = np.zeros((cc, cc))
    for e in range(len(src)):
        to = labels[dst[e]]
        a[src[e], to] += w[e]
        between[labels[src[e]], to] += w[e]
    own = np.empty(n)
    size = np.zeros(cc, np.int64)
    slot = np.full((cc, k), -1, np.int64)
    for v in range(n):
        own[v] = a[v, labels[v]]
        size[labels[v]] += 1
        slot[labels[v], joint[v]] = v
    # offers in the reference's order: merges, moves, displaces, swaps, leaves
    cap = cc * cc + 3 * n * cc + n
    gain = np.empty(cap)
    kind = np.empty(cap, np.int64)
    c1 = np.empty(cap, np.int64)
    c2 = np.empty(cap, np.int64)
    mover = np.empty(cap, np.int64)
    occupant = np.empty(cap, np.int64)
    count = 0
    for ca in range(cc):
        for cb in range(ca + 1, cc):
            if between[ca, cb] > tol:
                disjoint = True
                for t in range(k):
                    if slot[ca, t] >= 0 and slot[cb, t] >= 0:
                        disjoint = False
                        break
                g = between[ca, cb] if disjoint else 0.0
                if g > tol:
                    gain[count], kind[count], c1[count], c2[count] = g, 0, ca, cb
                    mover[count], occupant[count] = -1, -1
                    count += 1
    for v in range(n):  # moves; displaces and swaps are gathered apart, then appended
        cur = labels[v]
        for c in range(cc):
            if a[v, c] != 0 and c != cur and slot[c, joint[v]] < 0:
                g = a[v, c] - own[v]
                if g > tol:
                    gain[count], kind[count], c1[count], c2[count] = g, 1, cur, c
                    mover[count], occupant[count] = v, -1
                    count += 1
    for pass_kind in (2, 3):
        for v in range(n):
            cur = labels[v]
            for c in range(cc):
                u = slot[c, joint[v]]
                if a[v, c] != 0 and c != cur and u >= 0:
                    g = a[v, c] - dense[v, u] - own[v] - own[u]
                    if pass_kind == 3:
                        g = g + a[u, cur] - dense[v, u]
                    if g > tol:
                        gain[count], kind[count], c1[count], c2[count] = g, pass_kind, cur, c
                        mover[count], occupant[count] = v, u
                        count += 1
    for v in range(n):
        if own[v] < -tol and size[labels[v]] > 1:
            g = -own[v]
            if g > tol:
                gain[count], kind[count], c1[count], c2[count] = g, 4, labels[v], -1
                mover[count], occupant[count] = v, -1
                count += 1
    if count == 0:
        return labels, False
    rank = np.argsort(-gain[:count], kind="mergesort")  # kinds already come in order
    busy = np.zeros(cc, np.bool_)
    chosen = np.zeros(count, np.bool_)
    for x in rank:  # the highest gains first, each touching clusters still free
        if busy[c1[x]] or (c2[x] >= 0 and busy[c2[x]]):
            continue
        chosen[x] = True
        busy[c1[x]] = True
        if c2[x] >= 0:
            busy[c2[x]] = True
    out = labels.copy()
    remap = np.arange(cc + count)
    fresh = cc
    for name in range(5):
        for x in range(count):
            if not chosen[x] or kind[x] != name:
                continue
            if name == 0:
                remap[c2[x]] = c1[x]
            elif name == 1:
                out[mover[x]] = c2[x]
            elif name == 2:
                out[occupant[x]] = fresh
                fresh += 1
                out[mover[x]] = c2[x]
            elif name == 3:
                out[occupant[x]] = c1[x]
                out[mover[x]] = c2[x]
            else:
                out[mover[x]] = fresh
                fresh += 1
    return remap[out], True


@njit(cache=True)
def parallel_moves(num_nodes, joint, src, dst, w, order, rounds, tol):
    """Labels of the parallel-moves decoder from directed edges (both directions of each
    scored pair) with nonzero weights; the loop of
    :func:`posegnn.grouping.parallel_moves.parallel_moves_decode`."""
    labels = joint_by_joint(joint, src, dst, w, order, tol)
    dense = np.zeros((num_nodes, num_nodes))
    for e in range(len(src)):
        dense[src[e], dst[e]] = w[e]
    for _ in range(rounds):
        labels = compact(labels)
        labels, moved = one_round(labels, joint, src, dst, w, dense, tol)
        if not moved:
            break
    return compact(labels)


# --- candidate pairs and the person scorer's pair statistics -----------------------------

@njit(cache=True)
def partner_pairs(cost, joint, num_joints, partners):
    """Unordered pairs [2, M] (i < j, sorted) joining each candidate to its ``partners``
    cheapest candidates of every other joint type by ``cost`` [N, N] (of equal costs the
    first; infinite costs never), as :func:`posegnn.data.graph.partner_pairs` picks them."""
    n = len(joint)
    counts = np.zeros(num_joints + 1, np.int64)
    for v in range(n):
        counts[joint[v] + 1] += 1
    start = np.cumsum(counts)
    by_type = np.empty(n, np.int64)
    at = start.copy()
    for v in range(n):
        by_type[at[joint[v]]] = v
        at[joint[v]] += 1
    chosen = np.zeros((n, n), np.bool_)
    taken = np.zeros(n, np.bool_)
    for v in range(n):
        for t in range(num_joints):
            if t == joint[v]:
                continue
            for _ in range(partners):
                best, pick = np.inf, -1
                for x in range(start[t], start[t + 1]):
                    u = by_type[x]
                    if not taken[u] and cost[v, u] < best:
                        best, pick = cost[v, u], u
                if pick < 0:
                    break
                taken[pick] = True
                chosen[v, pick] = True
                chosen[pick, v] = True
            for x in range(start[t], start[t + 1]):
                taken[by_type[x]] = False
    m = 0
    for i in range(n):
        for j in range(i + 1, n):
            m += chosen[i, j]
    out = np.empty((2, m), np.int64)
    m = 0
    for i in range(n):
        for j in range(i + 1, n):
            if chosen[i, j]:
                out[0, m], out[1, m] = i, j
                m += 1
    return out


@njit(cache=True)
def pair_statistics(assignment, i, j, prob, num_people):
    """Per person [P]: mean and least probability of its internal pairs (1 and 1 without
    any), largest and mean probability of its pairs to candidates outside it (0 without
    any), summed in the order of :func:`posegnn.grouping.person_features.person_features`."""
    n_in = np.zeros(num_people, np.int64)
    sum_in = np.zeros(num_people)
    min_in = np.ones(num_people)
    n_out = np.zeros(num_people, np.int64)
    sum_out = np.zeros(num_people)
    max_out = np.zeros(num_people)
    for e in range(len(i)):
        a, b = assignment[i[e]], assignment[j[e]]
        if a == b and a >= 0:
            n_in[a] += 1
            sum_in[a] += prob[e]
            min_in[a] = min(min_in[a], prob[e])
        elif a != b and a >= 0:
            n_out[a] += 1
            sum_out[a] += prob[e]
            max_out[a] = max(max_out[a], prob[e])
    for e in range(len(i)):  # the other side of each pair across, after every first side
        a, b = assignment[i[e]], assignment[j[e]]
        if a != b and b >= 0:
            n_out[b] += 1
            sum_out[b] += prob[e]
            max_out[b] = max(max_out[b], prob[e])
    mean_in = np.ones(num_people)
    mean_out = np.zeros(num_people)
    for q in range(num_people):
        if n_in[q] > 0:
            mean_in[q] = sum_in[q] / n_in[q]
        mean_out[q] = sum_out[q] / max(n_out[q], 1)
    return mean_in, min_in, max_out, mean_out
