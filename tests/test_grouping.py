"""Groupings (ae, gnn with both decoders, oracle) on candidates placed at ground-truth joints."""

from __future__ import annotations

import numpy as np
import pytest

from posegnn.choices import SettingError
from posegnn.evaluation import evaluate_keypoints, people_to_coco_results
from posegnn.grouping import AEGrouping, GNNGrouping, OracleGrouping, build_grouping
from posegnn.grouping.ae import AEGroupingConfig
from posegnn.grouping.gnn import (
    GNNGroupingConfig,
    dense_probabilities,
    greedy_decode,
    local_moves_decode,
    logit,
    objective,
    pair_weights,
)
from posegnn.grouping.parallel_moves import parallel_moves_decode
from posegnn.layouts import COCO17, CROWDPOSE14, Layout
from posegnn.types import Candidates, People

LAYOUTS = [CROWDPOSE14, COCO17]


# ----------------------------------------------------------------------------- scenes


def make_people(num_people: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """[P, K, 2] joints of side-by-side people (they may overlap a little)."""
    x = 80 + 90 * np.arange(num_people)
    centers = np.column_stack([x, 240 + 20 * rng.normal(size=num_people)])
    return centers[:, None, :] + rng.uniform([-45, -130], [45, 130], size=(num_people, k, 2))


def gt_dict(layout: Layout, images: list[tuple[int, np.ndarray, float | None]]) -> dict:
    """COCO keypoints ground truth: (image id, joints [P, K, 2], crowd index) per image."""
    imgs, anns = [], []
    for image_id, joints, crowd in images:
        img = {"id": image_id, "file_name": f"{image_id}.jpg", "width": 2000, "height": 600}
        if crowd is not None:
            img["crowd_index"] = crowd
        imgs.append(img)
        for xy in joints:
            x0, y0 = xy.min(axis=0)
            w, h = xy.max(axis=0) - (x0, y0)
            kps = np.column_stack([xy, np.full(len(xy), 2.0)]).reshape(-1).tolist()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "keypoints": kps, "num_keypoints": len(xy), "bbox": [x0, y0, w, h],
                         "area": float(w * h), "iscrowd": 0})
    cat = {"id": 1, "name": "person", "keypoints": list(layout.joints), "skeleton": []}
    return {"images": imgs, "annotations": anns, "categories": [cat]}


def exact_candidates(joints: np.ndarray, rng: np.random.Generator,
                     tag_gap: float = 3.0) -> tuple[Candidates, np.ndarray]:
    """One candidate per ground-truth joint, shuffled; person p's tag is p * tag_gap."""
    p, k = joints.shape[:2]
    person = np.repeat(np.arange(p), k)
    joint = np.tile(np.arange(k), p)
    order = rng.permutation(p * k)
    cands = Candidates(joints.reshape(-1, 2)[order], joint[order],
                       rng.uniform(0.3, 1.0, p * k), (person * tag_gap)[order, None])
    return cands, person[order]


def all_pairs(cands: Candidates) -> np.ndarray:
    """Every unordered pair of candidates of different joint types, [2, M]."""
    i, j = np.triu_indices(len(cands), 1)
    keep = cands.joint[i] != cands.joint[j]
    return np.stack([i[keep], j[keep]])


def perfect_prob(pair_index: np.ndarray, person: np.ndarray) -> np.ndarray:
    i, j = pair_index
    return ((person[i] == person[j]) & (person[i] >= 0)).astype(np.float64)


def groupings(layout: Layout) -> dict[str, object]:
    return {"ae": build_grouping("ae", layout=layout),
            "oracle": build_grouping("oracle", layout=layout),
            "gnn_greedy": build_grouping("gnn", layout=layout, decoder="greedy"),
            "gnn_local_moves": build_grouping("gnn", layout=layout, decoder="local_moves"),
            "gnn_parallel_moves": build_grouping("gnn", layout=layout, decoder="parallel_moves")}


def run(grouping, cands: Candidates, person: np.ndarray, prob: np.ndarray | None = None,
        pair_index: np.ndarray | None = None) -> People:
    pair_index = all_pairs(cands) if pair_index is None else pair_index
    prob = perfect_prob(pair_index, person) if prob is None else prob
    return grouping.group(cands, pair_index=pair_index, prob=prob, person=person)


