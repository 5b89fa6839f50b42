"""CIFAR-10 from the forms users have it in, decoded once into cached uint8 arrays.

Accepted sources (``--data-dir``):

* the original ``cifar-10-batches-py`` folder (or a folder holding it), or the original
  ``cifar-10-python.tar.gz``; with ``download=True`` torchvision fetches it;
* an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` in PNG or JPEG, as a
  folder or a ``.tar`` / ``.tar.gz`` (such as the JPEG re-encoded copy used for tests).

The decoded arrays are cached under :func:`cache_dir` in a file named by the source's
SHA-256, so a changed source is never read from a stale cache.

Paper protocol (Sec. 4.2): 50k training and 10k test images; a 45k/5k train/val split
for any choice made while training; per-pixel mean subtraction computed on the training
images; the test set is only ever reported, never used to choose anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write, atomic_write_json, sha256_file

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
CACHE_VERSION = 1
HOW_TO_GET = (
    "pass --data-dir pointing to cifar-10-batches-py, cifar-10-python.tar.gz, or an "
    "image-folder tree/tar(.gz) with train/<class>/ and test/<class>/, or add --download"
)


@dataclass
class CifarArrays:
    """CIFAR-10 decoded to uint8.

    Attributes:
        train_x: ``(N_train, 3, 32, 32)`` uint8, N_train = 50,000 for the full set.
        train_y: ``(N_train,)`` int64 labels in ``0..9``.
        test_x: ``(N_test, 3, 32, 32)`` uint8.
        test_y: ``(N_test,)`` int64.
        classes: class names in label order.
        source_kind: ``"cifar-10-batches-py"`` (original pixels) or ``"image-folder
            (jpeg)"`` / ``"image-folder (png)"`` (re-encoded copies differ a little).
        checksum: SHA-256 of the source (file bytes, or every file of a folder).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    source_kind: str
    checksum: str


def cache_dir() -> Path:
    """Where decoded arrays and splits are cached: ``$RESNET_REPRO_CACHE`` or
    ``~/.cache/resnet_repro``."""
    return Path(os.environ.get("RESNET_REPRO_CACHE", Path.home() / ".cache" / "resnet_repro"))


