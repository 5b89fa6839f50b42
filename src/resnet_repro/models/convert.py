"""Convert published ResNet weights to our networks: torchvision's ImageNet ResNets (and
back), and the CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10 (see the end of this
docstring).

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

akamaster/pytorch_resnet_cifar10 (:func:`from_akamaster`): the paper's CIFAR-10 nets
(Sec. 4.2) with option-A shortcuts, saved from ``nn.DataParallel`` (``module.`` on every
key), without ``num_batches_tracked``, with ``linear`` as the classifier. Their option A
pads the identity with planes//4 zero channels *before and after* the existing ones (16
-> 8 + 16 + 8 = 32), ours appends them (16 -> 16 + 16 zeros). The residual stream of
each stage therefore holds the same values in another channel order, and the conversion
permutes that order (conv weights, BN parameters and buffers, the classifier's inputs;
:func:`akamaster_channel_orders`) so that our net computes the same function. The
channels inside a block (after its first conv) are kept in place. Their inputs are RGB in
[0, 1] normalised with the ImageNet mean/std; the written file records that, and where
the weights came from.
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0-1 scale: torchvision's and akamaster's input normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREPROCESSING = {"kind": "per-channel mean/std", "input": "RGB in [0, 1]", "name": "ImageNet mean/std",
                             "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

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
    return _unwrap_state_dict(_torch_load(p), p)


def _unwrap_state_dict(obj: Any, p: Path) -> dict[str, Any]:
    """The state dict in a loaded file: ``obj`` itself, or its ``"state_dict"`` /
    ``"model"`` entry (training checkpoints)."""
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
    state_dict: Mapping[str, torch.Tensor],
    arch: str,
    out: str | os.PathLike,
    source: str,
    *,
    build_kwargs: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write converted weights atomically as ``{"format", "arch", "build_kwargs",
    "num_classes", "source", "preprocessing", "provenance", "state_dict"}`` with
    ``torch.save`` (read it back with :func:`build_imported` / :func:`read_imported`;
    ``torch.load(out, weights_only=True)["state_dict"]`` is a plain state dict for
    ``models.build(arch, **build_kwargs)``).

    Args:
        build_kwargs: ``models.build`` keyword arguments of the net; default: the
            torchvision-equivalent net of ``arch`` (:func:`torchvision_build_kwargs`).
        preprocessing: how the net's inputs must be normalised, e.g. ``{"kind":
            "per-channel mean/std", "input": "RGB in [0, 1]", "mean": [3 floats],
            "std": [3 floats], "name": "ImageNet mean/std"}``; default: torchvision's
            (ImageNet mean/std), which is what torchvision weights were trained with.
        provenance: where the weights came from (source file and SHA-256, repository,
            licence, training data, published error); plain values only.

    Raises:
        UserError: ``arch`` has no torchvision counterpart and no ``build_kwargs`` given.
        OSError: the target cannot be written (the old file is then left untouched).
    """
    from resnet_repro.fsio import atomic_write

    if build_kwargs is None:
        name = _torchvision_spec(arch).name
        build_kwargs = torchvision_build_kwargs(arch)
    else:
        name = spec(arch).name
    payload = {
        "format": IMPORT_FORMAT,
        "arch": name,
        "build_kwargs": dict(build_kwargs),
        "num_classes": _num_classes(state_dict),
        "source": source,
        "preprocessing": dict(preprocessing) if preprocessing is not None else dict(TORCHVISION_PREPROCESSING),
        "provenance": dict(provenance or {}),
        "state_dict": dict(state_dict),
    }
    atomic_write(out, lambda fh: torch.save(payload, fh))