# ----------------------------------------------------------------------------- perfect inputs


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
@pytest.mark.parametrize("name", ["ae", "oracle", "gnn_greedy", "gnn_local_moves",
                                  "gnn_parallel_moves"])
def test_perfect_inputs_reach_ap_one(layout: Layout, name: str) -> None:
    rng = np.random.default_rng(0)
    scenes = [(i + 1, make_people(n, layout.num_joints, rng), c)
              for i, (n, c) in enumerate([(1, 0.1), (4, 0.5), (7, 0.9)])]
    grouping = groupings(layout)[name]
    results = []
    for image_id, joints, _ in scenes:
        cands, person = exact_candidates(joints, rng)
        people = run(grouping, cands, person)
        assert len(people) == len(joints)
        results += people_to_coco_results(image_id, people)
    metrics = evaluate_keypoints(gt_dict(layout, scenes), results, layout.sigma_array)
    for key in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard"):
        assert metrics[key] == pytest.approx(1.0), key


def test_people_layout_and_assignment() -> None:
    rng = np.random.default_rng(1)
    joints = make_people(3, 14, rng)
    cands, person = exact_candidates(joints, rng)
    for name, grouping in groupings(CROWDPOSE14).items():
        people = run(grouping, cands, person)
        assert people.keypoints.shape == (3, 14, 3), name
        assert np.all(np.diff(people.scores) <= 0), name
        for p in range(3):
            members = np.flatnonzero(people.assignment == p)
            kps = people.keypoints[p]
            np.testing.assert_allclose(kps[cands.joint[members], :2], cands.pos[members])
            np.testing.assert_allclose(kps[cands.joint[members], 2], cands.score[members])
            assert len(set(person[members])) == 1, name
        np.testing.assert_allclose(people.scores, people.keypoints[:, :, 2].mean(1), rtol=1e-6)


# ----------------------------------------------------------------------------- noisy inputs


def noisy_scene(rng: np.random.Generator, num_people: int = 6, k: int = 14):
    """Jittered and missing candidates, false positives, noisy tags and probabilities."""
    joints = make_people(num_people, k, rng)
    cands, person = exact_candidates(joints, rng, tag_gap=1.0)
    keep = rng.random(len(cands)) > 0.15
    extra = 12
    pos = np.vstack([cands.pos[keep] + rng.normal(0, 3, (keep.sum(), 2)),
                     rng.uniform(0, 600, (extra, 2))])
    joint = np.concatenate([cands.joint[keep], rng.integers(0, k, extra)])
    score = np.concatenate([cands.score[keep], rng.uniform(0.05, 0.6, extra)])
    tag = np.vstack([cands.tag[keep] + rng.normal(0, 0.3, (keep.sum(), 1)),
                     rng.uniform(0, num_people, (extra, 1))])
    person = np.concatenate([person[keep], np.full(extra, -1)])
    cands = Candidates(pos, joint, score, tag)
    pair_index = all_pairs(cands)
    prob = np.clip(perfect_prob(pair_index, person) + rng.normal(0, 0.35, pair_index.shape[1]),
                   0, 1)
    return cands, person, pair_index, prob


def same_people(a: People, b: People) -> None:
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("name", ["ae", "oracle", "gnn_greedy", "gnn_local_moves",
                                  "gnn_parallel_moves"])
def test_candidate_order_does_not_matter(name: str) -> None:
    rng = np.random.default_rng(2)
    grouping = groupings(CROWDPOSE14)[name]
    for _ in range(3):
        cands, person, pair_index, prob = noisy_scene(rng)
        people = run(grouping, cands, person, prob, pair_index)
        assert len(people) > 0
        perm = rng.permutation(len(cands))
        inv = np.argsort(perm)
        shuffled = Candidates(cands.pos[perm], cands.joint[perm], cands.score[perm],
                              cands.tag[perm])
        flip = rng.random(pair_index.shape[1]) < 0.5  # pair direction does not matter either
        pairs = np.where(flip, pair_index[::-1], pair_index)
        pair_perm = rng.permutation(pair_index.shape[1])
        people2 = run(grouping, shuffled, person[perm], prob[pair_perm], inv[pairs][:, pair_perm])
        same_people(people, people2)
        np.testing.assert_array_equal(people2.assignment, people.assignment[perm])


