"""Checkpoints: plain tensors and Python values only, saved atomically with a SHA-256
index, loaded with ``torch.load(weights_only=True)``.

Layout inside a run directory::

    checkpoints/index.json        {"latest": [...names, newest last], "sha256": {name: hex}}
    checkpoints/iter-000250.pt    model, optimizer, iteration, RNG-free loop state
    checkpoints/final.pt          the model at the end of the run

The two newest iteration checkpoints are kept, so a corrupt newest one (a disk that
filled, a copy cut short) falls back to the previous one with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_bytes, atomic_write_json

KEEP = 2


def _index_path(ckpt_dir: Path) -> Path:
    return ckpt_dir / "index.json"


def read_index(ckpt_dir: Path) -> dict:
    """The checkpoint index (``{"latest": [...], "sha256": {...}}``); empty if absent or
    unreadable."""
    try:
        idx = json.loads(_index_path(ckpt_dir).read_text())
        if isinstance(idx, dict) and isinstance(idx.get("latest"), list) and isinstance(idx.get("sha256"), dict):
            return idx
    except (OSError, ValueError):
        pass
    return {"latest": [], "sha256": {}}


def save(ckpt_dir: Path, name: str, state: dict[str, Any], latest: bool = True) -> Path:
    """Save ``state`` as ``ckpt_dir/name`` atomically and record its checksum.

    With ``latest=True`` it becomes the newest resume point and older iteration
    checkpoints beyond :data:`KEEP` are deleted (only after the new one is safely
    written and indexed).

    Raises:
        OSError: if writing fails (disk full); the previous checkpoint and index are
            untouched.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = ckpt_dir / name
    atomic_write_bytes(path, data)
    idx = read_index(ckpt_dir)
    idx["sha256"][name] = hashlib.sha256(data).hexdigest()
    dropped: list[str] = []
    if latest:
        idx["latest"] = [n for n in idx["latest"] if n != name] + [name]
        dropped, idx["latest"] = idx["latest"][:-KEEP], idx["latest"][-KEEP:]
        for n in dropped:
            idx["sha256"].pop(n, None)
    atomic_write_json(_index_path(ckpt_dir), idx)
    for n in dropped:
        (ckpt_dir / n).unlink(missing_ok=True)
    return path


def load_verified(path: Path, expected_sha: str | None, map_location: str | torch.device = "cpu") -> dict:
    """Load one checkpoint file, checking its SHA-256 when known.

    Raises:
        ValueError: if the file is missing, truncated or its checksum differs.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path.name}: cannot read ({exc.strerror})") from None
    if expected_sha is not None and hashlib.sha256(data).hexdigest() != expected_sha:
        raise ValueError(f"{path.name}: checksum mismatch (truncated or corrupt)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad pickles/zip files
        raise ValueError(f"{path.name}: not a loadable checkpoint ({type(exc).__name__})") from None


def load_latest(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest intact resume checkpoint, falling back to older ones with a warning;
    None if the directory has none.

    Raises:
        UserError: if checkpoints exist but none is intact.
    """
    idx = read_index(ckpt_dir)
    names = list(reversed(idx["latest"]))
    if not names:
        return None
    problems = []
    for n in names:
        try:
            state = load_verified(ckpt_dir / n, idx["sha256"].get(n), map_location)
        except ValueError as exc:
            problems.append(str(exc))
            warnings.warn(f"checkpoint {ckpt_dir / n} unusable ({exc}); trying the previous one", stacklevel=2)
            continue
        return state
    raise UserError(f"no intact checkpoint in {ckpt_dir} ({'; '.join(problems)}); start the run again without --resume in a new directory")
