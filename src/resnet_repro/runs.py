"""The run-directory format: write, read, aggregate.

A run is a directory::

    config.json     {"config": RunConfig fields, "provenance": {...}}  (enough to rerun)
    metrics.jsonl   one JSON object per event (see below)
    summary.json    final figures and status: complete | interrupted | diverged | running
    responses.json  optional, per-layer response std (Fig. 7)
    checkpoints/    never committed

``metrics.jsonl`` events (every event has ``event`` and ``iteration``):

* ``start`` / ``resume``: ``wall_s`` so far, precision and why, threads.
* ``train``: ``lr``, ``train_loss``, ``train_error`` (%, over the last logging window, on
  augmented mini-batches in training mode), ``images_per_s``, ``wall_s``.
* ``eval``: ``train_error`` (window), ``val_error`` and ``test_error`` (%).
* ``warmup_end``: why the warm-up ended (``train_error`` below the threshold or the cap).
* ``end``: ``status``.

Iterations are 1-based in the log: ``iteration`` k means k SGD steps have been taken.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from resnet_repro.errors import UserError
from resnet_repro.fsio import append_line, atomic_write_json

STATUSES = ("complete", "interrupted", "diverged", "running")


class RunLock:
    """An exclusive lock on a run directory: ``.lock`` holding the owner's pid.

    A lock whose pid no longer runs is stale and taken over.

    Raises:
        UserError: on ``acquire`` if another live process holds the run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise UserError(
                        f"run {self.path.parent} is in use by process {pid}; wait for it, or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale lock
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return self
        raise UserError(f"cannot lock run {self.path.parent}; remove {self.path} if no process uses it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_config(run_dir: Path, config: dict, provenance: dict) -> None:
    """Atomically write ``config.json``."""
    atomic_write_json(Path(run_dir) / "config.json", {"config": config, "provenance": provenance})


def write_summary(run_dir: Path, summary: dict) -> None:
    """Atomically write ``summary.json``."""
    atomic_write_json(Path(run_dir) / "summary.json", summary)


def log_event(run_dir: Path, event: dict) -> None:
    """Append one event to ``metrics.jsonl`` (fsynced)."""
    append_line(Path(run_dir) / "metrics.jsonl", json.dumps(event, sort_keys=True))


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None if missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_metrics(run_dir: Path) -> list[dict]:
    """The events of ``metrics.jsonl``; a truncated or corrupt line (a run killed
    mid-write) is skipped with a warning naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    try:
        raw = path.read_bytes()
    except OSError:
        return out
    for i, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            warnings.warn(f"{path}:{i}: skipped a corrupt or truncated line", stacklevel=2)
            continue
        out.append(ev)
    return out


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def find_runs(roots: list[Path] | Path) -> list[Path]:
    """All run directories (those with a ``config.json``) under ``roots``, sorted."""
    if isinstance(roots, (str, Path)):
        roots = [Path(roots)]
    found = set()
    for root in roots:
        root = Path(root)
        if is_run_dir(root):
            found.add(root)
        elif root.is_dir():
            found.update(p.parent for p in root.rglob("config.json"))
    return sorted(found)


def load_runs(roots: list[Path] | Path) -> pd.DataFrame:
    """One row per run under ``roots``: the config fields, provenance (``hardware``,
    ``data_source_kind``), and the summary (``status``, ``final_train_error``,
    ``final_val_error``, ``final_test_error``, ``wall_s``, ``images_per_s``).

    Runs whose config.json is unreadable are skipped with a warning.
    """
    rows: list[dict[str, Any]] = []
    for d in find_runs(roots):
        cfg = read_json(d / "config.json")
        if not cfg or not isinstance(cfg.get("config"), dict):
            warnings.warn(f"{d}/config.json unreadable; run skipped", stacklevel=2)
            continue
        row = dict(cfg["config"])
        prov = cfg.get("provenance") or {}
        hw = prov.get("hardware") or {}
        row["hardware"] = hw.get("gpu") or hw.get("cpu")
        row["data_source_kind"] = prov.get("data_source_kind")
        summ = read_json(d / "summary.json") or {}
        row["status"] = summ.get("status", "unknown")
        for k in ("final_train_error", "final_val_error", "final_test_error", "wall_s", "images_per_s",
                  "iterations_done"):
            row[k] = summ.get(k)
        row["run_dir"] = str(d)
        rows.append(row)
    return pd.DataFrame(rows)


def metrics_frame(run_dir: Path, event: str | None = None) -> pd.DataFrame:
    """``metrics.jsonl`` as a DataFrame, optionally only events of one kind."""
    evs = read_metrics(run_dir)
    if event is not None:
        evs = [e for e in evs if e.get("event") == event]
    return pd.DataFrame(evs)
