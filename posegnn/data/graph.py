"""Build one ``torch_geometric.data.Data`` graph per image from its maps.

Vertices are keypoint candidates; ``pair_index`` lists each scored unordered pair once,
``edge_index`` holds both directions for message passing, ``y`` says whether a pair's
candidates match the same ground-truth person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from posegnn import kernels
from posegnn.choices import one_of
from posegnn.contract import keypoint_similarity
from posegnn.data.candidates import CandidateConfig, bilinear, find_peaks
from posegnn.data.maps import ImageMaps
from posegnn.layouts import Layout

NORMALIZATIONS = ("none", "per_map", "dataset")
EDGE_STRATEGIES = ("partners", "radius", "knn", "skeleton")


@dataclass
class FeatureConfig:
    """Which vertex features to compute (each switchable). By default none carries a raw
    tag, so their width does not depend on the tag dimension D."""

    tag: bool = False  # the candidate's own joint's tag (D numbers for D-dimensional tags)
    all_tags: bool = False  # tags of all K channels at the candidate (K * D numbers)
    score: bool = True  # heat value at the peak
    position: bool = True  # position normalized by the image size
    joint_onehot: bool = True
    all_heats: bool = False  # values of all K heatmaps at the candidate


@dataclass
class EdgeConfig:
    """Which candidate pairs become edges, and their attributes."""

    strategy: str = "partners"  # partners | radius | knn | skeleton
    # partners: each candidate's `partners` most plausible candidates of every other joint
    # type, by distance / (partner_scale * long side) + tag distance (pairs grow linearly)
    partners: int = 2
    partner_scale: float = 0.1
    radius: float = 0.6  # max pair distance as a fraction of the image's long side
    k: int = 16  # neighbours per candidate for the knn strategy
    offset: bool = True
    distance: bool = True
    tag_diff: bool = False  # |t_j - t_i| per tag dimension (D numbers)
    tag_distance: bool = True  # ||t_j - t_i||: one number whatever the tag dimension
    scores: bool = True
    limb: bool = True
    # how the pair compares with the source's other candidates of the target's joint type:
    # tag distance above the best one, and distance relative to the nearest one
    competition: bool = True


@dataclass
class ImageUnitsConfig:
    """Units read per image from its own candidates (no labels), so that features mean
    the same whatever the detector's tag spread, heat level or map resolution. Each unit
    is scaled so that the default synthetic detector's images keep about their scale
    (RESULTS.md: each one ablated on worlds the model was not trained on)."""

    tags: bool = True  # tags in units of the image's within-person tag spread
    heat: bool = True  # heat in units of the image's typical strongest peak
    lengths: bool = True  # lengths in units of the image's typical limb, not its long side


@dataclass
class GraphConfig:
    """Every setting that changes a built graph (all of it keys the cache)."""

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    edges: EdgeConfig = field(default_factory=EdgeConfig)
    units: ImageUnitsConfig = field(default_factory=ImageUnitsConfig)
    normalization: str = "none"  # none | per_map | dataset
    match_threshold: float = 0.5  # keypoint similarity for a candidate to match a person

    def __post_init__(self) -> None:
        one_of("graph.normalization", self.normalization, NORMALIZATIONS)
        one_of("graph.edges.strategy", self.edges.strategy, EDGE_STRATEGIES)
        if self.edges.partners < 1 or self.edges.partner_scale <= 0:
            raise ValueError("graph.edges.partners must be >= 1 and graph.edges.partner_scale "
                             f"> 0, got {self.edges.partners} and {self.edges.partner_scale}")

    @property
    def dimension_free(self) -> bool:
        """Whether feature and attribute widths are the same for every tag dimension D
        (no raw tags, the default; not ``graph=raw_tags``), so one model reads maps of any
        D."""
        return not (self.features.tag or self.features.all_tags or self.edges.tag_diff)


def stored_graph(values: GraphConfig | Mapping | None) -> GraphConfig | Mapping | None:
    """Graph settings stored in a checkpoint, in today's names (``candidates.refine`` is
    ``candidates.subpixel``), with the settings added since filled in as they were
    before: one without ``edges.tag_distance`` predates it and had none, one without
    ``units`` measured everything in raw map units."""
    if not isinstance(values, Mapping) or not values:
        return values
    values = dict(values)
    cands = dict(values.get("candidates", {}))
    if "refine" in cands:
        cands["subpixel"] = cands.pop("refine")
        values["candidates"] = cands
    if "tag_distance" not in values.get("edges", {}):
        values["edges"] = {**values.get("edges", {}), "tag_distance": False}
    values.setdefault("units", {"tags": False, "heat": False, "lengths": False})
    return values


def sample_maps(maps: ImageMaps, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw tags [N, K, D] and heat values [N, K] of all channels at heatmap points uv."""
    k, ht, wt, d = maps.tags.shape
    tags = torch.from_numpy(maps.tags).permute(0, 3, 1, 2).reshape(k * d, ht, wt)
    sx, sy = maps.tag_stride
    all_tags = bilinear(tags, uv / torch.tensor([sx, sy], dtype=uv.dtype)).reshape(-1, k, d)
    return all_tags, bilinear(torch.from_numpy(maps.heatmaps), uv)


