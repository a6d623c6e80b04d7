"""A drop-in for the decoding of mmpose's associative-embedding head (the
``AssociativeEmbedding`` codec's ``batch_decode``), grouped by posegnn.

``PosegnnAEDecoder(input_size, heatmap_size).batch_decode(batch_heatmaps, batch_tags)``
takes mmpose's tensors, ``batch_heatmaps`` [B, K, H, W] and ``batch_tags`` [B, L * K, H,
W] (channel ``l * K + k`` is dimension l of joint k's tag; L = 2 with flip testing), and
returns mmpose's three lists: keypoints [N, K, 2] in the input image's space, keypoint
scores [N, K] and instance scores [N].

With mmpose installed, importing this module registers the codec
``PosegnnAssociativeEmbedding`` (mmpose's ``AssociativeEmbedding`` for training, posegnn
for decoding), so one setting of a config swaps the grouping::

    custom_imports = dict(imports=["posegnn.integrations.mmpose"])
    codec = dict(type="PosegnnAssociativeEmbedding", input_size=(512, 512),
                 heatmap_size=(128, 128), sigma=2, decode_keypoint_order=[...])
"""

from __future__ import annotations

import numpy as np

from posegnn.integrations.common import Groupers, layout_for, to_numpy


class PosegnnAEDecoder:
    """mmpose's ``batch_decode`` contract backed by posegnn. ``input_size`` and
    ``heatmap_size`` are (w, h) as in mmpose's codec (keypoints are scaled by their ratio,
    or by (input - 1) / (heatmap - 1) with ``use_udp``); ``ckpt_path`` (default: the
    shipped model of the layout), ``grouping`` (gnn or ae) and grouping settings choose
    posegnn's side. Other keyword arguments of mmpose's codec are accepted and unused."""

    def __init__(self, input_size, heatmap_size, use_udp: bool = False, ckpt_path=None,
                 grouping: str = "gnn", layout: str | None = None,
                 grouping_settings: dict | None = None, **codec_kwargs) -> None:
        inp, hm = np.asarray(input_size, np.float64), np.asarray(heatmap_size, np.float64)
        self.scale = (inp - 1) / (hm - 1) if use_udp else inp / hm
        self.layout = layout
        self.groupers = Groupers(ckpt_path, grouping, **(grouping_settings or {}))

    def batch_decode(self, batch_heatmaps, batch_tags):
        heat, tags = to_numpy(batch_heatmaps), to_numpy(batch_tags)
        if heat.ndim != 4 or tags.ndim != 4 or tags.shape[0] != heat.shape[0] \
                or tags.shape[2:] != heat.shape[2:] or tags.shape[1] % heat.shape[1]:
            raise ValueError(f"heatmaps {heat.shape} and tags {tags.shape}: expected "
                             "[B, K, H, W] and [B, L * K, H, W]")
        b, k, h, w = heat.shape
        dims = tags.shape[1] // k
        grouper = self.groupers.get(layout_for(k, self.layout))
        affine = [[self.scale[0], 0.0, 0.0], [0.0, self.scale[1], 0.0]]
        keypoints, keypoint_scores, instance_scores = [], [], []
        for i in range(b):
            per_joint = tags[i].reshape(dims, k, h, w).transpose(1, 2, 3, 0)  # [K, H, W, L]
            people = grouper(heat[i], per_joint, map_to_image=affine)
            kps = np.asarray(people.keypoints, np.float32).reshape(-1, k, 3)
            keypoints.append(kps[..., :2].copy())
            keypoint_scores.append(kps[..., 2].copy())
            instance_scores.append(np.asarray(people.scores, np.float32).reshape(-1))
        return keypoints, keypoint_scores, instance_scores


def _register() -> None:
    """Register ``PosegnnAssociativeEmbedding`` with mmpose, when it is installed."""
    try:
        from mmpose.codecs import AssociativeEmbedding
        from mmpose.registry import KEYPOINT_CODECS
    except ImportError:
        return

    @KEYPOINT_CODECS.register_module(force=True)
    class PosegnnAssociativeEmbedding(AssociativeEmbedding):
        """mmpose's codec for training targets; posegnn's grouping for decoding."""

        def __init__(self, *args, posegnn: dict | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._posegnn = PosegnnAEDecoder(self.input_size, self.heatmap_size,
                                             self.use_udp, **(posegnn or {}))

        def batch_decode(self, batch_heatmaps, batch_tags):
            return self._posegnn.batch_decode(batch_heatmaps, batch_tags)

    globals()["PosegnnAssociativeEmbedding"] = PosegnnAssociativeEmbedding


_register()
