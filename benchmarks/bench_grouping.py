"""Time per-image grouping (ae, gnn greedy, local_moves, parallel_moves) as people grow.

Scenes are synthetic: P people of 14 joints side by side, one jittered candidate per
joint, tags ``person * tag_gap + noise``, and same-person probabilities
``sigmoid(+-margin + noise)`` over all pairs of candidates of different joint types.
Besides the time, the pairwise F1 of "same person" against the ground truth is printed.

    python benchmarks/bench_grouping.py --people 1 5 10 20 40 --images 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from posegnn.grouping import build_grouping
from posegnn.types import Candidates

NUM_JOINTS = 14


def make_scene(num_people: int, rng: np.random.Generator, args: argparse.Namespace):
    """Candidates, ground-truth person per candidate, pair index and probabilities."""
    centers = np.column_stack([60 + 70 * np.arange(num_people), rng.normal(240, 20, num_people)])
    joints = centers[:, None] + rng.uniform([-45, -130], [45, 130], (num_people, NUM_JOINTS, 2))
    person = np.repeat(np.arange(num_people), NUM_JOINTS)
    joint = np.tile(np.arange(NUM_JOINTS), num_people)
    tag = person * args.tag_gap + rng.normal(0, args.tag_noise, person.shape)
    cands = Candidates(joints.reshape(-1, 2) + rng.normal(0, 2, (len(person), 2)), joint,
                       rng.uniform(0.2, 1.0, len(person)), tag[:, None])
    i, j = np.triu_indices(len(person), 1)
    keep = joint[i] != joint[j]
    pair_index = np.stack([i[keep], j[keep]])
    same = person[pair_index[0]] == person[pair_index[1]]
    logit = np.where(same, args.margin, -args.margin) + rng.normal(0, args.noise, same.shape)
    return cands, person, pair_index, 1.0 / (1.0 + np.exp(-logit))


def pairwise_f1(assignment: np.ndarray, person: np.ndarray) -> float:
    """F1 of the predicted same-person relation over all candidate pairs."""
    iu = np.triu_indices(len(person), 1)
    pred = (assignment[:, None] == assignment[None, :]) & (assignment[:, None] >= 0)
    true = person[:, None] == person[None, :]
    pred, true = pred[iu], true[iu]
    tp = np.count_nonzero(pred & true)
    return 2 * tp / max(np.count_nonzero(pred) + np.count_nonzero(true), 1)


def time_one(grouping, scene, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds for one image, and the pairwise F1 of the result."""
    cands, person, pair_index, prob = scene
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        people = grouping.group(cands, pair_index=pair_index, prob=prob)
        best = min(best, time.perf_counter() - start)
    return best, pairwise_f1(people.assignment, person)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    parser.add_argument("--images", type=int, default=5, help="scenes per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scene (best)")
    parser.add_argument("--margin", type=float, default=2.0, help="|logit| of a clean pair")
    parser.add_argument("--noise", type=float, default=1.5, help="std of the logit noise")
    parser.add_argument("--tag-gap", type=float, default=1.5)
    parser.add_argument("--tag-noise", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cp = "crowdpose14"
    methods = {"ae": build_grouping("ae", layout=cp, max_people=max(args.people)),
               "gnn_greedy": build_grouping("gnn", layout=cp, decoder="greedy"),
               "gnn_local_moves": build_grouping("gnn", layout=cp, decoder="local_moves"),
               "gnn_parallel": build_grouping("gnn", layout=cp, decoder="parallel_moves")}
    rng = np.random.default_rng(args.seed)
    print(f"{'people':>6} {'cands':>6} {'pairs':>7} | "
          + " | ".join(f"{name:>15} ms  F1 " for name in methods))
    for num_people in args.people:
        scenes = [make_scene(num_people, rng, args) for _ in range(args.images)]
        row = [f"{num_people:>6} {len(scenes[0][1]):>6} {scenes[0][2].shape[1]:>7}"]
        for grouping in methods.values():
            runs = np.array([time_one(grouping, s, args.repeats) for s in scenes])
            row.append(f"{1e3 * runs[:, 0].mean():>18.2f} {runs[:, 1].mean():.3f}")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
