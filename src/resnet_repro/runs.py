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

import errno
import json
import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from resnet_repro.errors import UserError
from resnet_repro.fsio import append_line, atomic_write_json, remove_stale_temps

STATUSES = ("complete", "interrupted", "diverged", "running")
# What load_runs' status column may hold besides them: no usable summary, or files that
# disagree with each other (resnet_repro.runcheck).
ROW_STATUSES = (*STATUSES, "unknown", "inconsistent")


class RunLock:
    """An exclusive lock on a run directory: ``.lock``, held with ``flock`` by the
    training process and holding its pid and start time.

    The kernel drops the ``flock`` when its process dies, however it dies (SIGKILL
    included), so a lock left by a killed run is taken over at once; the pid and start
    time only name the owner in the refusal message and recognise a reused pid. Where
    ``flock`` is not available (some network file systems) a lock is held while the
    process it names is alive. A ``.lock`` written by hand with a bare live pid is
    respected.

    Raises:
        UserError: on ``acquire`` if another live process holds the run (the message
            names its pid and command line), or if ``.lock`` cannot be created.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (creating the run directory if needed) and record this process
        in ``.lock``; see the class docstring for what it raises."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(10):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UserError(f"{self.path} is a symbolic link; remove it (a run lock is a plain file)") from None
                raise UserError(f"cannot create {self.path} ({exc.strerror}); choose a writable --out") from None
            try:
                got = _try_flock(fd)
                if got is False:
                    owner = _read_owner(self.path)
                    for _ in range(20):  # the holder writes its pid right after locking
                        if owner is not None:
                            break
                        time.sleep(0.01)
                        owner = _read_owner(self.path)
                    raise UserError(_in_use(self.path.parent, owner))
                if got and not _same_file(fd, self.path):
                    os.close(fd)  # the lock file was replaced between open and flock: retry
                    continue
                owner = _parse_owner(_read_fd(fd))
                if owner is not None and owner[0] != os.getpid() and _owner_alive(owner, bare_pid_alive=True,
                                                                              flock_held=bool(got)):
                    raise UserError(_in_use(self.path.parent, owner))
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{os.getpid()} {_start_time(os.getpid()) or 0}\n".encode())
                os.fsync(fd)
            except BaseException:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise
            self._fd = fd
            self.held = True
            return self
        raise UserError(f"cannot lock run {self.path.parent}; remove {self.path} if no process uses it")

    def release(self) -> None:
        """Remove ``.lock`` (if it is still ours) and drop the ``flock``; a no-op if not held."""
        if not self.held:
            return
        try:
            if self._fd is not None and _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)  # unlink while still holding the flock
        finally:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: no flock here."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256)


def _read_owner(path: Path) -> tuple[int, int | None] | None:
    try:
        with open(path, "rb") as fh:
            return _parse_owner(fh.read(256))
    except OSError:
        return None


def _parse_owner(raw: bytes) -> tuple[int, int | None] | None:
    """``(pid, start_time or None)`` from a lock file's bytes; None if unreadable."""
    parts = raw.decode("ascii", "replace").split()
    try:
        pid = int(parts[0])
        start = int(parts[1]) if len(parts) > 1 else None
    except (IndexError, ValueError):
        return None
    return (pid, start or None) if pid > 0 else None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat.rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = "".join(c if c.isprintable() else " " for c in raw.replace(b"\0", b" ").decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:97] + "..."


def _owner_alive(owner: tuple[int, int | None], bare_pid_alive: bool, flock_held: bool) -> bool:
    """Whether the process a lock file names still runs (and owns the lock)."""
    pid, start = owner
    if not _pid_alive(pid):
        return False
    if start is None:
        return bare_pid_alive  # a bare pid (hand-written or an older version): trust it
    if flock_held:
        return False  # our format and we hold the flock: its writer is gone (or the pid was reused)
    now = _start_time(pid)
    return now is None or now == start