def _sha256_tree(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _find_batches_dir(path: Path) -> Path | None:
    for cand in (path, path / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
            return cand
    return None


def _is_image_tree(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for bad files
        raise UserError(f"cannot decode image {where} ({exc}); the data set is corrupt, get a fresh copy") from None
    if arr.shape != (32, 32, 3):
        raise UserError(f"image {where} is {arr.shape[1]}x{arr.shape[0]}, CIFAR-10 images are 32x32; {HOW_TO_GET}")
    return arr


def _assemble(items: list[tuple[str, str, str, bytes | np.ndarray]], kind: str, checksum: str, origin: str) -> CifarArrays:
    """items: (split, class, name, encoded bytes or decoded array)."""
    classes = sorted({c for s, c, _, _ in items if s == "train"})
    test_classes = sorted({c for s, c, _, _ in items if s == "test"})
    if not classes:
        raise UserError(f"no training images under {origin}/train/<class>/; {HOW_TO_GET}")
    if classes != test_classes:
        raise UserError(f"class folders differ between train/ and test/ in {origin}; both need the same classes")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "test"):
        rows = sorted((c, n, d) for s, c, n, d in items if s == split)
        xs = [d if isinstance(d, np.ndarray) else _decode(d, f"{origin}/{split}/{c}/{n}") for c, n, d in rows]
        out[split + "_x"] = np.stack(xs).transpose(0, 3, 1, 2).copy()
        out[split + "_y"] = np.array([index[c] for c, _, _ in rows], dtype=np.int64)
    return CifarArrays(classes=tuple(classes), source_kind=kind, checksum=checksum, **out)


class _BatchUnpickler(pickle.Unpickler):
    """The original batch files are Python pickles of a dict of numpy arrays and lists;
    only the classes needed to rebuild those are allowed, so a tampered file cannot run
    code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")


def _read_batches(batches: list[tuple[str, bytes]], checksum: str) -> CifarArrays:
    def unpickle(data: bytes) -> dict:
        try:
            return _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise UserError(f"a cifar-10-batches-py file is corrupt or not CIFAR-10 ({exc}); get a fresh copy") from None

    train = [unpickle(d) for n, d in sorted(batches) if n.startswith("data_batch_")]
    test = [unpickle(d) for n, d in batches if n == "test_batch"]
    if len(train) != 5 or len(test) != 1:
        raise UserError(f"incomplete cifar-10-batches-py ({len(train)} of 5 training batches); {HOW_TO_GET}")

    def stack(parts):
        x = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(p["labels"], dtype=np.int64) for p in parts])
        return x, y

    trx, tr_y = stack(train)
    tex, te_y = stack(test)
    return CifarArrays(trx, tr_y, tex, te_y, CIFAR10_CLASSES, "cifar-10-batches-py", checksum)


def _image_kind(names: list[str]) -> str:
    exts = {os.path.splitext(n)[1].lower() for n in names}
    return "image-folder (" + "/".join(sorted(e.lstrip(".").replace("jpeg", "jpg") for e in exts)) + ")"


def _load_tar(path: Path, checksum: str) -> CifarArrays:
    items, batches = [], []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = Path(m.name).parts
                base = parts[-1]
                if base.startswith("data_batch_") or base == "test_batch":
                    batches.append((base, tf.extractfile(m).read()))
                    continue
                if base.lower().endswith(IMAGE_EXTS) and len(parts) >= 3 and parts[-3] in ("train", "test"):
                    items.append((parts[-3], parts[-2], base, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"cannot read {path} as a tar archive ({exc}); the file is corrupt or truncated, get a fresh copy") from None
    if batches:
        return _read_batches(batches, checksum)
    if not items:
        raise UserError(f"{path} holds neither cifar-10-batches-py nor train/<class>/ images; {HOW_TO_GET}")
    return _assemble(items, _image_kind([i[2] for i in items]), checksum, str(path))


def _load_tree(root: Path) -> CifarArrays:
    files = [p for p in (root / "train").glob("*/*") if p.suffix.lower() in IMAGE_EXTS]
    files += [p for p in (root / "test").glob("*/*") if p.suffix.lower() in IMAGE_EXTS]
    checksum = _sha256_tree(root, files)
    cached = _cache_load(checksum)
    if cached is not None:
        return cached
    items = [(f.parent.parent.name, f.parent.name, f.name, f.read_bytes()) for f in files]
    arrays = _assemble(items, _image_kind([f.name for f in files]), checksum, str(root))
    _cache_save(arrays)
    return arrays


def _cache_path(checksum: str) -> Path:
    return cache_dir() / f"cifar10-v{CACHE_VERSION}-{checksum[:16]}.npz"


def _cache_load(checksum: str) -> CifarArrays | None:
    p = _cache_path(checksum)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("checksum") != checksum:
                return None
            return CifarArrays(z["train_x"], z["train_y"], z["test_x"], z["test_y"],
                               tuple(meta["classes"]), meta["source_kind"], checksum)
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt from the source


def _cache_save(a: CifarArrays) -> None:
    meta = json.dumps({"checksum": a.checksum, "classes": list(a.classes), "source_kind": a.source_kind})
    try:
        atomic_write(_cache_path(a.checksum), lambda fh: np.savez(
            fh, train_x=a.train_x, train_y=a.train_y, test_x=a.test_x, test_y=a.test_y, meta=np.array(meta)))
    except OSError:
        pass  # caching is an optimisation; an unwritable cache only costs decode time


def load_cifar10(source: str | os.PathLike, download: bool = False) -> CifarArrays:
    """Load CIFAR-10 from ``source`` (see module docstring for the accepted forms),
    decoding once and caching by checksum.

    Raises:
        UserError: if nothing usable is at ``source`` (the message says where it looked
            and how to get the data), or the files are corrupt.
    """
    path = Path(source).expanduser()
    if path.is_file():
        checksum = sha256_file(path)
        cached = _cache_load(checksum)
        if cached is not None:
            return cached
        arrays = _load_tar(path, checksum)
        _cache_save(arrays)
        return arrays
    if path.is_dir() or download:
        bdir = _find_batches_dir(path) if path.is_dir() else None
        if bdir is None and path.is_dir() and _is_image_tree(path):
            return _load_tree(path)
        if bdir is None and download:
            from torchvision.datasets import CIFAR10

            try:
                CIFAR10(root=str(path), train=True, download=True)
            except Exception as exc:
                raise UserError(f"download of CIFAR-10 into {path} failed ({exc}); check the network or {HOW_TO_GET}") from None
            bdir = _find_batches_dir(path)
        if bdir is not None:
            names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
            files = [bdir / n for n in names if (bdir / n).is_file()]
            checksum = _sha256_tree(bdir, files)
            cached = _cache_load(checksum)
            if cached is not None:
                return cached
            arrays = _read_batches([(f.name, f.read_bytes()) for f in files], checksum)
            _cache_save(arrays)
            return arrays
    raise UserError(
        f"no CIFAR-10 found at {path} (looked for cifar-10-batches-py/, train/ + test/ folders, "
        f"or a .tar/.tar.gz); {HOW_TO_GET}"
    )


def split_indices(n_train: int, seed: int = 0, val_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, seeded train/val split of paper Sec. 4.2 (45k/5k for the full set).

    Args:
        n_train: number of training images (50,000 for CIFAR-10).
        seed: split seed; the split depends on nothing else.
        val_size: held-out images; default 5,000 for the full set, else n_train // 10.

    Returns:
        ``(train_idx, val_idx)``, sorted int64 arrays that partition ``range(n_train)``.
    """
    if val_size is None:
        val_size = 5000 if n_train >= 50000 else max(1, n_train // 10)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=g).numpy()
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def split_digest(val_idx: np.ndarray) -> str:
    """A short SHA-256 of the validation indices, recorded in each run's config."""
    return hashlib.sha256(np.ascontiguousarray(val_idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def store_split(checksum: str, seed: int, train_idx: np.ndarray, val_idx: np.ndarray) -> Path:
    """Write the split as JSON into the cache (``split-<data>-seed<k>.json``) so it can be
    inspected and reused; returns its path."""
    p = cache_dir() / f"split-{checksum[:16]}-seed{seed}-val{len(val_idx)}.json"
    if not p.exists():
        try:
            atomic_write_json(p, {"data_checksum": checksum, "seed": seed, "val": val_idx.tolist(),
                                  "n_train": int(len(train_idx) + len(val_idx))})
        except OSError:
            pass
    return p