def _per_map_stats(maps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each map of one image, over its first axis: ([C...], [C...])."""
    flat = torch.from_numpy(maps).reshape(maps.shape[0], -1, *maps.shape[3:])
    return flat.mean(dim=1), flat.std(dim=1).clamp(min=1e-6)


def vertex_features(maps: ImageMaps, all_tags: torch.Tensor, all_heats: torch.Tensor,
                    uv: torch.Tensor, joint: torch.Tensor, score: torch.Tensor,
                    cfg: GraphConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex features [N, F] and each candidate's own tag [N, D], normalized per ``cfg``,
    from the raw samples of :func:`sample_maps`."""
    if cfg.normalization == "per_map":
        t_mean, t_std = _per_map_stats(maps.tags)  # [K, D]
        h_mean, h_std = _per_map_stats(maps.heatmaps)  # [K]
        all_tags = (all_tags - t_mean) / t_std
        all_heats = (all_heats - h_mean) / h_std
        score = (score - h_mean[joint]) / h_std[joint]
    n, k = all_heats.shape
    own_tag = all_tags[torch.arange(n), joint]
    size = torch.tensor(maps.heatmaps.shape[1:][::-1], dtype=uv.dtype)
    f = cfg.features
    parts = [own_tag if f.tag else None,
             all_tags.reshape(n, -1) if f.all_tags else None,
             score.unsqueeze(1) if f.score else None,
             uv / size if f.position else None,
             torch.nn.functional.one_hot(joint, k).float() if f.joint_onehot else None,
             all_heats if f.all_heats else None]
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("graph.features: every vertex feature is switched off")
    return torch.cat(parts, dim=1).float(), own_tag


def candidate_pairs(pos: torch.Tensor, joint: torch.Tensor, long_side: float,
                    limbs: torch.Tensor, cfg: EdgeConfig,
                    tag: torch.Tensor | None = None) -> torch.Tensor:
    """Unordered pairs [2, M] (i < j, sorted) of candidates of different joint types;
    ``limbs`` is the layout's [K, K] limb matrix (:meth:`Layout.limb_matrix`), ``tag``
    the candidates' tags [N, D] (needed by the ``partners`` strategy)."""
    n = len(joint)
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long)
    if cfg.strategy == "partners":
        if tag is None:
            raise ValueError("the partners edge strategy needs the candidates' tags")
        return partner_pairs(pos, tag, joint, long_side, len(limbs), cfg)
    dist = torch.cdist(pos, pos)
    allowed = joint.unsqueeze(0) != joint.unsqueeze(1)
    if cfg.strategy == "skeleton":
        allowed &= limbs[joint][:, joint] > 0
    if cfg.strategy == "knn":
        masked = dist.masked_fill(~allowed, float("inf"))
        k = min(cfg.k, n - 1)
        near_val, near_idx = masked.topk(k, dim=1, largest=False)
        chosen = torch.zeros_like(allowed)
        chosen.scatter_(1, near_idx, torch.isfinite(near_val))
        allowed = chosen | chosen.T
    elif cfg.radius > 0:
        allowed &= dist <= cfg.radius * long_side
    return torch.triu(allowed, diagonal=1).nonzero().T.contiguous()