def test_at_most_one_candidate_per_joint_type() -> None:
    rng = np.random.default_rng(3)
    for name, grouping in groupings(CROWDPOSE14).items():
        cands, person, pair_index, prob = noisy_scene(rng)
        people = run(grouping, cands, person, prob, pair_index)
        a = people.assignment
        members = a >= 0
        slots = a[members] * 14 + cands.joint[members]
        assert len(np.unique(slots)) == len(slots), name


def test_empty_and_undetected() -> None:
    empty = Candidates(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 1)))
    for name, grouping in groupings(CROWDPOSE14).items():
        people = grouping.group(empty, pair_index=np.zeros((2, 0), np.int64), prob=np.zeros(0),
                                person=np.zeros(0, np.int64))
        assert len(people) == 0 and people.keypoints.shape == (0, 14, 3), name
    rng = np.random.default_rng(4)
    cands, person = exact_candidates(make_people(2, 14, rng), rng)
    ae = build_grouping("ae", layout="crowdpose14", detection_threshold=1.0)
    assert len(ae.group(cands)) == 0
    assert len(build_grouping("oracle", num_joints=14).group(cands, person=np.full(28, -1))) == 0
    gnn = build_grouping("gnn", num_joints=14, min_keypoints=2)
    pair_index = all_pairs(cands)
    assert len(gnn.group(cands, pair_index=pair_index, prob=np.zeros(pair_index.shape[1]))) == 0


def test_min_keypoints_drops_small_people() -> None:
    rng = np.random.default_rng(5)
    cands, person = exact_candidates(make_people(2, 14, rng), rng)
    person = person.copy()
    person[np.flatnonzero(person == 1)[:11]] = -1  # person 1 keeps 3 candidates
    for name in ("oracle", "gnn"):
        people = run(build_grouping(name, num_joints=14, min_keypoints=4), cands, person)
        assert len(people) == 1 and np.count_nonzero(people.assignment >= 0) == 14


def test_unknown_pairs_carry_no_evidence() -> None:
    """A chain of known links groups a person although most of its pairs are unobserved."""
    rng = np.random.default_rng(6)
    cands, person = exact_candidates(make_people(3, 14, rng), rng)
    order = np.lexsort((cands.joint, person))
    chain = np.stack([order[:-1], order[1:]])
    chain = chain[:, person[chain[0]] == person[chain[1]]]
    for decoder in ("greedy", "local_moves", "parallel_moves"):
        g = build_grouping("gnn", num_joints=14, decoder=decoder, linkage="mean")
        people = g.group(cands, pair_index=chain, prob=np.full(chain.shape[1], 0.9))
        assert len(people) == 3, decoder
        if decoder == "parallel_moves":
            continue  # unknown_prob needs the dense matrix
        pessimistic = build_grouping("gnn", num_joints=14, decoder=decoder, unknown_prob=0.1,
                                     threshold=0.5)
        prob = np.full(chain.shape[1], 0.9)
        assert len(pessimistic.group(cands, pair_index=chain, prob=prob)) > 3


# ----------------------------------------------------------------------------- decoders


def random_problem(rng: np.random.Generator, n: int, k: int):
    joint = rng.integers(0, k, n)
    p = rng.random((n, n)) ** rng.uniform(0.3, 3)
    p = np.triu(p, 1) + np.triu(p, 1).T
    known = rng.random((n, n)) < 0.8
    known = np.triu(known, 1) | np.triu(known, 1).T
    return joint, p, known


def valid(labels: np.ndarray, joint: np.ndarray) -> bool:
    return len({(a, b) for a, b in zip(labels, joint, strict=True)}) == len(labels)


