"""The paper's reported numbers and recipes, as data.

The values come from ``paperdata/resnet-1512.03385.json``, a transcription of the arXiv
v1 PDF of He et al., "Deep Residual Learning for Image Recognition" (1512.03385). Every
accessor names the table or section it reads. Nothing in this package types a paper
number in code: tables, tests and reports read them from here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The whole transcription as a dict (keys ``table1`` .. ``table8``, ``figures``,
    ``recipes``, ``appendix_tables``, ``paper``)."""
    text = resources.files("resnet_repro").joinpath("paperdata/resnet-1512.03385.json").read_text()
    return json.loads(text)


def table(n: int) -> dict[str, Any]:
    """Paper Table ``n`` (1..8) as transcribed.

    Raises:
        KeyError: if the paper has no Table ``n``.
    """
    return load()[f"table{n}"]


def cifar_table6() -> dict[int, dict[str, Any]]:
    """Table 6 (CIFAR-10 test error, %), ResNet rows only, keyed by depth.

    Returns ``{depth: {"params": float, "error": float, "best": float|None,
    "mean": float|None, "std": float|None}}``. For ResNet-110 the paper reports the best
    of 5 runs (6.43) and mean +- std (6.61 +- 0.16); ``error`` is then the best.
    """
    out: dict[int, dict[str, Any]] = {}
    for name, layers, params, err in table(6)["rows"]:
        if name != "ResNet":
            continue
        row: dict[str, Any] = {"params": params, "best": None, "mean": None, "std": None}
        if isinstance(err, dict):
            row.update({k: err.get(k) for k in ("best", "mean", "std")})
            row["error"] = err["best"]
        else:
            row["error"] = err
        out[int(layers)] = row
    return out


def figure(n: int) -> dict[str, Any]:
    """Description and read-off values of paper Figure ``n``."""
    return load()["figures"][f"figure{n}"]


def recipe(dataset: str) -> dict[str, Any]:
    """Training recipe for ``cifar10`` (Sec. 4.2) or ``imagenet`` (Sec. 3.4)."""
    return load()["recipes"][dataset]
