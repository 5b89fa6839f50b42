"""Initial weights for a CIFAR-10 run (``resnet-repro train --init-weights FILE``): fine-tuning.

Accepted files (read with ``torch.load(weights_only=True)``, never code):

* a file of ``resnet-repro import-weights`` holding a CIFAR net, e.g. akamaster's
  ResNet-20 (``--from akamaster``); it records the input normalisation the weights were
  trained with (akamaster: the ImageNet mean/std per channel);
* a checkpoint of one of our CIFAR runs (``checkpoints/final.pt`` or ``iter-*.pt``); our
  runs subtract the per-pixel mean of their training images (paper Sec. 4.2), and a run
  that itself started from imported weights records its normalisation in its
  checkpoints.

Input normalisation. The first conv and the BN statistics of a trained net are fitted to
its input scale, so a fine-tuning run feeds its inputs in the same normalisation: the
run's config records it as ``input_norm`` (None: the paper's per-pixel mean), and the run
uses it for training, evaluation and Fig. 7 responses. Folding akamaster's mean/std into
the first conv instead would not be exact: dividing by the std folds exactly, but the
mean offset meets the conv's zero padding, so a folded net differs at the border pixels
(and our per-pixel mean is not a per-channel constant either). Augmentation pads the
normalised image with zeros, i.e. with the mean colour (akamaster pads black before
normalising); that only changes the 4-pixel border of some crops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnet_repro.errors import UserError


@dataclass
class InitWeights:
    """What a ``--init-weights`` file holds.

    Attributes:
        arch: canonical CIFAR net name, e.g. ``"resnet20"``.
        shortcut: ``"A"``, ``"B"``, ``"C"`` or None (plain net).
        sha256: of the file.
        input_norm: the per-channel normalisation the weights were trained with
            (:class:`resnet_repro.train.config.InputNorm`), or None for the paper's
            per-pixel mean subtraction.
        state_dict: our names, CPU tensors.
        kind: ``"imported"`` or ``"checkpoint"``.
    """

    arch: str
    shortcut: str | None
    sha256: str
    input_norm: Any
    state_dict: dict[str, torch.Tensor]
    kind: str


def _norm_from(pre: object, name: str):
    """An :class:`InputNorm` from a recorded ``preprocessing``/``input_norm`` dict, or None."""
    from resnet_repro.train.config import InputNorm

    if pre is None:
        return None
    if not isinstance(pre, Mapping):
        raise UserError(f"{name}: its recorded input normalisation is a {type(pre).__name__}, not a dict")
    try:
        return InputNorm(mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]),
                         name=str(pre.get("name") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{name}: its recorded input normalisation is not 3 means and 3 stds ({exc})") from None


def read_init_weights(path: str | os.PathLike) -> InitWeights:
    """Read and check a ``--init-weights`` file (see the module docstring).

    Raises:
        UserError: a missing or unreadable file, a file that is neither an import nor a
            CIFAR checkpoint of this project, an ImageNet net, or not 10 classes.
    """
    from resnet_repro.fsio import sha256_file
    from resnet_repro.models.convert import IMPORT_FORMAT, _torch_load
    from resnet_repro.models.registry import spec

    p = Path(path)
    obj = _torch_load(p)
    name = str(p)
    if isinstance(obj, Mapping) and obj.get("format") == IMPORT_FORMAT:
        arch, kind = obj.get("arch"), "imported"
        kwargs = obj.get("build_kwargs") if isinstance(obj.get("build_kwargs"), Mapping) else {}
        shortcut, sd = kwargs.get("shortcut"), obj.get("state_dict")
        classes = obj.get("num_classes")
        norm = _norm_from(obj.get("preprocessing"), name)
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and isinstance(obj.get("arch"), str):
        arch, kind = obj["arch"], "checkpoint"
        shortcut, sd, classes = obj.get("shortcut"), obj["model"], obj.get("num_classes", 10)
        norm = _norm_from(obj.get("input_norm"), name)
    else:
        raise UserError(f"{name} is neither a file of `resnet-repro import-weights` nor a checkpoint of a CIFAR run "
                        "(checkpoints/final.pt); import published weights first")
    if not isinstance(arch, str):
        raise UserError(f"{name} names no architecture; import it again with `resnet-repro import-weights`")
    s = spec(arch)
    if s.family != "cifar":
        raise UserError(f"{name} holds {s.name}, an ImageNet net; --init-weights starts CIFAR-10 runs only")
    if classes != 10:
        raise UserError(f"{name} has {classes} outputs; CIFAR-10 training needs 10")
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{name} holds no state dict of tensors")
    return InitWeights(s.name, shortcut if s.residual else None, sha256_file(p), norm, dict(sd), kind)


def load_init_weights(model: torch.nn.Module, cfg) -> None:
    """Load ``cfg.init_weights`` into ``model`` (before training starts), checking that the
    file is still the one the config names (``cfg.init_weights_sha256``).

    Raises:
        UserError: the file is missing or changed, or its tensors do not fit the net.
    """
    init = read_init_weights(cfg.init_weights)
    if cfg.init_weights_sha256 and init.sha256 != cfg.init_weights_sha256:
        raise UserError(f"--init-weights {cfg.init_weights} changed since the run was configured (sha256 "
                        f"{init.sha256[:12]} vs {cfg.init_weights_sha256[:12]}); point it at the original file")
    try:
        model.load_state_dict(init.state_dict)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--init-weights {cfg.init_weights} does not fit {cfg.arch} (shortcut "
                        f"{cfg.shortcut or '-'}): {first}") from None
