"""Gradient norms per stage of a CIFAR-10 net (paper Sec. 4.1, "Plain Networks").

The paper argues that its deep plain nets are hard to optimise *not* because of vanishing
gradients: they are trained with BN, "which ensures forward propagated signals to have
non-zero variances", and "we also verify that the backward propagated gradients exhibit
healthy norms with BN". It shows no such norms. :func:`stage_grad_norms` measures them
for one mini-batch, in two ways:

* **weight gradients**: the L2 norm of the gradient of the batch-mean softmax
  cross-entropy loss with respect to the parameters of each part of the net, by its
  module names: ``conv1+bn1`` (the stem conv and its BN), ``layer1``, ``layer2``,
  ``layer3`` (the three stages: every conv, BN and projection shortcut in them) and ``fc``.
  Every parameter belongs to exactly one part.
* **input gradients**: the L2 norm of the gradient of the same loss with respect to the
  tensor entering ``layer1``, ``layer2`` and ``layer3`` (``(B, C, H, W)`` activations)
  and ``fc`` (the ``(B, 64)`` pooled features). It is the gradient the backward pass
  carries into each stage from above, so it shows where a signal shrinks or grows on
  its way down. Being the gradient of a batch *mean*, it scales as 1/B per image.

The measurement is a separate forward and backward pass of the plain (uncompiled)
module in training mode, with batch statistics in BN as in the training step. It leaves
the module as it found it: the BN running statistics (every buffer) are put back bit
for bit, and the gradients are taken with :func:`torch.autograd.grad`, so no ``.grad``
field is written. A training loop that measures before its own step therefore trains to
exactly the numbers of one that does not (``tests/test_gradients.py``).

**Precision.** The pass runs in the precision the caller gives, which the training loop
sets to the run's own: with bf16 autocast the convolutions and the fc run in bfloat16,
so the activation (input) gradients are bfloat16 tensors and the weight gradients are
bfloat16 products accumulated into the float32 parameters' gradients, as in the step
itself; in fp32 everything is float32. The norms are then summed in float64 from those
gradients. They are the gradients the step computes, to within the kernels of the
uncompiled module (a ``torch.compile``d step fuses its own).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

# (name in the log, the model's modules whose parameters it covers)
WEIGHT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv1+bn1", ("conv1", "bn1")), ("layer1", ("layer1",)), ("layer2", ("layer2",)), ("layer3", ("layer3",)),
    ("fc", ("fc",)),
)
# the modules whose input tensor's gradient is measured
INPUT_MODULES: tuple[str, ...] = ("layer1", "layer2", "layer3", "fc")


def weight_groups(model: nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters of ``model`` by the parts of :data:`WEIGHT_GROUPS`.

    Raises:
        ValueError: if ``model`` lacks one of the modules, or has a parameter in none of
            the parts (its gradient would go unmeasured).
    """
    out: dict[str, list[torch.nn.Parameter]] = {}
    covered: set[int] = set()
    for name, modules in WEIGHT_GROUPS:
        params = []
        for m in modules:
            sub = getattr(model, m, None)
            if not isinstance(sub, nn.Module):
                raise ValueError(f"the model has no module {m!r}; gradient norms are defined for the CIFAR-10 nets")
            params += list(sub.parameters())
        out[name] = params
        covered |= {id(p) for p in params}
    left = [n for n, p in model.named_parameters() if id(p) not in covered]
    if left:
        raise ValueError(f"parameters outside {', '.join(n for n, _ in WEIGHT_GROUPS)}: {', '.join(left[:3])}")
    return out


@contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """Within the block the model may run forward passes in training mode; afterwards
    every buffer (BN running mean and var, ``num_batches_tracked``) holds its old value
    again, bit for bit, in place (the same storage, so a compiled or CUDA-graphed step
    that holds these tensors sees the restored values)."""
    bufs = list(model.buffers())
    saved = [b.detach().clone() for b in bufs]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(bufs, saved, strict=True):
                b.copy_(s)


@contextmanager
def stage_inputs(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the tensor entering each module of :data:`INPUT_MODULES` during the next
    forward pass (a forward pre-hook on the module; the first call only, so the
    recomputation of activation checkpointing does not replace it). Yields the dict it
    fills, ``{"layer1": tensor, ...}``; the hooks are removed on exit."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, args):
            if name not in seen:
                seen[name] = args[0]

        return hook

    for name in INPUT_MODULES:
        mod = getattr(model, name)
        # a stage is an nn.Sequential that activation checkpointing may bypass: hook its first block
        target = mod[0] if isinstance(mod, nn.Sequential) else mod
        handles.append(target.register_forward_pre_hook(hook_for(name)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    return nullcontext()


def _norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of the concatenation of ``tensors``, summed in float64."""
    total = torch.zeros((), dtype=torch.float64, device=tensors[0].device if tensors else "cpu")
    for t in tensors:
        total += t.detach().double().square().sum()
    return math.sqrt(total.item())


def stage_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> dict:
    """Per-stage gradient norms of the batch-mean cross-entropy loss on one mini-batch
    (see the module docstring), leaving ``model`` unchanged.

    Args:
        model: a CIFAR-10 net of :mod:`resnet_repro.models.cifar` (plain or residual),
            the uncompiled module, in training mode for the paper's setting (BN on batch
            statistics).
        x: ``(B, 3, 32, 32)`` float input on the model's device (as the training step
            gets it: augmented, mean subtracted).
        y: ``(B,)`` int64 labels.
        precision: ``"fp32"`` or ``"bf16"`` (autocast, as the run's training step).

    Returns:
        ``{"loss": float, "weight": {"conv1+bn1": float, "layer1": ..., "layer2": ...,
        "layer3": ..., "fc": ...}, "input": {"layer1": ..., "layer2": ..., "layer3": ...,
        "fc": ...}}``: the loss (nats) and the L2 norms of its gradients (loss units per
        parameter unit, per activation unit). A non-finite loss gives non-finite norms.

    Raises:
        ValueError: for a model without the CIFAR nets' modules, or an unknown precision.
    """
    groups = weight_groups(model)
    ctx = _autocast(precision, x.device)
    with kept_buffers(model), stage_inputs(model) as inputs, torch.enable_grad():
        with ctx:
            loss = F.cross_entropy(model(x), y)
        missing = [n for n in INPUT_MODULES if n not in inputs]
        if missing:
            raise ValueError(f"the forward pass did not go through {', '.join(missing)}")
        flat = [p for name, _ in WEIGHT_GROUPS for p in groups[name]]
        acts = [inputs[n] for n in INPUT_MODULES]
        grads = torch.autograd.grad(loss, flat + acts)
    out_w: dict[str, float] = {}
    i = 0
    for name, _ in WEIGHT_GROUPS:
        k = len(groups[name])
        out_w[name] = _norm(list(grads[i: i + k]))
        i += k
    out_in = {n: _norm([g]) for n, g in zip(INPUT_MODULES, grads[i:], strict=True)}
    return {"loss": float(loss.detach().item()), "weight": out_w, "input": out_in}
