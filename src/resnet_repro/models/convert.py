"""Convert torchvision ResNet weights to our networks and back.

torchvision's ``resnet18`` .. ``resnet152`` are the paper's ImageNet ResNets (Table 1)
with shortcut option B (Sec. 3.3 / 4.1: identity shortcuts, 1x1 projection + BN where
the shape changes) and, in the bottleneck nets, the stride of a downsampling block on the
3x3 conv ("ResNet v1.5"; the paper's released models put it on the first 1x1 conv). Our
equivalent is therefore ``models.build(arch, shortcut="B", stride_on="3x3")`` for 50, 101
and 152, and ``models.build(arch, shortcut="B")`` for 18 and 34.

The two state dicts differ only in the name of the projection shortcut:

==============================  ==============================
torchvision                     ours
==============================  ==============================
``layerS.I.downsample.0.*``     ``layerS.I.shortcut.0.*`` (1x1 conv)
``layerS.I.downsample.1.*``     ``layerS.I.shortcut.1.*`` (BN)
==============================  ==============================

Every other name (``conv1``, ``bn1``, ``layerS.I.convK``/``bnK``, ``fc``) and every tensor
shape is the same, so the conversion renames keys and checks them against the target
architecture; it never changes a tensor.

Caution: a state dict does not record where the stride sits (1x1 and 3x3 placements have
identical names and shapes). Converted bottleneck weights load without complaint into a
``stride_on="1x1"`` net and then compute something else; :func:`build_imported` and the
checkpoint written by :func:`save_imported` carry the right settings.
"""

from __future__ import annotations

import os
import re
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_repro.errors import UserError
from resnet_repro.models.registry import ArchSpec, build, spec

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
IMPORT_FORMAT = "resnet_repro.imported_weights/1"

_TV_SHORTCUT = re.compile(r"^(layer\d+\.\d+\.)downsample\.([01])\.")
_OUR_SHORTCUT = re.compile(r"^(layer\d+\.\d+\.)shortcut\.([01])\.")

StateDict = dict[str, torch.Tensor]


