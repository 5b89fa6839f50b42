"""Atomic file writes: every log, checkpoint and report is written to a temporary file
in the same directory, flushed, fsynced and renamed over the target, so a reader (or a
process killed mid-write) never sees a half-written file.

Test hook: with ``RESNET_REPRO_TEST_KILL_AT=WHAT:N`` in the environment the process
kills itself with SIGKILL during its N-th (1-based) atomic write of a matching file,
after the temporary file is written and fsynced and before it is renamed over the
target. ``WHAT`` is ``checkpoint`` (any ``.pt`` file), ``any``, or a file name such as
``metrics.jsonl``, ``summary.json``, ``index.json``, ``config.json``. The crash tests
use it to hit writes deliberately; without the variable it does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

KILL_ENV = "RESNET_REPRO_TEST_KILL_AT"
_kill_counts: dict[str, int] = {}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _test_kill_hook(path: Path) -> None:
    """SIGKILL this process if ``$RESNET_REPRO_TEST_KILL_AT`` names this write (a test
    hook, see the module docstring; inert when the variable is unset)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    what, _, n = spec.rpartition(":")
    hit = what == "any" or (what == "checkpoint" and path.suffix == ".pt") or path.name == what
    if not hit:
        return
    _kill_counts[what] = _kill_counts.get(what, 0) + 1
    if str(_kill_counts[what]) == n.strip():
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically: ``writer(fh)`` fills a temporary binary file that then
    replaces ``path`` with ``os.replace`` (a symbolic link at ``path`` is replaced, never
    written through).

    Raises:
        OSError: if the directory is not writable or the disk is full; the previous
            content of ``path`` is then left untouched and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _test_kill_hook(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically replace ``path`` with ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes as 64 hex digits, read in 1 MiB chunks (data copies
    and weight files can be large).

    Raises:
        OSError: if the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a JSON-lines log, atomically.

    The log is rewritten whole (temporary file, fsync, rename), so it only ever holds
    complete lines, even if the process is killed or the disk fills during the call;
    the cost is reading and writing the log once per line (a paper-length CIFAR-10 run
    logs under 1,000 lines, about 150 kB). A last line left without its newline by an
    older version is closed before the new line is added.

    Raises:
        OSError: if the write fails (disk full); the log is then unchanged.
    """
    path = Path(path)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_bytes(path, old + line.rstrip("\n").encode("utf-8") + b"\n")


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXXXXXX.tmp``) that :func:`atomic_write`
    leaves behind when its process is killed, and return their paths.

    Call it only while no other process writes into ``directory`` (a training run does
    so under its run lock), or it may remove another writer's file in progress.
    """
    d = Path(directory)
    removed = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return removed
    for p in entries:
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def unwritable_reason(path: str | os.PathLike, kind: str = "file") -> str | None:
    """Why ``path`` could not be written, or None if it looks writable; checked before any
    work so that a command fails at once instead of after it (nothing is created).

    ``kind`` is ``file`` (``path`` is a file to be written, atomically, beside its
    siblings) or ``dir`` (``path`` is a directory to be created or written into). The
    nearest existing folder (``path`` itself for an existing ``dir``, else the nearest
    existing parent) must be a directory the process may write to; an existing one is
    probed by creating and removing a temporary file in it, so read-only mounts, ACLs
    and root's rights are all taken into account. The reason is a short phrase such as
    ``"it is a directory"`` or ``"Permission denied"``.
    """
    p = Path(path)
    if kind == "file":
        if p.is_dir():
            return "it is a directory; give a file path"
        start = p.parent
    else:
        if p.exists() and not p.is_dir():
            return "it is not a directory"
        start = p
    anc = start
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        return f"{anc} is not a directory"
    if anc != start:  # would be created: can the nearest existing folder take it?
        return None if os.access(anc, os.W_OK | os.X_OK) else f"{anc} is not writable"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=anc)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return None