@pytest.mark.parametrize("linkage", ["mean", "min", "max"])
def test_local_moves_never_worse_than_greedy(linkage: str) -> None:
    rng = np.random.default_rng(7)
    better = 0
    for _ in range(40):
        joint, p, known = random_problem(rng, int(rng.integers(2, 40)), int(rng.integers(1, 8)))
        threshold = float(rng.uniform(0.2, 0.8))
        w = pair_weights(p, known, joint, threshold)
        greedy = greedy_decode(p, known, joint, threshold, linkage)
        local = local_moves_decode(w, joint, greedy)
        assert valid(greedy, joint) and valid(local, joint)
        assert objective(w, local) >= objective(w, greedy) - 1e-9
        better += objective(w, local) > objective(w, greedy) + 1e-9
    assert better > 0  # local moves do find improvements on random problems


def test_local_moves_fix_a_greedy_mistake() -> None:
    """a(0) links b(1) most strongly, but a, c(1), d(2) form a far better person.

    Greedy merges {a, b}, then {c, d}; joining a to {c, d} is blocked by the taken slot of
    joint type 1. Moving a from {a, b} to {c, d} raises the objective by 1.46.
    """
    joint = np.array([0, 1, 1, 2])
    pairs = np.array([[0, 0, 0, 2, 1, 1], [1, 2, 3, 3, 2, 3]])
    prob = np.array([0.95, 0.9, 0.9, 0.9, 0.0, 0.1])
    p, known = dense_probabilities(4, pairs, prob)
    greedy = greedy_decode(p, known, joint)
    assert greedy[0] == greedy[1] and greedy[2] == greedy[3] and greedy[0] != greedy[2]
    local = local_moves_decode(pair_weights(p, known, joint), joint, greedy)
    assert local[0] == local[2] == local[3] and local[1] != local[0]
    cands = Candidates(np.arange(8).reshape(4, 2), joint, np.ones(4), np.zeros((4, 1)))
    people = build_grouping("gnn", num_joints=3).group(cands, pair_index=pairs, prob=prob)
    np.testing.assert_array_equal(np.sort(np.bincount(people.assignment)), [1, 3])


def test_greedy_linkage_blocks_a_bad_merge() -> None:
    """One strong link between two people does not merge them under mean linkage."""
    joint = np.array([0, 1, 2, 3])
    pairs = np.array([[0, 2, 1, 0, 0, 1], [1, 3, 2, 2, 3, 3]])
    prob = np.array([0.99, 0.99, 0.95, 0.05, 0.05, 0.05])
    p, known = dense_probabilities(4, pairs, prob)
    labels = greedy_decode(p, known, joint, linkage="mean")
    assert labels[0] == labels[1] != labels[2] == labels[3]
    labels = greedy_decode(p, known, joint, linkage="max")
    assert len(set(labels)) == 1


# ----------------------------------------------------------------------------- ae


def test_ae_degrades_when_tags_are_close() -> None:
    """Well separated tags group perfectly; overlapping tags mix people up."""
    rng = np.random.default_rng(8)
    scenes, sep, close = [], [], []
    ae = build_grouping("ae", layout=CROWDPOSE14)
    for image_id in range(1, 6):
        joints = make_people(4, 14, rng)
        scenes.append((image_id, joints, None))
        for gap, out in ((3.0, sep), (0.4, close)):
            cands, person = exact_candidates(joints, rng, tag_gap=gap)
            cands.tag += rng.normal(0, 0.2, cands.tag.shape).astype(np.float32)
            out += people_to_coco_results(image_id, ae.group(cands))
    gt = gt_dict(CROWDPOSE14, scenes)
    ap_sep = evaluate_keypoints(gt, sep, CROWDPOSE14.sigma_array)["AP"]
    ap_close = evaluate_keypoints(gt, close, CROWDPOSE14.sigma_array)["AP"]
    assert ap_sep == pytest.approx(1.0)
    assert ap_close < 0.6


def test_ae_multidimensional_tags_and_threshold() -> None:
    rng = np.random.default_rng(9)
    joints = make_people(3, 14, rng)
    cands, person = exact_candidates(joints, rng)
    angle = person * 2.0
    cands.tag = np.column_stack([np.cos(angle), np.sin(angle)]).astype(np.float32) * 5
    people = build_grouping("ae", layout=CROWDPOSE14).group(cands)
    assert len(people) == 3
    # a tag threshold below every intra-person distance makes one person per candidate
    cands.tag += rng.normal(0, 0.5, cands.tag.shape).astype(np.float32)
    people = build_grouping("ae", layout=CROWDPOSE14, tag_threshold=1e-3).group(cands)
    assert len(people) == len(cands)


