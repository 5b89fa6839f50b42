"""Activation checkpointing for deep nets (memory, not maths).

Training ResNet-1202 (paper Sec. 4.2, Table 6) at batch 128 keeps every block's
activations for the backward pass: about 7 GB. With checkpointing, each stage of n
blocks is cut into segments of about sqrt(n) blocks; only the input of each segment is
kept, and a segment's forward is recomputed during the backward pass
(``torch.utils.checkpoint``, non-reentrant). That costs about one extra forward pass and
keeps O(sqrt(n)) activations per stage instead of O(n).

The recomputation must not change the results. Batch normalisation in training mode
updates its running statistics on every forward call, so a naive recomputation would
update them twice per iteration. :func:`run_blocks` puts the BN buffers of a segment
back as they were after its recomputation (the batch statistics used for normalising
are the same), so parameters, gradients and BN buffers match a run without
checkpointing bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def _no_running_stat_updates(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Within the context, BN layers normalise with batch statistics as usual, and their
    running mean/var and ``num_batches_tracked`` are put back afterwards, bit for bit."""
    bufs = [b for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in bufs]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(bufs, saved, strict=True):
                b.copy_(s)


def segment_length(n_blocks: int) -> int:
    """Blocks per checkpointed segment for a stage of ``n_blocks``: about sqrt(n)
    (200 blocks, as in ResNet-1202's stages: 14)."""
    return max(1, math.isqrt(n_blocks))


def run_blocks(stage: nn.Sequential, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """Run the blocks of one stage on ``x`` ``(N, C, H, W)``. With ``checkpointed`` (and in
    training mode with autograd on) the stage runs as checkpointed segments of
    :func:`segment_length` blocks: the backward pass holds each segment's input plus the
    activations of one segment at a time.

    Returns the stage output, identical in value to ``stage(x)``.
    """
    if not (checkpointed and stage.training and torch.is_grad_enabled()):
        return stage(x)
    blocks = list(stage)
    k = segment_length(len(blocks))
    compiled = torch.compiler.is_compiling()
    for i in range(0, len(blocks), k):
        seg = tuple(blocks[i: i + k])

        def run(t: torch.Tensor, seg: tuple = seg) -> torch.Tensor:
            for b in seg:
                t = b(t)
            return t

        if compiled:  # a compiled graph is functional: its recomputation writes no buffers
            x = checkpoint(run, x, use_reentrant=False, preserve_rng_state=False)
        else:
            x = checkpoint(run, x, use_reentrant=False, preserve_rng_state=False,
                           context_fn=lambda seg=seg: (nullcontext(), _no_running_stat_updates(seg)))
    return x