def read_imported(path: str | os.PathLike) -> dict[str, Any]:
    """The dict written by :func:`save_imported` (``torch.load(weights_only=True)``),
    checked for its format tag. Files written before ``preprocessing`` and
    ``provenance`` were recorded get ``None`` / ``{}`` there.

    Raises:
        UserError: the file is missing, unreadable, or not written by ``import-weights``.
    """
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or obj.get("format") != IMPORT_FORMAT:
        raise UserError(
            f"{str(path)!r} was not written by `resnet-repro import-weights` (no {IMPORT_FORMAT!r} tag)"
        )
    out = dict(obj)
    out.setdefault("preprocessing", None)
    out.setdefault("provenance", {})
    return out


def build_imported(path: str | os.PathLike) -> nn.Module:
    """Build the net stored by :func:`save_imported` (right shortcut option and stride
    placement) and load its weights. Input ``(N, 3, H, W)``; output ``(N, num_classes)``.
    The model is returned in training mode; call ``.eval()`` to evaluate.

    Raises:
        UserError: the file is missing, unreadable, or not written by ``import-weights``.
    """
    obj = read_imported(path)
    model = build(obj["arch"], num_classes=int(obj["num_classes"]), **obj["build_kwargs"])
    model.load_state_dict(obj["state_dict"])
    return model


# ---------------------------------------------------------------------------- akamaster (CIFAR-10)
AKAMASTER_REPO = "akamaster/pytorch_resnet_cifar10"
_AKA_BLOCK = re.compile(r"^layer([1-9]\d*)\.(\d+)\.")
_AKA_FOREIGN = re.compile(r"^(fc\.|layer4\.|.*\.downsample\.)")
_AKA_PROJECTION = re.compile(r"^layer\d+\.\d+\.shortcut\.")


def akamaster_channel_orders(widths: tuple[int, ...] = (16, 32, 64)) -> list[torch.Tensor]:
    """Where our residual-stream channels sit in an akamaster net, stage by stage.

    ``orders[s][j]`` is the akamaster channel of stage ``s`` (0-based) that holds our
    channel ``j``. Stage 0 is the identity. Stage ``s`` starts with a shortcut that
    carries the ``w`` channels of stage ``s-1``: ours at ``0..w-1`` followed by zeros,
    theirs at ``p..p+w-1`` between ``p = w_s // 4`` zeros on each side, so
    ``orders[s][j] = p + orders[s-1][j]`` for ``j < w``, and our zero channels ``w..`` take
    their zero channels (``0..p-1``, then ``p+w..``) in order.

    Returns:
        One int64 tensor of length ``widths[s]`` per stage.

    Raises:
        ValueError: for widths that this padding cannot produce (not doubling).
    """
    orders = [torch.arange(widths[0])]
    for w_prev, w in zip(widths[:-1], widths[1:], strict=True):
        pad = w // 4
        if w_prev + 2 * pad != w:
            raise ValueError(f"widths {w_prev} -> {w}: akamaster's option A pads {pad} channels on each side")
        orders.append(torch.cat([pad + orders[-1], torch.arange(pad), torch.arange(pad + w_prev, w)]))
    return orders


def _cifar_resnet_spec(arch: str) -> ArchSpec:
    s = spec(arch)
    if s.family != "cifar" or not s.residual:
        raise UserError(
            f"--from akamaster converts the CIFAR-10 ResNets (resnet20, resnet32, resnet44, resnet56, "
            f"resnet110, any 6n+2), not {s.name}"
        )
    return s


def _akamaster_names(our_key: str) -> str:
    """Our state-dict key -> akamaster's (``fc.*`` -> ``linear.*``; the rest is the same)."""
    return "linear." + our_key[len("fc."):] if our_key.startswith("fc.") else our_key