def _in_use(run_dir: Path, owner: tuple[int, int | None] | None) -> str:
    if owner is None:
        return f"run {run_dir} is in use by another process; wait for it to finish or stop it first"
    pid = owner[0]
    cmd = _cmdline(pid)
    what = f"process {pid}" + (f" ({cmd})" if cmd else "")
    hint = f"wait for it to finish, or stop it first (kill {pid})"
    if owner[1] is None:
        hint += f"; if that process is not training this run, delete {run_dir / '.lock'}"
    return f"run {run_dir} is in use by {what}; {hint}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def run_in_progress(run_dir: Path) -> bool:
    """True if a live process holds the run's lock (read from ``.lock`` without locking
    it, so readers never block a trainer)."""
    owner = _read_owner(Path(run_dir) / ".lock")
    return owner is not None and _owner_alive(owner, bare_pid_alive=True, flock_held=False)


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "responses.json", "checkpoints", ".lock")


def prepare_run_dir(run_dir: Path) -> list[Path]:
    """Check a locked run directory before training writes into it, and remove the
    temporary files of writes that were killed; returns the removed paths.

    Raises:
        UserError: if one of the run's files or ``checkpoints/`` is a symbolic link
            (writes would land outside the run directory) or not of its kind.
    """
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_symlink():
            raise UserError(f"{p} is a symbolic link; a run directory holds only its own files: remove it, "
                            "or choose another --out or --name")
        if p.exists() and (p.is_dir() != (name == "checkpoints")):
            kind = "a directory" if p.is_dir() else "a file"
            raise UserError(f"{p} is {kind}, which a run directory never holds there; remove it, "
                            "or choose another --out or --name")
    return remove_stale_temps(run_dir) + remove_stale_temps(run_dir / "checkpoints")


def write_config(run_dir: Path, config: dict, provenance: dict) -> None:
    """Atomically write ``config.json``."""
    atomic_write_json(Path(run_dir) / "config.json", {"config": config, "provenance": provenance})


def write_summary(run_dir: Path, summary: dict) -> None:
    """Atomically write ``summary.json``."""
    atomic_write_json(Path(run_dir) / "summary.json", summary)