def _torchvision_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of a torchvision-compatible net.

    Raises:
        UserError: ``arch`` is not resnet18/34/50/101/152 (a plain net, a CIFAR net, an
            unknown name).
    """
    s = spec(arch)  # raises UserError for unknown names / depths
    if s.family != "imagenet" or not s.residual:
        raise UserError(
            f"{s.name} has no torchvision counterpart; torchvision weights exist for "
            f"{', '.join(TORCHVISION_ARCHS)}"
        )
    return s


def torchvision_build_kwargs(arch: str) -> dict[str, Any]:
    """``models.build`` keyword arguments of the net equivalent to torchvision's ``arch``:
    ``{"shortcut": "B"}`` plus ``{"stride_on": "3x3"}`` for bottleneck nets.

    Raises:
        UserError: ``arch`` is not resnet18/34/50/101/152.
    """
    s = _torchvision_spec(arch)
    kwargs: dict[str, Any] = {"shortcut": "B"}
    if s.block == "bottleneck":
        kwargs["stride_on"] = "3x3"
    return kwargs


def _strip_module_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a ``module.`` prefix common to every key (``nn.DataParallel`` / DDP saves)."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _reference(arch: str, num_classes: int) -> StateDict:
    """Names and shapes (meta tensors, no memory) of our torchvision-equivalent net."""
    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, **torchvision_build_kwargs(arch))
    return model.state_dict()


def _num_classes(sd: Mapping[str, Any]) -> int:
    w = sd.get("fc.weight")
    if isinstance(w, torch.Tensor) and w.dim() == 2:
        return int(w.shape[0])
    return 1000


def _few(names: list[str], k: int = 3) -> str:
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def _check_against(sd: Mapping[str, Any], ref: StateDict, arch: str, side: str) -> None:
    """Raise a one-line UserError unless ``sd`` has exactly ``ref``'s names and shapes."""
    bad_type = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad_type:
        raise UserError(f"{side} state_dict for {arch} has non-tensor entries: {_few(bad_type)}")
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({_few(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({_few(unexpected)})")
        raise UserError(
            f"{side} state_dict does not match {arch} with option-B shortcuts: "
            f"{'; '.join(parts)}; check --arch (and that the shortcuts are option B)"
        )
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(ref[k].shape)}"
        for k in ref
        if tuple(sd[k].shape) != tuple(ref[k].shape)
    ]
    if shapes:
        raise UserError(
            f"{side} state_dict has tensors of the wrong shape for {arch}: {_few(shapes, 2)}; "
            "check --arch"
        )


def from_torchvision(state_dict: Mapping[str, torch.Tensor], arch: str,
                     notes: list[str] | None = None) -> StateDict:
    """Rename a torchvision ``resnetXX`` state dict to ours (paper Table 1 nets, option-B
    shortcuts, bottleneck stride on the 3x3 conv).

    Args:
        state_dict: ``torchvision.models.resnetXX().state_dict()``: conv weights
            ``(out_ch, in_ch, k, k)``, BN ``weight``/``bias``/``running_mean``/
            ``running_var`` ``(C,)`` and ``num_batches_tracked`` ``()``, ``fc.weight``
            ``(num_classes, 512 * expansion)``, ``fc.bias`` ``(num_classes,)``. A
            ``module.`` prefix on every key (DataParallel) is dropped. Any
            ``num_classes`` is accepted (read from ``fc.weight``). A state dict without
            the ``num_batches_tracked`` counters (saved by PyTorch before 0.4.1, or by a
            converter) is accepted: they are set to 0, as ``load_state_dict`` does for such
            files, and only count BN updates in training (no effect on evaluation).
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or
            ``"resnet152"``.
        notes: if given, receives one line when the counters were missing.

    Returns:
        A new dict with our names (``downsample.0/1`` -> ``shortcut.0/1``) holding the
        same tensor objects (not copies), in our module order; load it into
        ``models.build(arch, **torchvision_build_kwargs(arch), num_classes=...)``.

    Raises:
        UserError: ``arch`` has no torchvision counterpart, or the keys / shapes do not
            match that net (wrong ``--arch``, truncated or foreign checkpoint).
    """
    _torchvision_spec(arch)
    sd = _strip_module_prefix(state_dict)
    renamed = {_TV_SHORTCUT.sub(r"\1shortcut.\2.", k): v for k, v in sd.items()}
    ref = _reference(arch, _num_classes(renamed))
    counters = [k for k in ref if k.endswith(".num_batches_tracked") and k not in renamed]
    # any other missing key is then named on its own, as the real mismatch
    renamed.update({k: torch.zeros((), dtype=torch.long) for k in counters})
    _check_against(renamed, ref, arch, "torchvision")
    if counters and notes is not None:
        notes.append(f"the state_dict has no BN num_batches_tracked counters ({len(counters)}; saved by an older "
                     "PyTorch or a converter): set to 0, as PyTorch does when loading such files; they only "
                     "count BN updates in training")
    return {k: renamed[k] for k in ref}


def to_torchvision(state_dict: Mapping[str, torch.Tensor], arch: str) -> StateDict:
    """Rename our state dict of ``arch`` to torchvision's names; inverse of
    :func:`from_torchvision` (``to_torchvision(from_torchvision(sd, a), a)`` has the
    same keys and the very same tensors as ``sd``).

    Args:
        state_dict: ``model.state_dict()`` of ``models.build(arch, shortcut="B", ...)``;
            shapes as in :func:`from_torchvision`. It must come from a net with option-B
            shortcuts (option A has no projection weights, option C has extra ones); for
            bottleneck nets torchvision's forward puts the stride on the 3x3 conv, which
            the names cannot check: weights trained with ``stride_on="1x1"`` convert
            without error but compute something else in torchvision.
        arch: ``"resnet18"`` .. ``"resnet152"``.

    Returns:
        A new dict with torchvision's names (``shortcut.0/1`` -> ``downsample.0/1``),
        same tensor objects, loadable by ``torchvision.models.<arch>().load_state_dict``.

    Raises:
        UserError: ``arch`` has no torchvision counterpart, or the keys / shapes do not
            match the option-B net of that depth.
    """
    _torchvision_spec(arch)
    sd = _strip_module_prefix(state_dict)
    ref = _reference(arch, _num_classes(sd))
    _check_against(sd, ref, arch, "our")
    return {_OUR_SHORTCUT.sub(r"\1downsample.\2.", k): sd[k] for k in ref}


def _torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, errors as one-line UserErrors."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {str(p)!r} does not exist (or is not a file)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors, or a pickled nn.Module
        raise UserError(
            f"cannot read {str(p)!r} as a tensor-only state_dict (torch.load weights_only=True): "
            f"{_load_refusal(exc)}; save model.state_dict(), not the model"
        ) from exc
    return obj


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed global| Please |\n|$)")


def _load_refusal(exc: Exception) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``: the object type the
    file would have to run (torch's own text also offers ``weights_only=False``, which
    this project never uses on files from elsewhere), or the error's first line."""
    text = _ANSI.sub("", str(exc))
    m = _UNPICKLER.search(text)
    why = m.group(1).strip() if m else ""
    if why.startswith("Unsupported operand"):  # not a pickle at all
        return f"not a file written by torch.save ({why[:150]})"
    if why:
        return f"it pickles more than tensors and plain values ({why[:150]})"
    if text.startswith("Weights only load failed"):
        return "it pickles more than tensors and plain values"
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return f"not a complete file written by torch.save ({type(exc).__name__}{': ' + first[:150] if first else ''})"


