"""Batched data augmentation on tensors, on the training device (paper Sec. 4.2).

CIFAR-10: "4 pixels are padded on each side, and a 32x32 crop is randomly sampled from
the padded image or its horizontal flip". Done for a whole batch with one gather, no
per-image PIL transforms and no DataLoader workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 -> float32 in [0, 1] minus the per-pixel ``mean``
    ``(3, H, W)`` (paper Sec. 4.2: "per-pixel mean subtracted"), or minus a per-channel
    ``mean`` ``(3, 1, 1)`` and divided by ``std`` ``(3, 1, 1)`` (weights trained that way,
    see :mod:`resnet_repro.train.init`)."""
    x = x_uint8.float().div_(255.0).sub_(mean)
    return x if std is None else x.div_(std)


def pad_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, take a random crop of the original size and flip it
    horizontally with probability 1/2, independently for each image.

    Args:
        x: ``(B, C, H, W)`` float, mean-subtracted (so zero padding is mean padding).
        generator: source of randomness, on ``x.device``.
        pad: padding in pixels (4 in the paper).

    Returns:
        ``(B, C, H, W)`` tensor on ``x.device``.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    flip = torch.rand(b, 1, device=dev, generator=generator) < 0.5
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy + ar_h  # (B, H)
    cols = torch.where(flip, ox + (w - 1) - ar_w, ox + ar_w)  # (B, W), reversed when flipped
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = padded[bidx, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