def summary_problem(summary: dict, iterations: int | None = None) -> str | None:
    """What is wrong with a ``summary.json`` object, or None: an unknown status, counts
    that are not integers, errors and times that are not finite numbers, errors outside
    [0, 100] % (:func:`summary_field_problem`), or (with ``iterations``) a ``complete``
    run that did not do them all."""
    if summary.get("status") not in STATUSES:
        return f"status {summary.get('status')!r}"
    done = summary.get("iterations_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        return f"iterations_done {done!r}"
    if iterations is not None and summary["status"] == "complete" and done != iterations:
        return f"complete after {done} of {iterations} iterations"
    for k in ("final_train_error", "final_val_error", "final_test_error", "images_per_s"):
        why = summary_field_problem(k, summary.get(k))
        if why:
            return why
    if _number(summary.get("wall_s")) is None:
        return f"wall_s {summary.get('wall_s')!r:.40}"
    return None


def log_event(run_dir: Path, event: dict) -> None:
    """Append one event to ``metrics.jsonl`` (fsynced)."""
    append_line(Path(run_dir) / "metrics.jsonl", json.dumps(event, sort_keys=True))


def thread_count(v: Any) -> int | None:
    """``v`` if it is a usable CPU thread count (an int >= 1, not a bool), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def chosen_threads(run_dir: Path) -> int | None:
    """The thread count a run was started with by ``--threads`` (its config.json), or
    None where it was started with the torch default or the config is unreadable."""
    config = (read_json(Path(run_dir) / "config.json") or {}).get("config")
    return thread_count(config.get("threads")) if isinstance(config, dict) else None


def recorded_threads(run_dir: Path, config: dict | None = None) -> int | None:
    """The CPU thread count a run trained with, or None if it recorded none.

    The count chosen (``threads`` of ``config``, the run's stored config section, read
    from ``config.json`` when not given) where set; for a run started with the torch
    default (``threads`` null) the count it actually used: the first ``start`` event of
    ``metrics.jsonl``, else ``summary.json``'s ``threads``.
    """
    run_dir = Path(run_dir)
    if config is None:
        config = (read_json(run_dir / "config.json") or {}).get("config")
    if isinstance(config, dict) and thread_count(config.get("threads")) is not None:
        return config["threads"]
    with warnings.catch_warnings():  # a damaged log is reported by the commands that read it
        warnings.simplefilter("ignore")
        start = next((ev for ev in read_metrics(run_dir) if ev.get("event") == "start"), None)
    if start is not None and thread_count(start.get("threads")) is not None:
        return start["threads"]
    return thread_count((read_json(run_dir / "summary.json") or {}).get("threads"))


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None if missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
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
        except (ValueError, RecursionError):
            warnings.warn(f"{path}:{i}: skipped a corrupt or truncated line", stacklevel=2)
            continue
        out.append(ev)
    return out


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run (a ``config.json`` file)."""
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


DEFAULT_ROOT = Path("results")


def default_roots(given: list[Path] | None) -> list[Path]:
    """The run roots that tables, figures and the report read: ``given`` (``--runs``)
    when it names any, else ``results/`` where the current folder has one (the stored
    logs of this repository), else none: the paper's values only, as outside a checkout.

    An explicit root that does not exist is kept, so that :func:`check_roots` names it.
    """
    if given:
        return [Path(p) for p in given]
    return [DEFAULT_ROOT] if DEFAULT_ROOT.exists() else []


def check_roots(roots: list[Path] | Path, option: str = "--runs") -> None:
    """Refuse run roots that do not exist, before anything reads or writes.

    Args:
        roots: run directories or folders of runs, as given to ``option``.
        option: the command-line option named in the message.

    Raises:
        UserError: naming the first root that does not exist (one line, with the fix).
    """
    if isinstance(roots, (str, Path)):
        roots = [Path(roots)]
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise UserError(f"{option} {root} does not exist; check the path, or give an existing run directory "
                            "or folder of runs, or leave out --runs")
        if not root.is_dir():
            raise UserError(f"{option} {root} is not a directory; give a run directory or a folder of runs "
                            "(or leave out --runs)")


def orphan_runs(roots: list[Path] | Path) -> list[Path]:
    """Directories under ``roots`` that hold run files (``summary.json`` or
    ``metrics.jsonl``) but no ``config.json``: runs whose config was lost, which
    :func:`find_runs` cannot see. Sorted."""
    if isinstance(roots, (str, Path)):
        roots = [Path(roots)]
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for name in ("summary.json", "metrics.jsonl"):
            found.update(p.parent for p in root.rglob(name))  # root itself included
    return sorted(d for d in found if not (d / "config.json").exists())


_RUN_NAME = re.compile(r"^(plain|resnet)(\d+)(?:-([ABC]))?(?:-|$)")


def guess_net(run_dir: Path) -> dict[str, str | None]:
    """The net a run directory's default name says it holds (``resnet20-A-quick-s0`` ->
    ``{"arch": "resnet20", "shortcut": "A", "dataset": "cifar10"}``, the data set from the
    parent folder where it is ``cifar10``, ``cifar100`` or ``imagenet``, or ``cifar100``
    from a CIFAR-100 run's default name, ``resnet20-A-cifar100-quick-s0``), for runs whose
    config.json is unreadable; ``{"arch": None, ...}`` for other names."""
    run_dir = Path(run_dir)
    m = _RUN_NAME.match(run_dir.name)
    parent = run_dir.parent.name
    dataset = parent if parent in ("cifar10", "cifar100", "imagenet") else None
    if m and "-cifar100-" in f"{run_dir.name}-":
        dataset = "cifar100"
    return {"arch": f"{m.group(1)}{m.group(2)}" if m else None, "shortcut": m.group(3) if m else None,
            "dataset": dataset}


# Config fields the reports read, with the types they must have (``None`` allowed where
# listed); a config.json whose fields have other types is skipped, not half-read.
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "arch": (str,), "schedule": (str,), "iterations": (int,), "dataset": (str,), "seed": (int,),
    "shortcut": (str, type(None)), "train_on": (str,), "batch_size": (int,), "precision": (str,),
    "device": (str,), "lr": (int, float), "data_checksum": (str, type(None)), "stride_on": (str, type(None)),
}
_CONFIG_REQUIRED = ("arch", "schedule", "iterations")
_SUMMARY_NUMBERS = ("final_train_error", "final_val_error", "final_test_error", "wall_s", "images_per_s",
                    "iterations_done")