def partner_pairs(pos: torch.Tensor, tag: torch.Tensor, joint: torch.Tensor,
                  long_side: float, num_joints: int, cfg: EdgeConfig,
                  reference: bool = False) -> torch.Tensor:
    """Each candidate's ``cfg.partners`` cheapest candidates of every other joint type,
    cost = distance / (partner_scale * long_side) + tag distance, as unordered pairs
    [2, M] (i < j, sorted). At most ``partners * (K - 1)`` per candidate: pairs grow
    linearly with the candidates, not with their square. Of equal costs the first
    candidate wins. The selection is compiled (:func:`posegnn.kernels.partner_pairs`);
    ``reference``: the numpy selection below, which tests compare it with."""
    n = len(joint)
    cost = (torch.cdist(pos, pos) / (cfg.partner_scale * long_side)
            + torch.cdist(tag, tag)).numpy()
    joint = joint.numpy()
    if not reference:
        return torch.from_numpy(kernels.partner_pairs(cost, joint, num_joints,
                                                      int(cfg.partners)))
    # the columns of each joint type side by side, padded with an infinite column (n)
    counts = np.bincount(joint, minlength=num_joints)
    width = int(counts.max())
    by_type = np.argsort(joint, kind="stable")
    columns = np.full((num_joints, width), n)
    columns[joint[by_type], np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)] = (
        by_type)
    padded = np.empty((n, n + 1), cost.dtype)
    padded[:, :n] = cost
    padded[:, n] = np.inf
    grouped = padded.take(columns, axis=1)  # [N, K, width], C order
    rows = np.arange(n)
    grouped[rows, joint] = np.inf  # never a candidate's own type
    flat = grouped.reshape(-1)  # a view: writes reach ``grouped``
    first = np.arange(0, flat.size, width).reshape(n, num_joints)
    type_first = np.arange(0, columns.size, width)
    chosen = np.zeros((n, n + 1), bool)
    for _ in range(min(cfg.partners, width)):  # k passes of a minimum beat a sort here
        pick = grouped.argmin(axis=2)  # [N, K]: the first of equal costs
        at = first + pick
        partner = np.where(flat[at] != np.inf, columns.reshape(-1)[type_first + pick], n)
        chosen[rows[:, None], partner] = True  # n: none left
        flat[at] = np.inf
    i, j = np.nonzero(chosen[:, :n] | chosen[:, :n].T)
    upper = i < j
    return torch.from_numpy(np.stack([i[upper], j[upper]]))


