"""Checkpoints: plain tensors and Python values only, saved atomically with a SHA-256
index, loaded with ``torch.load(weights_only=True)``.

Layout inside a run directory::

    checkpoints/index.json        {"latest": [...names, newest last], "sha256": {name: hex}}
    checkpoints/iter-000250.pt    model, optimizer, iteration, RNG-free loop state
    checkpoints/final.pt          the model at the end of the run

The two newest iteration checkpoints are kept, so a corrupt newest one (a disk that
filled, a copy cut short) falls back to the previous one with a warning. Names in the
index must look like ``iter-NNNNNNN.pt`` or ``final.pt``: an index from elsewhere cannot
make a save delete, or a load read, any other file. A checkpoint is treated as
untrusted input: it is read with ``weights_only=True`` (tensors and plain Python values
only, never code), its fields are checked, and :func:`check_compatible` refuses one made
for another architecture, shortcut option or class count.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_bytes, atomic_write_json

KEEP = 2


def _index_path(ckpt_dir: Path) -> Path:
    return ckpt_dir / "index.json"


ITER_NAME = re.compile(r"iter-\d{7,}\.pt")
_SHA = re.compile(r"[0-9a-f]{64}")


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and (name == "final.pt" or ITER_NAME.fullmatch(name) is not None)


def read_index(ckpt_dir: Path) -> dict:
    """The checkpoint index (``{"latest": [...], "sha256": {...}}``); empty if absent or
    unreadable. Entries with names other than ``iter-NNNNNNN.pt`` / ``final.pt`` or with
    malformed checksums are dropped."""
    try:
        idx = json.loads(_index_path(ckpt_dir).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {"latest": [], "sha256": {}}
    if not isinstance(idx, dict) or not isinstance(idx.get("latest"), list) or not isinstance(idx.get("sha256"), dict):
        return {"latest": [], "sha256": {}}
    latest = [n for n in idx["latest"] if _valid_name(n) and n != "final.pt"]
    sha = {n: h for n, h in idx["sha256"].items() if _valid_name(n) and isinstance(h, str) and _SHA.fullmatch(h)}
    return {"latest": latest, "sha256": sha}


def _index_readable(path: Path) -> bool:
    try:
        idx = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(idx, dict) and isinstance(idx.get("latest"), list) and isinstance(idx.get("sha256"), dict)


def save(ckpt_dir: Path, name: str, state: dict[str, Any], latest: bool = True) -> Path:
    """Save ``state`` as ``ckpt_dir/name`` atomically and record its checksum.

    With ``latest=True`` it becomes the newest resume point and older iteration
    checkpoints beyond :data:`KEEP` are deleted (only after the new one is safely
    written and indexed).

    Raises:
        OSError: if writing fails (disk full); the previous checkpoint and index are
            untouched.
    """
    if not _valid_name(name):
        raise ValueError(f"checkpoint name {name!r} is not iter-NNNNNNN.pt or final.pt")
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


# The fields of a resume checkpoint (written by ``train.loop``) and their types.
RESUME_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (dict,), "optimizer": (dict,), "iteration": (int,), "warmup_active": (bool,), "window": (list,),
    "wall_s": (int, float), "train_s": (int, float), "metrics_bytes": (int,), "arch": (str,),
    "shortcut": (str, type(None)), "num_classes": (int,),
}


def check_resume_state(state: object, name: str = "checkpoint") -> dict:
    """Check that a loaded checkpoint has the fields and types of a resume point
    (model and optimizer state, counters); return it.

    Raises:
        ValueError: naming the first missing or mistyped field.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{name}: holds a {type(state).__name__}, not a checkpoint dict")
    for key, types in RESUME_FIELDS.items():
        if key not in state:
            raise ValueError(f"{name}: no {key!r} field")
        v = state[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ValueError(f"{name}: field {key!r} is a {type(v).__name__}")
    if state["iteration"] < 0 or state["metrics_bytes"] < 0:
        raise ValueError(f"{name}: negative counters")
    if len(state["window"]) != 3 or not all(isinstance(v, (int, float)) for v in state["window"]):
        raise ValueError(f"{name}: malformed 'window' (expected 3 numbers)")
    if "metrics_sha256" in state and not isinstance(state["metrics_sha256"], str):
        raise ValueError(f"{name}: field 'metrics_sha256' is a {type(state['metrics_sha256']).__name__}")
    if not isinstance(state.get("last_eval") or {}, dict):
        raise ValueError(f"{name}: field 'last_eval' is a {type(state['last_eval']).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise ValueError(f"{name}: 'model' is not a state dict of tensors")
    return state


def _describe(arch: object, shortcut: object, num_classes: object) -> str:
    return f"{arch} with shortcut {shortcut if shortcut else '-'} and {num_classes} classes"


def check_compatible(state: dict, arch: str, shortcut: str | None, num_classes: int, where: str | Path) -> None:
    """Refuse a checkpoint made for another network.

    Args:
        state: a loaded checkpoint with ``arch``, ``shortcut``, ``num_classes`` fields.
        arch / shortcut / num_classes: what the caller is about to load it into.
        where: the checkpoint's path, for the message.

    Raises:
        UserError: naming both networks if the architecture, the shortcut option (paper
            Sec. 3.3: A, B, C) or the class count differ, or if the fields are missing.
    """
    got = (state.get("arch"), state.get("shortcut"), state.get("num_classes"))
    want = (arch, shortcut, num_classes)
    if got != want:
        raise UserError(
            f"checkpoint {where} is for {_describe(*got)}, but this run is {_describe(*want)}; "
            "it belongs to another run: use that run's directory, or start this one without --resume in a new directory"
        )


def has_checkpoints(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds an index or any ``iter-*.pt`` / ``final.pt`` file."""
    try:
        return any(p.name == "index.json" or _valid_name(p.name) for p in Path(ckpt_dir).iterdir())
    except OSError:
        return False


def log_position(metrics_path: Path) -> dict:
    """Where a checkpoint leaves the run's log: ``{"metrics_bytes": size,
    "metrics_sha256": digest of those bytes}``; a resume truncates the log back to it
    (:func:`log_prefix`)."""
    data = Path(metrics_path).read_bytes() if Path(metrics_path).exists() else b""
    return {"metrics_bytes": len(data), "metrics_sha256": hashlib.sha256(data).hexdigest()}


def log_prefix(metrics_path: Path, state: dict) -> bytes:
    """The part of the log that a resume from ``state`` keeps: its first
    ``metrics_bytes`` bytes, checked against ``metrics_sha256`` when the checkpoint has one.

    Raises:
        UserError: if the log is shorter than that or its bytes differ (the log was
            damaged, cut or replaced after the checkpoint).
    """
    keep = int(state["metrics_bytes"])
    raw = Path(metrics_path).read_bytes() if Path(metrics_path).exists() else b""
    want = state.get("metrics_sha256")
    if len(raw) < keep or (isinstance(want, str) and hashlib.sha256(raw[:keep]).hexdigest() != want):
        raise UserError(
            f"{metrics_path} does not match the checkpoint at iteration {state['iteration']} (it was cut, damaged "
            "or replaced); restore it, or start the run again without --resume in a new directory"
        )
    return raw[:keep]


def load_latest(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest intact resume checkpoint, falling back to older ones with a warning;
    None if there is none to resume from.

    A checkpoint is intact if it is in the index, its SHA-256 matches the index and it
    holds the fields of :func:`check_resume_state`. Checkpoint files without an index
    (a process killed while writing its very first checkpoint, before the index) cannot
    be verified: they are ignored with a warning, and the run starts from iteration 0
    (which, training being deterministic, ends with the same numbers).

    Raises:
        UserError: if checkpoints are indexed but none is intact, or if ``index.json``
            exists but is damaged (the checkpoints could not be verified).
    """
    index_file = _index_path(ckpt_dir)
    if index_file.exists() and not _index_readable(index_file):
        raise UserError(
            f"{index_file} is damaged, so the checkpoints beside it cannot be verified; restore it, or start "
            "the run again without --resume in a new directory"
        )
    idx = read_index(ckpt_dir)
    names = list(reversed(idx["latest"]))
    if not names:
        try:
            stray = sorted(p.name for p in Path(ckpt_dir).iterdir() if ITER_NAME.fullmatch(p.name))
        except OSError:
            stray = []
        if stray:
            warnings.warn(f"{ckpt_dir} holds {', '.join(stray)} but no index to verify them; ignoring them and "
                          "starting from iteration 0", stacklevel=2)
        return None
    problems = []
    for n in names:
        try:
            sha = idx["sha256"].get(n)
            if sha is None:
                raise ValueError(f"{n}: no checksum in the index")
            state = check_resume_state(load_verified(ckpt_dir / n, sha, map_location), n)
        except ValueError as exc:
            problems.append(str(exc))
            warnings.warn(f"checkpoint {ckpt_dir / n} unusable ({exc}); trying the previous one", stacklevel=2)
            continue
        return state
    raise UserError(f"no intact checkpoint in {ckpt_dir} ({'; '.join(problems)}); start the run again without --resume in a new directory")