RUN_COLUMNS = ("arch", "shortcut", "dataset", "schedule", "iterations", "seed", "hardware", "data_source_kind",
               "data_copy", "status", *_SUMMARY_NUMBERS, "threads_used", "problem", "run_dir")


def config_problem(cfg: dict) -> str | None:
    """What keeps a ``config.json``'s ``config`` section from being read (a required
    field missing, a field of another type), or None."""
    return _config_problem(cfg)


def _config_problem(cfg: dict) -> str | None:
    for k in _CONFIG_REQUIRED:
        if k not in cfg:
            return f"no {k!r}"
    for k, types in _CONFIG_TYPES.items():
        v = cfg.get(k)
        if k in cfg and (not isinstance(v, types) or (isinstance(v, bool) and bool not in types)):
            return f"{k!r} is {type(v).__name__}"
    return None


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if math.isfinite(v) else None


def data_copy_name(data_dir: Any, kind: Any) -> str | None:
    """How tables and figures name the data copy a run was trained on: the last part of
    its ``data_dir`` and the kind of source, e.g. ``"cifar10-jpeg.tar.gz (image-folder
    (jpg))"`` or ``"cifar-10-batches-py (original CIFAR-10 batches)"``; None if neither
    is known."""
    kind_s = kind if isinstance(kind, str) and kind else None
    if kind_s == "cifar-10-batches-py":
        kind_s = "original CIFAR-10 batches"
    name = Path(data_dir.rstrip("/\\")).name if isinstance(data_dir, str) and data_dir.strip("/\\") else None
    if name and kind_s and name != kind_s:
        return f"{name} ({kind_s})"
    return name or kind_s


ERROR_FIELDS = ("final_train_error", "final_val_error", "final_test_error")


def summary_field_problem(key: str, value: Any) -> str | None:
    """Why a ``summary.json`` value cannot be used, or None: not a finite number, or, for
    the errors of :data:`ERROR_FIELDS` (percent), outside [0, 100]. None is fine (not
    measured yet)."""
    if value is None:
        return None
    v = _number(value)
    if v is None:
        return f"{key} is not a number ({value!r:.40})"
    if key in ERROR_FIELDS and not 0 <= v <= 100:
        return f"{key} is out of range ({v!r:.40}; an error is a percentage, 0 to 100)"
    return None