def test_ae_max_people() -> None:
    rng = np.random.default_rng(10)
    cands, person = exact_candidates(make_people(5, 14, rng), rng)
    ae = build_grouping("ae", layout=CROWDPOSE14, max_people=3, ignore_too_much=True)
    people = ae.group(cands)
    assert len(people) == 3  # the first joint type gives at most 3, later ones are skipped
    people = build_grouping("ae", layout=CROWDPOSE14, max_people=3).group(cands)
    assert np.count_nonzero(people.assignment >= 0) == 3 * 14


# ----------------------------------------------------------------------------- factory


def test_build_grouping() -> None:
    assert isinstance(build_grouping("gnn", num_joints=14, decoder="greedy"), GNNGrouping)
    assert isinstance(build_grouping("ae", layout="coco17"), AEGrouping)
    assert isinstance(build_grouping("oracle", layout=CROWDPOSE14), OracleGrouping)
    assert build_grouping("ae", layout="crowdpose14").ae_order == CROWDPOSE14.ae_order
    # a grouping holds its settings dataclass; a keyword setting replaces one field of it
    base = GNNGroupingConfig(threshold=0.3)
    built = build_grouping("gnn", base, num_joints=14, decoder="greedy")
    assert built.settings == GNNGroupingConfig(threshold=0.3, decoder="greedy")
    assert GNNGrouping(base, num_joints=14).settings is base
    with pytest.raises(TypeError, match="takes a GNNGroupingConfig, not AEGroupingConfig"):
        GNNGrouping(AEGroupingConfig(), num_joints=14)
    with pytest.raises(ValueError, match="unknown grouping"):
        build_grouping("nope", num_joints=14)
    with pytest.raises(ValueError, match="num_joints"):
        build_grouping("gnn")
    with pytest.raises(ValueError, match="decoder"):
        build_grouping("gnn", num_joints=14, decoder="exact")
    with pytest.raises(ValueError, match="needs `person`"):
        cands = Candidates(np.zeros((1, 2)), [0], [1.0], [[0.0]])
        build_grouping("oracle", num_joints=14).group(cands)


# ----------------------------------------------------------------------------- parallel moves


def sparse_problem(rng: np.random.Generator, n: int, k: int):
    """Random joint types and a random sparse set of scored pairs with probabilities."""
    joint = rng.integers(0, k, n)
    i, j = np.triu_indices(n, 1)
    keep = (joint[i] != joint[j]) & (rng.random(len(i)) < 0.4)
    pairs = np.stack([i[keep], j[keep]])
    return joint, pairs, rng.random(pairs.shape[1]) ** rng.uniform(0.3, 3)