def _check_akamaster(sd: Mapping[str, Any], arch: str, n: int, ref: StateDict, what: str) -> None:
    """One-line UserErrors, starting with ``what`` (the file's name), for anything that is
    not an akamaster option-A CIFAR ResNet with ``n`` blocks per stage (``ref``: our
    net's names and shapes)."""
    bad_type = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad_type:
        raise UserError(f"{what}: not an akamaster state_dict (non-tensor entries {_few(bad_type)})")
    foreign = [k for k in sd if _AKA_FOREIGN.match(k)]
    if foreign:
        parts = [p for p, hit in (("fc.weight", "fc.weight" in sd),
                                  ("layer4", any(k.startswith("layer4.") for k in sd)),
                                  ("downsample shortcuts", any(".downsample." in k for k in foreign))) if hit]
        raise UserError(
            f"{what}: not an akamaster CIFAR ResNet, it has {', '.join(parts) or _few(foreign)} (an ImageNet "
            "ResNet such as torchvision's?); for torchvision weights use --from torchvision with an ImageNet --arch"
        )
    proj = [k for k in sd if _AKA_PROJECTION.match(k)]
    if proj:
        raise UserError(
            f"{what}: has projection shortcuts ({_few(proj)}: option B), not akamaster's option A; "
            "only option-A files convert"
        )
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = _AKA_BLOCK.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != [1, 2, 3]:
        raise UserError(
            f"{what}: not an akamaster CIFAR ResNet, it has stages {sorted(blocks) or 'none'} (layer1..layer3 "
            "expected)"
        )
    counts = {s: len(b) for s, b in blocks.items()}
    if len(set(counts.values())) != 1 or any(b != set(range(len(b))) for b in blocks.values()):
        shown = ", ".join(f"layer{s}: {c}" for s, c in sorted(counts.items()))
        raise UserError(f"{what}: not an akamaster CIFAR ResNet, its stages have {shown} blocks (equal counts expected)")
    k = counts[1]
    if k != n:
        raise UserError(
            f"{what}: holds ResNet-{6 * k + 2} ({k} blocks per stage), not {arch} ({n} blocks per stage); "
            f"pass --arch resnet{6 * k + 2}"
        )
    want = {_akamaster_names(key): tuple(t.shape) for key, t in ref.items() if not key.endswith("num_batches_tracked")}
    missing = [key for key in want if key not in sd]
    unexpected = [key for key in sd if key not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({_few(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({_few(unexpected)})")
        raise UserError(f"{what}: does not match the akamaster layout of {arch}: {'; '.join(parts)}")
    shapes = [f"{key} {tuple(sd[key].shape)} vs {shape}" for key, shape in want.items() if tuple(sd[key].shape) != shape]
    if shapes:
        raise UserError(f"{what}: tensors of the wrong shape for the akamaster {arch}: {_few(shapes, 2)}")


def from_akamaster(state_dict: Mapping[str, torch.Tensor], arch: str, what: str = "state_dict") -> StateDict:
    """Convert an akamaster/pytorch_resnet_cifar10 state dict to ours, exactly.

    Args:
        state_dict: their ``model.state_dict()`` (the ``"state_dict"`` of their ``.th``
            files): ``[module.]conv1.weight`` ``(16, 3, 3, 3)``, ``bn1.*``,
            ``layerS.I.{conv1,bn1,conv2,bn2}.*`` for S = 1..3 and I = 0..n-1,
            ``linear.weight`` ``(num_classes, 64)``, ``linear.bias``; BN ``weight``,
            ``bias``, ``running_mean``, ``running_var`` ``(C,)`` (``num_batches_tracked``
            optional and ignored). Any ``num_classes``.
        arch: ``resnet{6n+2}`` with the file's n (``resnet20``: n = 3).
        what: how error messages name the input (the file name).

    Returns:
        A new dict in our names and module order for ``models.build(arch,
        shortcut="A", num_classes=...)``: residual-stream channels permuted by
        :func:`akamaster_channel_orders` (new tensors), ``fc`` from ``linear``,
        ``num_batches_tracked`` 0. The converted net computes the same logits.

    Raises:
        UserError: one line naming the mismatch: not a CIFAR ResNet ``arch``, an ImageNet
            net's keys (``fc``, ``layer4``, ``downsample``), projection shortcuts, another
            number of blocks per stage than ``arch`` has (the right ``--arch`` named),
            missing/unexpected keys or wrong shapes.
    """
    s = _cifar_resnet_spec(arch)
    n = (s.depth - 2) // 6
    sd = {k: v for k, v in _strip_module_prefix(state_dict).items() if not k.endswith("num_batches_tracked")}
    lin = sd.get("linear.weight")
    classes = int(lin.shape[0]) if isinstance(lin, torch.Tensor) and lin.dim() == 2 else 10
    with torch.device("meta"):
        ref = build(s.name, shortcut="A", num_classes=classes).state_dict()
    _check_akamaster(sd, s.name, n, ref, what)
    from resnet_repro.models.cifar import CIFAR_WIDTHS

    orders = akamaster_channel_orders(CIFAR_WIDTHS)
    out: StateDict = {}
    for key, t in ref.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=t.dtype)
            continue
        v = sd[_akamaster_names(key)].detach()
        m = _AKA_BLOCK.match(key)
        if key.startswith("fc."):
            v = v[:, orders[2]] if key == "fc.weight" else v
        elif m is not None:
            stage, block = int(m.group(1)) - 1, int(m.group(2))
            sub = key[m.end():]
            stream = orders[stage]
            if sub == "conv1.weight":  # input: the block's input stream (the previous stage's for block 0)
                v = v[:, orders[stage - 1] if (block == 0 and stage > 0) else stream]
            elif sub.startswith("conv2.") or sub.startswith("bn2."):  # output: the stage's stream
                v = v[stream]
        # the stem (conv1, bn1) is stage 0, whose order is the identity; inner channels keep theirs
        out[key] = v.clone().contiguous()
    return out


def load_akamaster_weights(file: str | os.PathLike, arch: str) -> tuple[StateDict, dict[str, Any]]:
    """Read an akamaster ``.th`` file (``{"best_prec1", "state_dict"}``, or a bare state
    dict) with ``torch.load(weights_only=True)`` and convert it (:func:`from_akamaster`).

    Returns:
        ``(our state dict, provenance)``; provenance holds the source file's name and
        SHA-256, the repository, licence, training data and input normalisation, and,
        for the published files (recognised by SHA-256, :mod:`resnet_repro.published`),
        the test error their README reports on the original CIFAR-10.

    Raises:
        UserError: a missing or unreadable file, or one that is not the akamaster layout
            of ``arch`` (see :func:`from_akamaster`).
    """
    from resnet_repro import published
    from resnet_repro.fsio import sha256_file

    _cifar_resnet_spec(arch)
    p = Path(file)
    raw = _torch_load(p)
    best = raw.get("best_prec1") if isinstance(raw, Mapping) else None
    sd = from_akamaster(_unwrap_state_dict(raw, p), arch, p.name)
    digest = sha256_file(p)
    src = published.source("akamaster")
    known = published.identify(digest)
    prov: dict[str, Any] = {
        "source_format": "akamaster", "source_file": p.name, "source_sha256": digest,
        "source_repo": src["url"], "licence": src["licence"], "training_data": src["training_data"],
        "training": src["training"],
        "conversion": "exact: residual-stream channels permuted (their option A pads zeros before and after)",
        "published_checkpoint": known[1] if known else None,
        "published_test_error": published.checkpoints("akamaster")[known[1]]["published_test_error"] if known else None,
        "published_test_data": src["test_data"] if known else None,
        "best_prec1": float(best) if isinstance(best, (int, float)) and not isinstance(best, bool) else None,
    }
    return sd, prov


def akamaster_preprocessing() -> dict[str, Any]:
    """The input normalisation of akamaster's nets (from :mod:`resnet_repro.published`)."""
    from resnet_repro import published

    norm = published.source("akamaster")["normalization"]
    return {"kind": "per-channel mean/std", "input": "RGB in [0, 1]", "name": "ImageNet mean/std",
            "mean": list(norm["mean"]), "std": list(norm["std"])}