def load_runs(roots: list[Path] | Path, skipped: list[dict] | None = None) -> pd.DataFrame:
    """One row per run under ``roots``: the config fields, provenance (``hardware``,
    ``data_source_kind``, and ``data_copy`` from :func:`data_copy_name`), and the summary (``status``, ``final_train_error``,
    ``final_val_error``, ``final_test_error``, ``wall_s``, ``images_per_s``,
    ``iterations_done``; ``threads_used``, the CPU threads the run recorded using, None
    where it did not). A run found twice (the same recipe and seed in two folders) is
    one row, with a warning. The frame always has the columns of :data:`RUN_COLUMNS`;
    ``problem`` names what is wrong with the run's ``summary.json`` (None for a sound one).

    Every damaged run is named in a warning (``UserWarning``) and nothing crashes:

    * a run whose config.json is missing (a directory with ``summary.json`` or
      ``metrics.jsonl`` only), unreadable or not a run config is skipped (no row);
    * a ``summary.json`` that is missing (and no process is training the run), not a
      JSON object, or without a known status gives status ``unknown``;
    * a summary field that is not a finite number, or an error (%) outside [0, 100],
      reads as missing; a ``complete`` CIFAR-10 run without ``final_test_error`` keeps
      its row with that field missing.

    * a run whose files disagree with each other (:func:`resnet_repro.runcheck.check_run`:
      the summary is not the log's last evaluation, the logged lr leaves the config's
      schedule, the iterations do not add up, ...) gets status ``inconsistent`` and one
      warning naming the run and the field (the line ``resnet-repro check`` prints).

    Rows with status ``unknown`` or ``inconsistent`` or a missing ``final_test_error``
    are not counted by tables and figures. A ``running`` run whose process is gone
    (killed) reads ``interrupted``; runs in progress pass the check when what they have
    logged so far agrees.

    Args:
        roots: run directories or folders of runs (searched recursively).
        skipped: if given, receives one ``{"run_dir", "file", "why", "arch", "shortcut",
            "dataset"}`` per run skipped for its config (the net guessed from the
            directory name, see :func:`guess_net`), so that tables can say a run of a
            net exists but is damaged.
    """
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    out_skipped = skipped if skipped is not None else []
    for d in orphan_runs(roots):
        warnings.warn(f"{d}/config.json is missing (the directory holds other run files); run skipped: restore "
                      "config.json or move that directory away", stacklevel=2)
        out_skipped.append({"run_dir": str(d), "file": "config.json", "why": "missing", **guess_net(d)})
    for d in find_runs(roots):
        cfg = read_json(d / "config.json")
        problem = "unreadable" if not cfg else None
        if problem is None and not isinstance(cfg.get("config"), dict):
            problem = "has no 'config' object"
        if problem is None:
            problem = _config_problem(cfg["config"])
        if problem:
            warnings.warn(f"{d}/config.json is not a run config ({problem}); run skipped", stacklevel=2)
            out_skipped.append({"run_dir": str(d), "file": "config.json", "why": problem, **guess_net(d)})
            continue
        row = dict(cfg["config"])
        prov = cfg.get("provenance") if isinstance(cfg.get("provenance"), dict) else {}
        hw = prov.get("hardware") if isinstance(prov.get("hardware"), dict) else {}
        hw_name = hw.get("gpu") or hw.get("cpu")
        row["hardware"] = hw_name if isinstance(hw_name, str) else None
        kind = prov.get("data_source_kind")
        row["data_source_kind"] = kind if isinstance(kind, str) else None
        row["data_copy"] = data_copy_name(row.get("data_dir"), row["data_source_kind"])
        summ, damaged = _read_summary(d)
        status = summ.get("status", "unknown")
        if status not in STATUSES:
            status = "unknown"
        if status == "running" and not run_in_progress(d):
            status = "interrupted"
        row["status"] = status
        for k in _SUMMARY_NUMBERS:
            why = summary_field_problem(k, summ.get(k))
            if why:
                warnings.warn(f"{d}/summary.json: {why}; ignored", stacklevel=2)
                damaged = damaged or f"summary.json: {why}"
            row[k] = None if why else _number(summ.get(k))
        if (status == "complete" and row.get("dataset", "cifar10") in (None, "cifar10", "cifar100")
                and "final_test_error" not in summ):
            warnings.warn(f"{d}/summary.json: a complete run without final_test_error; left out of the tables",
                          stacklevel=2)
            damaged = damaged or "summary.json: no final_test_error"
        if not damaged:  # a run that a table may count: its summary, log and config must agree
            disagree = _disagreements(d, cfg["config"], summ if summ or (d / "summary.json").exists() else None)
            if disagree:
                from resnet_repro.runcheck import warning_line

                warnings.warn(warning_line(d, disagree), stacklevel=2)
                damaged = disagree[0].text()
                row["status"] = "inconsistent"
        threads = summ.get("threads")
        row["threads_used"] = thread_count(threads)
        row["problem"] = damaged
        row["run_dir"] = str(d)
        rows.append(row)
        keys.append(_recipe_key(cfg["config"]))
    df = pd.DataFrame(_once_per_recipe(rows, keys))
    for c in RUN_COLUMNS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    if "dataset" in df.columns:
        df["dataset"] = df["dataset"].fillna("cifar10") if len(df) else df["dataset"]
    return df