def pair_attributes(pos: torch.Tensor, tag: torch.Tensor, score: torch.Tensor,
                    joint: torch.Tensor, pairs: torch.Tensor, long_side: float,
                    limbs: torch.Tensor, cfg: EdgeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Attributes of both directions of each pair (i, j): ([M, A] for i -> j, [M, A] for
    j -> i). Per direction src -> dst: offset, scaled distance, tag difference (per
    dimension and/or its norm), heat scores, limb type (from the [K, K] limb matrix) and
    competition margins; what does not depend on the direction is computed once per pair."""
    i, j = pairs
    offset = (pos.index_select(0, j) - pos.index_select(0, i)) / long_side
    dist = offset.norm(dim=1, keepdim=True)
    fwd, rev = [], []

    def both(f: torch.Tensor, r: torch.Tensor | None = None) -> None:
        fwd.append(f)
        rev.append(f if r is None else r)

    if cfg.offset:
        both(offset, -offset)
    if cfg.distance:
        both(dist)
    if cfg.tag_diff or cfg.tag_distance:
        diff = (tag.index_select(0, j) - tag.index_select(0, i)).abs()
        if cfg.tag_diff:
            both(diff)
        if cfg.tag_distance:
            both(diff.norm(dim=1, keepdim=True))
    if cfg.scores:
        s_i, s_j = score.index_select(0, i), score.index_select(0, j)
        both(torch.stack([s_i, s_j], dim=1), torch.stack([s_j, s_i], dim=1))
    if cfg.limb:
        limb = limbs.reshape(-1).index_select(0, joint.index_select(0, i) * len(limbs)
                                              + joint.index_select(0, j))
        both(torch.nn.functional.one_hot(limb, int(limbs.max()) + 1).float())
    if cfg.competition:
        comp = competition_attributes(tag, joint, torch.cat([i, j]), torch.cat([j, i]),
                                      dist.squeeze(1).repeat(2), len(limbs))
        both(comp[:len(i)], comp[len(i):])
    if not fwd:
        empty = torch.zeros((len(i), 0))
        return empty, empty
    return torch.cat(fwd, dim=1).float(), torch.cat(rev, dim=1).float()


def competition_attributes(tag: torch.Tensor, joint: torch.Tensor, src: torch.Tensor,
                           dst: torch.Tensor, dist: torch.Tensor, num_joints: int
                           ) -> torch.Tensor:
    """[E, 2]: for edge src -> dst, its tag distance minus the smallest tag distance from
    src to any candidate of dst's joint type, and log of its distance over the smallest
    such distance. Zero for the best alternative; what associative embedding cannot see
    is how close the runner-up is."""
    tag_dist = (tag.index_select(0, dst) - tag.index_select(0, src)).norm(dim=1)
    group = src * num_joints + joint.index_select(0, dst)
    size = int(src.max()) * num_joints + num_joints if len(src) else 0
    value = torch.stack([tag_dist, dist], dim=1)  # both minima in one reduction
    best = value.new_full((size, 2), float("inf")).scatter_reduce_(
        0, group.unsqueeze(1).expand_as(value), value, "amin")
    margin = value.sub_(best.index_select(0, group))
    margin[:, 1] = torch.log1p(margin[:, 1] / (dist - margin[:, 1] + 1e-3))
    return margin


def match_people(pos: np.ndarray, joint: np.ndarray, gt: np.ndarray, areas: np.ndarray,
                 sigmas: np.ndarray, threshold: float) -> np.ndarray:
    """Ground-truth person of each candidate by keypoint similarity, -1 for none.

    ``gt`` is [P, K, 3] in image pixels; similarity as in COCO's OKS:
    exp(-d^2 / (2 * area * (2 sigma)^2)), only where the joint is labeled.
    """
    if len(gt) == 0 or len(joint) == 0:
        return np.full(len(joint), -1, dtype=np.int64)
    target = gt[:, joint, :]  # [P, N, 3]
    d2 = ((target[..., :2] - pos[None]) ** 2).sum(-1)
    ks = keypoint_similarity(d2, sigmas[joint][None], areas[:, None])
    ks[target[..., 2] <= 0] = 0.0
    best = ks.argmax(axis=0)
    return np.where(ks.max(axis=0) > threshold, best, -1).astype(np.int64)


# What each image unit measures on the default synthetic detector's images (medians over
# its test split): a unit is divided by the image's own value and multiplied by this.
TAG_UNIT = 0.16  # nearest tag distance to a candidate of another joint type
HEAT_UNIT = 0.89  # strongest peak of a joint type
LIMB_UNIT = 0.054  # nearest limb partner's distance over the image's long side


def tag_spread(tag: torch.Tensor, joint: torch.Tensor) -> float:
    """The image's within-person tag spread: per candidate, the median over the other
    joint types of its nearest tag among their candidates (mostly its own person's
    joint), then the median over candidates; 0 with fewer than two joint types."""
    types = joint.unique()
    if len(types) < 2:
        return 0.0
    dist = torch.cdist(tag.double(), tag.double())
    nearest = torch.stack([dist[:, joint == t].min(dim=1).values for t in types], dim=1)
    nearest[joint.unsqueeze(1) == types.unsqueeze(0)] = float("nan")
    return float(nearest.nanmedian(dim=1).values.median())


def heat_level(score: torch.Tensor, joint: torch.Tensor) -> float:
    """The image's typical strongest peak: the median over joint types of their
    strongest candidate's heat; 0 without candidates."""
    if len(score) == 0:
        return 0.0
    best = score.new_zeros(int(joint.max()) + 1).scatter_reduce(0, joint, score, "amax")
    return float(best[joint.unique()].median())


def limb_length(pos: torch.Tensor, joint: torch.Tensor, limbs: np.ndarray) -> float:
    """The image's typical limb, in image pixels: per candidate, the distance to the
    nearest candidate of a joint type it shares a limb with, then the median; 0 when no
    candidate has such a partner."""
    linked = torch.from_numpy(limbs > 0)[joint][:, joint]
    dist = torch.cdist(pos.double(), pos.double()).masked_fill(~linked, float("inf"))
    nearest = dist.min(dim=1).values if len(pos) else dist.new_zeros(0)
    nearest = nearest[torch.isfinite(nearest)]
    return float(nearest.median()) if len(nearest) else 0.0


def _unit(measured: float, unit: float) -> float:
    """The factor that brings a measured image unit to ``unit`` (1 where it is 0)."""
    return unit / measured if measured > 0 else 1.0


def build_vertices(maps: ImageMaps, layout: Layout, cfg: GraphConfig,
                   gt: np.ndarray | None = None, areas: np.ndarray | None = None) -> Data:
    """The vertices of one image's graph: candidates, features and matched people.

    This is the costly part (reading and searching the maps) and what the cache holds;
    :func:`add_edges` derives pairs, edges and labels from it. Without ground truth,
    ``person`` is -1 for every candidate.
    """
    peaks = find_peaks(torch.from_numpy(maps.heatmaps), cfg.candidates)
    n = len(peaks.joint)
    pos = torch.from_numpy(maps.heatmap_to_image(peaks.uv.numpy())).float()
    all_tags, all_heats = sample_maps(maps, peaks.uv)
    own_tag = all_tags[torch.arange(n), peaks.joint]
    units = cfg.units
    heat = _unit(heat_level(peaks.score, peaks.joint), HEAT_UNIT) if units.heat else 1.0
    tag = _unit(tag_spread(own_tag, peaks.joint), TAG_UNIT) if units.tags else 1.0
    x, feat_tag = vertex_features(maps, all_tags * tag, all_heats * heat, peaks.uv,
                                  peaks.joint, peaks.score * heat, cfg)
    hh, wh = maps.heatmaps.shape[1:]
    corners = maps.heatmap_to_image(np.array([[0.0, 0.0], [wh, hh]]))
    long_side = float(np.abs(corners[1] - corners[0]).max())
    if units.lengths:
        limb = limb_length(pos, peaks.joint, layout.limb_matrix())
        long_side = limb / LIMB_UNIT if limb > 0 else long_side
    if gt is None:
        person = torch.full((n,), -1, dtype=torch.long)
    else:
        person = torch.from_numpy(match_people(pos.numpy().astype(np.float64),
                                               peaks.joint.numpy(), gt, areas,
                                               layout.sigma_array, cfg.match_threshold))
    return Data(x=x, pos=pos, joint=peaks.joint, score=peaks.score, tag=own_tag,
                feat_tag=feat_tag, tag_unit=torch.tensor([tag]), heat_unit=torch.tensor([heat]),
                person=person, image_id=torch.tensor([maps.image_id]),
                long_side=torch.tensor([long_side]), num_nodes=n)


def pad_tags(graphs: list[Data]) -> list[Data]:
    """The graphs, with tags (``tag``, ``feat_tag``) of a lower dimension than the widest
    zero-padded to it (a detector whose tag dimension varies per image): the added zeros
    leave every tag distance as it was, and the graphs then cache and batch together."""
    width = max((g.tag.shape[1] for g in graphs), default=0)
    for g in graphs:
        for key in ("tag", "feat_tag"):
            if g[key].shape[1] < width:
                g[key] = torch.nn.functional.pad(g[key], (0, width - g[key].shape[1]))
    return graphs


class AddEdges(BaseTransform):
    """PyG transform: scored pairs, message-passing edges, edge attributes and labels.

    Adds ``pair_index`` [2, M] (each unordered pair once), ``edge_index`` [2, 2M] (both
    directions), ``edge_attr``, ``pair_attr``/``pair_attr_rev`` (the attributes of each
    pair's two directions) and ``y`` [M].
    """

    def __init__(self, layout: Layout, cfg: EdgeConfig) -> None:
        self.layout, self.cfg = layout, cfg
        self.limbs = torch.from_numpy(layout.limb_matrix())  # once, not per graph

    def forward(self, data: Data) -> Data:
        # BaseTransform hands over a shallow copy: the vertex tensors are shared, not cloned
        long_side = float(data.long_side)
        tag_unit, heat_unit = (float(getattr(data, key, 1.0)) for key in ("tag_unit",
                                                                          "heat_unit"))
        pairs = candidate_pairs(data.pos, data.joint, long_side, self.limbs, self.cfg,
                                data.tag * tag_unit)
        data.pair_index = pairs
        data.edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
        data.pair_attr, data.pair_attr_rev = pair_attributes(
            data.pos, data.feat_tag, data.score * heat_unit, data.joint, pairs,
            long_side, self.limbs, self.cfg)
        data.edge_attr = torch.cat([data.pair_attr, data.pair_attr_rev])
        pi, pj = data.person[pairs[0]], data.person[pairs[1]]
        data.y = ((pi == pj) & (pi >= 0)).float()
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.layout.name}, {self.cfg})"


class GraphList(Dataset):
    """Cached vertex graphs with edges added on access."""

    def __init__(self, graphs: list[Data], transform: AddEdges) -> None:
        self.graphs, self.transform = graphs, transform

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        return self.transform(self.graphs[i])
