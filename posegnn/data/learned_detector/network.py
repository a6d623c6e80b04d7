"""A small bottom-up network: a stride-2 stem, a U-Net body, heatmap and tag heads.

It outputs, at half the input resolution, K heatmaps and K one-dimensional tag maps, as
HigherHRNet's associative-embedding head does. Two coordinate channels (CoordConv) join
the image at the input: with them, tags that differ between people at different places
are easy to start from, and training does not sit at all tags equal, where the push
loss has no gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions (the first may stride)."""
    return nn.Sequential(conv(c_in, c_out, 3, stride), conv(c_out, c_out))


class BottomUpNet(nn.Module):
    """Image [B, C, S, S] -> (heatmaps [B, K, S/2, S/2], tags [B, K, S/2, S/2])."""

    def __init__(self, num_joints: int, in_channels: int = 3, width: int = 16,
                 depth: int = 3, input_size: int = 128) -> None:
        super().__init__()
        self.num_joints, self.in_channels, self.width, self.depth = (
            num_joints, in_channels, width, depth)
        self.input_size = input_size  # what it was trained at (any size multiple of 16 runs)
        widths = [width * (i + 1) for i in range(depth + 1)]
        self.stem = conv_block(in_channels + 2, widths[0], stride=2)
        self.down = nn.ModuleList(conv_block(widths[i], widths[i + 1], stride=2)
                                  for i in range(depth))
        # one convolution per level on the way up; a 1x1 fusion at the output level,
        # the most expensive one
        self.up = nn.ModuleList(conv(widths[i + 1] + widths[i], widths[i], 1 if i == 0 else 3)
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2 * num_joints, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = image.shape
        ys = torch.linspace(-1.0, 1.0, h, dtype=image.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, dtype=image.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        x = self.stem(torch.cat([image, xs, ys], dim=1))
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        out = self.head(x)
        return out[:, :self.num_joints], out[:, self.num_joints:]

    def settings(self) -> dict[str, int]:
        """The constructor's arguments, stored beside the weights."""
        return {"num_joints": self.num_joints, "in_channels": self.in_channels,
                "width": self.width, "depth": self.depth, "input_size": self.input_size}