def _disagreements(d: Path, config: dict, summary: dict | None) -> list:
    """:func:`resnet_repro.runcheck.check_run` on a run's files (corrupt log lines are
    warned about by the commands that draw the log)."""
    from resnet_repro.runcheck import check_run, eval_file_problems, log_missing

    missing = log_missing(d)
    if missing is not None:
        return [missing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = read_metrics(d)
    return check_run(config, summary, events, live=run_in_progress(d)) + eval_file_problems(d)


def _recipe_key(config: dict) -> str:
    """What makes two runs the same run: every config field that determines the numbers
    (all but the ones a resume may change, such as ``data_dir`` and ``threads``), seed
    included."""
    from resnet_repro.train.config import RESUME_MUTABLE

    return json.dumps({k: v for k, v in config.items() if k not in RESUME_MUTABLE}, sort_keys=True, default=str)


def _once_per_recipe(rows: list[dict], keys: list[str]) -> list[dict]:
    """``rows`` with each run counted once: a run found twice (the same recipe and seed in
    two folders, e.g. ``runs/quickstart`` and ``runs/cifar10``) is one sample, not two.
    The complete one is kept (else the first found); the other is named in a warning."""
    kept: list[dict] = []
    where: dict[str, int] = {}
    for row, key in zip(rows, keys, strict=True):
        j = where.get(key)
        if j is None:
            where[key] = len(kept)
            kept.append(row)
            continue
        other = kept[j]
        if row["status"] == "complete" and other["status"] != "complete":
            kept[j], row, other = row, other, row
        warnings.warn(f"{row['run_dir']} repeats {other['run_dir']} (the same recipe and seed); counted once",
                      stacklevel=3)
    return kept


def _read_summary(d: Path) -> tuple[dict, str | None]:
    """A run's ``summary.json`` as a dict (empty if unusable) and what is wrong with it
    (None for a sound one, or a missing one while a process trains the run); warns
    naming the file."""
    path = d / "summary.json"
    if not path.exists():
        if run_in_progress(d):
            return {}, None
        warnings.warn(f"{path} is missing (the run stopped before writing it, or it was deleted); run left out "
                      "of tables and figures", stacklevel=3)
        return {}, "summary.json missing"
    summ = read_json(path)
    if summ is None:
        warnings.warn(f"{path} is damaged (not a JSON object: truncated, empty or overwritten); run left out of "
                      "tables and figures: restore it, or train the run again", stacklevel=3)
        return {}, "summary.json damaged"
    status = summ.get("status")
    if status not in STATUSES:
        warnings.warn(f"{path}: status {status!r:.40} is not one of {', '.join(STATUSES)}; run left out of tables "
                      "and figures", stacklevel=3)
        return summ, "summary.json: no known status"
    return summ, None


def metrics_frame(run_dir: Path, event: str | None = None) -> pd.DataFrame:
    """``metrics.jsonl`` as a DataFrame, optionally only events of one kind."""
    evs = read_metrics(run_dir)
    if event is not None:
        evs = [e for e in evs if e.get("event") == event]
    return pd.DataFrame(evs)
