"""The reference block under Table 6: published CIFAR-10 checkpoints on the data copy in use.

For each depth with a published checkpoint (akamaster/pytorch_resnet_cifar10's
ResNet-20/32/44/56, :mod:`resnet_repro.published`), the test error its README reports on
the original CIFAR-10 and the error the same net has on the copy our runs used, measured
by ``resnet-repro evaluate --dataset cifar10`` on the checkpoint converted by
``resnet-repro import-weights --from akamaster``. The difference is what the data copy
alone does to a fully trained net, so a reader can tell a recipe gap from a data gap.

Records are read from every ``cifar10-reference/*.json`` under the table's ``--runs``
roots (``make reference`` writes ``results/cifar10-reference/akamaster-resnetN.json``).
A record counts when it is a full-test-set evaluation (all 10,000 images) of the
published file itself (recognised by the SHA-256 the import recorded), with the weights'
own normalisation. Of those, the block takes the one on the copy most of our runs in
the table used (any copy if the table has no runs), fp32 before bf16.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from resnet_repro import published
from resnet_repro.evaluate_cifar import RECORD_FORMAT
from resnet_repro.runs import read_json

REFERENCE_DIR = "cifar10-reference"
FILL = "make reference"


def find_records(roots: Path | list[Path]) -> list[dict]:
    """The CIFAR-10 evaluation records under ``roots`` (files ``**/cifar10-reference/*.json``,
    or the ``*.json`` of a root that is itself such a folder), each with ``_path`` added.
    Unreadable files and files of another format are warned about and skipped."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    files: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        if root.name == REFERENCE_DIR:
            files.update(root.glob("*.json"))
        files.update(root.glob(f"**/{REFERENCE_DIR}/*.json"))
    out = []
    for f in sorted(files):
        rec = read_json(f)
        if rec is None or rec.get("format") != RECORD_FORMAT:
            warnings.warn(f"{f}: not a CIFAR-10 evaluation record ({RECORD_FORMAT}); skipped", stacklevel=2)
            continue
        out.append({**rec, "_path": str(f)})
    return out


def _usable(rec: dict, arch: str) -> bool:
    """A full-test-set record of the published ``arch`` file with its own normalisation."""
    try:
        prov = rec["weights"].get("provenance") or {}
        return (rec.get("dataset") == "cifar10" and rec["net"]["arch"] == arch
                and prov.get("source_format") == "akamaster" and prov.get("published_checkpoint") == arch
                and prov.get("source_sha256") == published.checkpoints("akamaster")[arch]["sha256"]
                and rec["normalization"].get("matches_weights") is True
                and rec.get("subset") is None and rec.get("images") == rec.get("images_total") == 10000
                and isinstance(rec.get("test_error"), (int, float)) and 0 <= rec["test_error"] <= 100)
    except (KeyError, TypeError, AttributeError):
        return False


def reference_block(roots: Path | list[Path], used: pd.DataFrame | None) -> object:
    """The reference block (a :class:`resnet_repro.report.tables.Table`) for Table 6.

    Args:
        roots: the table's ``--runs`` roots.
        used: the runs behind the table's cells (columns ``data_checksum``, ``data_copy``),
            to pick the records on the same copy; None or empty: any copy.

    Returns:
        A table with one row per published checkpoint: ``net``, ``checkpoint``, the
        published error on the original test set, its error on the copy (or "not measured
        yet" / "other copies only"; the caption names ``make reference``), the difference in points and the precision; the caption names
        the copy.
    """
    from resnet_repro.report.tables import Table

    records = find_records(roots)
    copies: list[str] = []
    if used is not None and not used.empty and "data_checksum" in used:
        copies = [c for c, _ in Counter(str(v) for v in used["data_checksum"].dropna()).most_common()]
    src = published.source("akamaster")
    rows = []
    shown_copies: list[str] = []
    for arch, ck in published.checkpoints("akamaster").items():
        cands = [r for r in records if _usable(r, arch)]
        same = [r for r in cands if r["data"].get("checksum") in copies[:1]] if copies else cands
        same.sort(key=lambda r: (r.get("precision") != "fp32", r["_path"]))
        depth = int(arch.removeprefix("resnet"))
        row = {"net": f"ResNet-{depth}", "checkpoint": ck["file"],
               "published error, original test set (%)": f"{ck['published_test_error']:.2f}"}
        if same:
            r = same[0]
            err = float(r["test_error"])
            row.update({"error on this copy (%)": f"{err:.2f}",
                        "difference (points)": f"{err - ck['published_test_error']:+.2f}",
                        "precision": str(r.get("precision"))})
            copy = str(r["data"].get("copy"))
            if copy not in shown_copies:
                shown_copies.append(copy)
        else:
            row.update({"error on this copy (%)": "other copies only" if cands else "not measured yet",
                        "difference (points)": "—", "precision": ""})
        rows.append(row)
    cap = (f"Not from the paper. Reference: the public pretrained CIFAR-10 ResNets of {src['name']} "
           f"({src['licence']}; trained on {src['training_data'].split(' (')[0]}, best test epoch kept), "
           "converted exactly by `resnet-repro import-weights --from akamaster` and evaluated with "
           "`resnet-repro evaluate --dataset cifar10` on all 10,000 test images of the copy our runs used, with "
           "their own normalisation (ImageNet mean/std). The difference is the data copy's effect on a fully "
           f"trained net. Records: {REFERENCE_DIR}/*.json under the runs folder; `{FILL}` measures them.")
    if shown_copies:
        cap = f"Copy: {', '.join(shown_copies)}. " + cap
    frame = pd.DataFrame(rows)
    return Table(0, "Reference: published checkpoints on the data copy in use", frame, cap, [], [], "6-reference")
