"""Statistics of built graphs: how many candidates and pairs, and how good the labels are."""

from __future__ import annotations

from collections.abc import Sequence

from torch_geometric.data import Data

from posegnn.data.maps import PoseMapsDataset


def graph_statistics(graphs: Sequence[Data], dataset: PoseMapsDataset) -> dict[str, float]:
    """Per-image means of candidates and scored pairs, the positive share of pairs, the
    share of candidates matched to a person, and the share of labeled ground-truth joints
    covered by at least one matched candidate. ``graphs`` carry edges (``AddEdges``)."""
    pairs = positives = candidates = matched = covered = labeled = 0
    for g in graphs:
        pairs += g.pair_index.shape[1]
        positives += float(g.y.sum())
        candidates += g.num_nodes
        person = g.person.numpy()
        matched += int((person >= 0).sum())
        kps, _ = dataset.gt_keypoints(int(g.image_id))
        labeled += int((kps[..., 2] > 0).sum())
        hit = person >= 0
        covered += len(set(zip(person[hit].tolist(), g.joint.numpy()[hit].tolist(),
                               strict=True)))
    n = max(len(graphs), 1)
    return {"images": len(graphs), "candidates_per_image": candidates / n,
            "pairs_per_image": pairs / n, "positive_pairs": positives / max(pairs, 1),
            "matched_candidates": matched / max(candidates, 1),
            "gt_joints_covered": covered / max(labeled, 1) if labeled else float("nan")}