def _load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Load a state dict file with ``torch.load(weights_only=True)`` on the CPU, unwrapping
    ``{"state_dict": ...}`` / ``{"model": ...}`` training checkpoints."""
    p = Path(path)
    obj = _torch_load(p)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and not isinstance(obj.get("fc.weight"), torch.Tensor):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{str(p)!r} does not hold a state_dict (got {type(obj).__name__})")
    return dict(obj)


def _download(arch: str, weights_name: str, progress: bool) -> dict[str, Any]:
    """Fetch torchvision's pretrained ``arch`` weights through its weights API."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    names = list(enum.__members__)
    key = weights_name.strip().upper()
    if key not in enum.__members__:
        raise UserError(
            f"torchvision has no weights {weights_name!r} for {arch}; choose one of {', '.join(names)}"
        )
    weights = enum[key]
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
        raise UserError(
            f"could not download torchvision {arch} {key} weights from {weights.url} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "download the file elsewhere and pass it as FILE with --from torchvision"
        ) from exc
    except RuntimeError as exc:  # hash mismatch / corrupt download
        raise UserError(
            f"torchvision {arch} {key} weights from {weights.url} are unusable "
            f"({str(exc).splitlines()[0] if str(exc) else 'RuntimeError'}); delete the torch hub "
            "cache file and retry"
        ) from exc


def load_torchvision_weights(
    source: str,
    arch: str,
    file: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    notes: list[str] | None = None,
) -> StateDict:
    """Load torchvision ResNet weights and convert them to our names (for ImageNet Table
    1 nets with option-B shortcuts; bottleneck nets then need ``stride_on="3x3"``).

    Args:
        source: ``"torchvision"`` with ``file`` (a saved torchvision ``state_dict``), or
            ``"torchvision:PATH"`` (the same, file named inline), or
            ``"torchvision:WEIGHTS"`` with a weights name of torchvision's API such as
            ``IMAGENET1K_V1``, ``IMAGENET1K_V2`` or ``DEFAULT``, which downloads via
            ``torchvision.models.get_model_weights(arch)[WEIGHTS].get_state_dict`` into
            the torch hub cache (needs internet).
        arch: ``"resnet18"`` .. ``"resnet152"``.
        file: the state dict file when ``source`` is plain ``"torchvision"``. Files are
            read with ``torch.load(weights_only=True)`` on the CPU; a training
            checkpoint ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
        progress: show the download progress bar.
        notes: receives what the conversion filled in (see :func:`from_torchvision`).

    Returns:
        Our state dict (see :func:`from_torchvision`), CPU tensors.

    Raises:
        UserError: unknown source, both or neither of a file and a weights name, a
            missing / unreadable file, a file that does not match ``arch``, an unknown
            weights name, or a failed download (no network, bad hash).
    """
    arch = _torchvision_spec(arch).name
    kind, _, rest = source.strip().partition(":")
    if kind.lower() != "torchvision":
        raise UserError(
            f"unknown weights source {source!r}; use torchvision (with FILE) or torchvision:IMAGENET1K_V1"
        )
    rest = rest.strip()
    if rest and file is not None:
        raise UserError(
            f"give either FILE or a weights name in {source!r}, not both (FILE is {str(file)!r})"
        )
    if not rest and file is None:
        raise UserError(
            "no weights given: pass a FILE saved from torchvision, or --from torchvision:IMAGENET1K_V1 to download"
        )
    if file is not None:
        sd = _load_file(file)
    elif re.fullmatch(r"[A-Za-z0-9_]+", rest) and not Path(rest).is_file():
        sd = _download(arch, rest, progress)
    else:
        sd = _load_file(rest)
    return from_torchvision(sd, arch, notes)


def save_imported(
    state_dict: Mapping[str, torch.Tensor], arch: str, out: str | os.PathLike, source: str
) -> None:
    """Write converted weights atomically as ``{"format", "arch", "build_kwargs",
    "source", "state_dict"}`` with ``torch.save`` (read it back with
    :func:`build_imported`; ``torch.load(out, weights_only=True)["state_dict"]`` is a
    plain state dict for ``models.build(arch, **build_kwargs)``).

    Raises:
        UserError: ``arch`` has no torchvision counterpart.
        OSError: the target cannot be written (the old file is then left untouched).
    """
    from resnet_repro.fsio import atomic_write

    s = _torchvision_spec(arch)
    payload = {
        "format": IMPORT_FORMAT,
        "arch": s.name,
        "build_kwargs": torchvision_build_kwargs(arch),
        "num_classes": _num_classes(state_dict),
        "source": source,
        "state_dict": dict(state_dict),
    }
    atomic_write(out, lambda fh: torch.save(payload, fh))


def build_imported(path: str | os.PathLike) -> nn.Module:
    """Build the net stored by :func:`save_imported` (right shortcut option and stride
    placement) and load its weights. Input ``(N, 3, H, W)``; output ``(N, num_classes)``.
    The model is returned in training mode; call ``.eval()`` to evaluate.

    Raises:
        UserError: the file is missing, unreadable, or not written by ``import-weights``.
    """
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or obj.get("format") != IMPORT_FORMAT:
        raise UserError(
            f"{str(path)!r} was not written by `resnet-repro import-weights` (no {IMPORT_FORMAT!r} tag)"
        )
    model = build(obj["arch"], num_classes=int(obj["num_classes"]), **obj["build_kwargs"])
    model.load_state_dict(obj["state_dict"])
    return model