def test_parallel_moves_end_where_no_single_move_helps() -> None:
    """Its result is valid and a local optimum of the local-moves objective: the dense
    local-moves decoder, started from it, finds no improving move."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(2, 45))
        joint, pairs, prob = sparse_problem(rng, n, int(rng.integers(2, 8)))
        threshold = float(rng.uniform(0.2, 0.8))
        w_pairs = logit(prob) - logit(threshold)
        labels = parallel_moves_decode(n, joint, pairs, w_pairs)
        assert valid(labels, joint)
        p, known = dense_probabilities(n, pairs, prob)
        w = pair_weights(p, known, joint, threshold)
        polished = local_moves_decode(w, joint, labels)
        assert objective(w, polished) == pytest.approx(objective(w, labels), abs=1e-9)


def test_parallel_moves_match_local_moves_on_noisy_scenes() -> None:
    """On noisy crowd scenes the two decoders reach objectives within 2% of each other."""
    rng = np.random.default_rng(12)
    ours, dense = 0.0, 0.0
    for _ in range(5):
        cands, person, pair_index, prob = noisy_scene(rng)
        w_pairs = logit(prob) - logit(0.3)
        labels = parallel_moves_decode(len(cands), cands.joint, pair_index, w_pairs)
        p, known = dense_probabilities(len(cands), pair_index, prob)
        w = pair_weights(p, known, cands.joint, 0.3)
        ours += objective(w, labels)
        dense += objective(w, local_moves_decode(w, cands.joint,
                                                 greedy_decode(p, known, cands.joint, 0.3)))
    assert ours == pytest.approx(dense, rel=0.02)


def test_each_round_of_parallel_moves_raises_the_objective() -> None:
    """``max_rounds`` stops the search early: more rounds never lower the objective, and
    the grouping's setting reaches the decoder (a bad value is refused)."""
    rng = np.random.default_rng(14)
    for _ in range(3):
        cands, person, pair_index, prob = noisy_scene(rng)
        p, known = dense_probabilities(len(cands), pair_index, prob)
        w = pair_weights(p, known, cands.joint, 0.1)
        scores = []
        for rounds in (0, 1, 2, None):
            people = build_grouping("gnn", num_joints=14, score="heat", max_rounds=rounds).group(
                cands, pair_index=pair_index, prob=prob)
            scores.append(objective(w, people.assignment))
        assert scores == sorted(scores)
        assert scores[0] < scores[-1]
    with pytest.raises(SettingError, match="max_rounds"):
        build_grouping("gnn", num_joints=14, max_rounds=-1)


def test_person_score_is_heat_times_mean_internal_pair_probability() -> None:
    rng = np.random.default_rng(13)
    cands, person, pair_index, prob = noisy_scene(rng)
    for decoder in ("parallel_moves", "local_moves"):
        people = build_grouping("gnn", num_joints=14, decoder=decoder).group(
            cands, pair_index=pair_index, prob=prob)
        a = people.assignment
        for k in range(len(people)):
            inside = [p for (i, j), p in zip(pair_index.T, prob, strict=True)
                      if a[i] == a[j] == k]
            expected = people.keypoints[k, :, 2].mean() * (np.mean(inside) if inside else 1.0)
            assert people.scores[k] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="dense decoder"):
        build_grouping("gnn", num_joints=14, decoder="parallel_moves", unknown_prob=0.1)


def test_candidates_unlikely_to_belong_join_nobody() -> None:
    rng = np.random.default_rng(21)
    cands, person, pair_index, prob = noisy_scene(rng)
    vertex_prob = np.where(person >= 0, 0.9, 0.05)
    vertex_prob[0] = 0.01  # a true keypoint the model doubts
    kept = build_grouping("gnn", num_joints=14).group(cands, pair_index=pair_index, prob=prob)
    dropped = build_grouping("gnn", num_joints=14, drop_below=0.1).group(
        cands, pair_index=pair_index, prob=prob, vertex_prob=vertex_prob)
    assert (dropped.assignment[vertex_prob < 0.1] == -1).all()
    assert (kept.assignment[vertex_prob < 0.1] >= 0).any()
    with pytest.raises(ValueError, match="drop_below"):
        build_grouping("gnn", num_joints=14, drop_below=1.0)
    with pytest.raises(ValueError, match="vertex_prob"):
        build_grouping("gnn", num_joints=14).group(cands, pair_index=pair_index, prob=prob,
                                         vertex_prob=vertex_prob[:-1])


def test_learned_scores_come_from_the_scorer_on_each_persons_own_features() -> None:
    rng = np.random.default_rng(22)
    cands, person, pair_index, prob = noisy_scene(rng)
    count_joints = lambda features: features[:, :14].sum(1)  # noqa: E731 (present flags)
    learned = build_grouping("gnn", num_joints=14, scorer=count_joints).group(
        cands, pair_index=pair_index, prob=prob)
    np.testing.assert_array_equal(learned.scores, (learned.keypoints[:, :, 2] > 0).sum(1))
    unfitted = build_grouping("gnn", num_joints=14, scorer=lambda features: None).group(
        cands, pair_index=pair_index, prob=prob)
    heat_x_prob = build_grouping("gnn", num_joints=14, score="heat_x_prob").group(
        cands, pair_index=pair_index, prob=prob)
    np.testing.assert_array_equal(unfitted.scores, heat_x_prob.scores)
