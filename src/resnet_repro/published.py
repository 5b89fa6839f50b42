"""Published numbers of third-party reference checkpoints, as data (not the paper's).

The values come from ``refdata/akamaster-cifar10.json``: the public pretrained CIFAR-10
ResNet-20/32/44/56 of akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), their file
checksums, their input normalisation and the test errors their README reports on the
original CIFAR-10 test set. They are a yardstick for a data copy and an evaluation path
(``resnet-repro import-weights --from akamaster``, ``resnet-repro evaluate --dataset
cifar10``, the reference block under Table 6), never values of He et al. 2015, which
live in :mod:`resnet_repro.paper`.

``refdata/recipes-cifar10.json`` holds the CIFAR-10 training recipes of two public
reproductions (akamaster/pytorch_resnet_cifar10 and facebookarchive/fb.resnet.torch),
each fact with the file it was read from: the ``--schedule akamaster`` and ``--schedule
fb`` presets (:mod:`resnet_repro.train.schedule`) are built from it (:func:`recipe`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

DATA_FILE = "refdata/akamaster-cifar10.json"
RECIPES_FILE = "refdata/recipes-cifar10.json"


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The whole file as a dict (keys ``about``, ``sources``)."""
    return json.loads(resources.files("resnet_repro").joinpath(DATA_FILE).read_text())


def source(name: str = "akamaster") -> dict[str, Any]:
    """One source's record: ``name``, ``url``, ``licence``, ``normalization`` (``mean``,
    ``std``: 3 floats each, RGB, 0-1 scale), ``training_data``, ``training``,
    ``checkpoints`` (see :func:`checkpoints`).

    Raises:
        KeyError: for a source not in the file.
    """
    return load()["sources"][name]


def checkpoints(name: str = "akamaster") -> dict[str, dict[str, Any]]:
    """``{arch: {"file", "sha256", "published_test_error" (%), "params", ...}}`` of a
    source, in depth order (``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``)."""
    cks = source(name)["checkpoints"]
    return dict(sorted(cks.items(), key=lambda kv: int(kv[0].removeprefix("resnet"))))


def identify(sha256: str) -> tuple[str, str] | None:
    """``(source, arch)`` of the published file with this SHA-256, or None for any other
    file (a retrained or fine-tuned net in the same layout)."""
    for name, src in load()["sources"].items():
        for arch, ck in src["checkpoints"].items():
            if ck.get("sha256") == sha256:
                return name, arch
    return None


@lru_cache(maxsize=1)
def recipes() -> dict[str, dict[str, Any]]:
    """``{preset: recipe}`` of ``refdata/recipes-cifar10.json`` (``akamaster``, ``fb``)."""
    return json.loads(resources.files("resnet_repro").joinpath(RECIPES_FILE).read_text())["presets"]


def recipe(name: str) -> dict[str, Any]:
    """One public recipe: ``epochs``, ``batch``, ``lr``, ``lr_gamma``,
    ``drop_after_epochs`` (the lr is divided by ``1/lr_gamma`` after that many complete
    epochs), ``momentum``, ``nesterov``, ``weight_decay``, ``train_images``,
    ``drop_last``, ``warmup`` (None, or ``nets``, ``lr``, ``epochs``), ``reported``,
    ``name``, ``url``, ``read_from`` (where each fact comes from).

    Raises:
        KeyError: for a name not in the file.
    """
    return recipes()[name]
