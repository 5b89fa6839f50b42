"""CIFAR-10 and CIFAR-100 from the forms users have them in, decoded once into cached
uint8 arrays.

Accepted sources (``--data-dir``):

* CIFAR-10: the original ``cifar-10-batches-py`` folder (or a folder holding it), or the
  original ``cifar-10-python.tar.gz``; with ``download=True`` torchvision fetches it;
* CIFAR-100 (:func:`load_cifar100`): the original ``cifar-100-python`` folder (its
  ``train`` and ``test`` pickles, labels from ``fine_labels``, the 100 classes; ``meta``
  names them) or a folder holding it, or the original ``cifar-100-python.tar.gz``;
  with ``download=True`` torchvision fetches it;
* an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` in PNG or JPEG, as a
  folder or a ``.tar`` / ``.tar.gz`` (such as the JPEG re-encoded copy used for tests);
  for CIFAR-100 it must have 100 class folders.

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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write, atomic_write_json, sha256_file

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# The 100 fine classes of CIFAR-100 in label order (alphabetical, as its ``meta`` file
# lists them); used where a source does not name them (an original folder without ``meta``).
CIFAR100_CLASSES = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
# Classes of each CIFAR data set (the width of the nets' last fc layer).
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
CACHE_VERSION = 1
HOW_TO_GET = (
    "pass --data-dir pointing to cifar-10-batches-py, cifar-10-python.tar.gz, or an "
    "image-folder tree/tar(.gz) with train/<class>/ and test/<class>/, or add --download"
)
HOW_TO_GET_100 = (
    "pass --data-dir pointing to cifar-100-python, cifar-100-python.tar.gz, or an "
    "image-folder tree/tar(.gz) with train/<class>/ and test/<class>/ for the 100 classes, or add --download"
)
CIFAR100_FILES = ("train", "test", "meta")


@dataclass
class CifarArrays:
    """CIFAR-10 or CIFAR-100 decoded to uint8.

    Attributes:
        train_x: ``(N_train, 3, 32, 32)`` uint8, N_train = 50,000 for the full set.
        train_y: ``(N_train,)`` int64 labels in ``0..9`` (CIFAR-100: ``0..99``, its
            fine labels).
        test_x: ``(N_test, 3, 32, 32)`` uint8.
        test_y: ``(N_test,)`` int64.
        classes: class names in label order.
        source_kind: ``"cifar-10-batches-py"`` / ``"cifar-100-python"`` (original
            pixels) or ``"image-folder (jpeg)"`` / ``"image-folder (png)"`` (re-encoded
            copies differ a little).
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


def _decode(data: bytes, where: str, how: str = HOW_TO_GET) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for bad files
        raise UserError(f"cannot decode image {where} ({exc}); the data set is corrupt, get a fresh copy") from None
    if arr.shape != (32, 32, 3):
        raise UserError(f"image {where} is {arr.shape[1]}x{arr.shape[0]}, CIFAR images are 32x32; {how}")
    return arr


def _assemble(items: list[tuple[str, str, str, bytes | np.ndarray]], kind: str, checksum: str, origin: str,
              how: str = HOW_TO_GET) -> CifarArrays:
    """items: (split, class, name, encoded bytes or decoded array)."""
    classes = sorted({c for s, c, _, _ in items if s == "train"})
    test_classes = sorted({c for s, c, _, _ in items if s == "test"})
    if not classes:
        raise UserError(f"no training images under {origin}/train/<class>/; {how}")
    if classes != test_classes:
        raise UserError(f"class folders differ between train/ and test/ in {origin}; both need the same classes")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "test"):
        rows = sorted((c, n, d) for s, c, n, d in items if s == split)
        xs = [d if isinstance(d, np.ndarray) else _decode(d, f"{origin}/{split}/{c}/{n}", how) for c, n, d in rows]
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
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")


def _unpickle(data: bytes, what: str) -> object:
    """One original batch file (Python 2 pickles: ``latin1`` turns their byte strings
    into ``str``, as numpy expects), through :class:`_BatchUnpickler`.

    Raises:
        UserError: naming ``what`` (e.g. ``"a cifar-10-batches-py file"``) for a file that
            is not such a pickle.
    """
    try:
        with warnings.catch_warnings():  # numpy 2 names the files' numpy.core a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError) as exc:
        raise UserError(f"{what} is corrupt or not in the original format ({exc}); get a fresh copy") from None


def _read_batches(batches: list[tuple[str, bytes]], checksum: str) -> CifarArrays:
    def unpickle(data: bytes) -> dict:
        return _unpickle(data, "a cifar-10-batches-py file")

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


def _load_tar(path: Path, checksum: str, dataset: str = "cifar10") -> CifarArrays:
    items, batches, c100 = [], [], []
    how = HOW_TO_GET_100 if dataset == "cifar100" else HOW_TO_GET
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
                if base in CIFAR100_FILES and (len(parts) == 1 or parts[-2] == "cifar-100-python"):
                    c100.append((base, tf.extractfile(m).read()))
                    continue
                if base.lower().endswith(IMAGE_EXTS) and len(parts) >= 3 and parts[-3] in ("train", "test"):
                    items.append((parts[-3], parts[-2], base, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"cannot read {path} as a tar archive ({exc}); the file is corrupt or truncated, get a fresh copy") from None
    if dataset == "cifar100":
        if c100:
            return _read_cifar100(dict(c100), checksum, str(path))
        if batches:
            raise UserError(f"{path} holds cifar-10-batches-py (CIFAR-10, 10 classes), not CIFAR-100; use "
                            "--dataset cifar10 for it, or give the CIFAR-100 data")
    elif batches:
        return _read_batches(batches, checksum)
    elif c100 and not items:
        raise UserError(f"{path} holds cifar-100-python (CIFAR-100), not CIFAR-10; add --dataset cifar100 "
                        "to train on it, or give the CIFAR-10 data")
    if not items:
        what = "cifar-100-python" if dataset == "cifar100" else "cifar-10-batches-py"
        raise UserError(f"{path} holds neither {what} nor train/<class>/ images; {how}")
    return _assemble(items, _image_kind([i[2] for i in items]), checksum, str(path), how)


def _load_tree(root: Path, dataset: str = "cifar10") -> CifarArrays:
    files = [p for p in (root / "train").glob("*/*") if p.suffix.lower() in IMAGE_EXTS]
    files += [p for p in (root / "test").glob("*/*") if p.suffix.lower() in IMAGE_EXTS]
    checksum = _sha256_tree(root, files)
    cached = _cache_load(checksum, dataset)
    if cached is not None:
        return cached
    items = [(f.parent.parent.name, f.parent.name, f.name, f.read_bytes()) for f in files]
    arrays = _assemble(items, _image_kind([f.name for f in files]), checksum, str(root),
                       HOW_TO_GET_100 if dataset == "cifar100" else HOW_TO_GET)
    _cache_save(arrays, dataset)
    return arrays


def _cache_path(checksum: str, dataset: str = "cifar10") -> Path:
    return cache_dir() / f"{dataset}-v{CACHE_VERSION}-{checksum[:16]}.npz"


def _cache_load(checksum: str, dataset: str = "cifar10") -> CifarArrays | None:
    p = _cache_path(checksum, dataset)
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


def _cache_save(a: CifarArrays, dataset: str = "cifar10") -> None:
    meta = json.dumps({"checksum": a.checksum, "classes": list(a.classes), "source_kind": a.source_kind})
    try:
        atomic_write(_cache_path(a.checksum, dataset), lambda fh: np.savez(
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
    if path.is_dir() and _find_cifar100_dir(path) is not None:
        raise UserError(f"{path} holds cifar-100-python (CIFAR-100), not CIFAR-10; add --dataset cifar100 to "
                        "train on it, or give the CIFAR-10 data")
    raise UserError(
        f"no CIFAR-10 found at {path} (looked for cifar-10-batches-py/, train/ + test/ folders, "
        f"or a .tar/.tar.gz); {HOW_TO_GET}"
    )


def _find_cifar100_dir(path: Path) -> Path | None:
    for cand in (path, path / "cifar-100-python"):
        if (cand / "train").is_file() and (cand / "test").is_file():
            return cand
    return None


def _read_cifar100(files: dict[str, bytes], checksum: str, origin: str) -> CifarArrays:
    """The original ``cifar-100-python`` pickles (``{"train": bytes, "test": bytes,
    "meta": bytes}``; ``meta`` optional): each of ``train``/``test`` a dict with ``data``
    ``(N, 3072)`` uint8 (the 1024 red, then green, then blue values of each 32x32 image,
    row by row) and ``fine_labels`` (N ints in 0..99); ``meta`` has ``fine_label_names``.

    Raises:
        UserError: a missing ``train`` or ``test`` file, a file that is not such a
            pickle, data of another shape, a label count that is not the image count, or
            a label outside 0..99 (each names the file and the fix).
    """
    missing = [n for n in ("train", "test") if n not in files]
    if missing:
        raise UserError(f"incomplete cifar-100-python at {origin} (no {' or '.join(missing)} file); {HOW_TO_GET_100}")
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        where = f"{origin}: cifar-100-python/{split}"
        obj = _unpickle(files[split], where)
        if not isinstance(obj, dict) or "data" not in obj or "fine_labels" not in obj:
            keys = ", ".join(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
            raise UserError(f"{where} is not a CIFAR-100 file (it needs 'data' and 'fine_labels', it has {keys}); "
                            "get a fresh copy of cifar-100-python")
        try:
            x = np.asarray(obj["data"])
            y = np.asarray(obj["fine_labels"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: unreadable data or fine_labels ({exc}); get a fresh copy") from None
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise UserError(f"{where}: data is {x.dtype} of shape {x.shape}, CIFAR-100 stores uint8 rows of "
                            "3,072 values (32x32 RGB); get a fresh copy")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{where}: {y.size} fine_labels for {len(x)} images (whole numbers, one per image); "
                            "get a fresh copy")
        bad = np.flatnonzero((y < 0) | (y > 99))
        if len(bad):
            raise UserError(f"{where}: label {int(y[bad[0]])} of image {int(bad[0])} is outside 0..99 (CIFAR-100 "
                            "has 100 fine classes); the file is damaged or not CIFAR-100, get a fresh copy")
        out[split + "_x"] = x.reshape(-1, 3, 32, 32).copy()
        out[split + "_y"] = y.astype(np.int64)
    classes = CIFAR100_CLASSES
    if "meta" in files:
        meta = _unpickle(files["meta"], f"{origin}: cifar-100-python/meta")
        names = meta.get("fine_label_names") if isinstance(meta, dict) else None
        if isinstance(names, (list, tuple)) and len(names) == 100 and all(isinstance(n, str) for n in names):
            classes = tuple(names)
    return CifarArrays(out["train_x"], out["train_y"], out["test_x"], out["test_y"], classes, "cifar-100-python",
                       checksum)


def _check_cifar100_classes(a: CifarArrays, origin: Path) -> CifarArrays:
    if len(a.classes) != 100:
        raise UserError(f"{origin} has {len(a.classes)} class folders under train/, CIFAR-100 has 100; give a "
                        "tree with train/<class>/ and test/<class>/ for each of its 100 fine classes")
    return a


def load_cifar100(source: str | os.PathLike, download: bool = False) -> CifarArrays:
    """Load CIFAR-100 (its 100 fine classes) from ``source``: the original
    ``cifar-100-python`` folder or a folder holding it, the original
    ``cifar-100-python.tar.gz`` (or any tar of that folder), or an image-folder tree or
    tar with 100 class folders; with ``download`` torchvision's ``CIFAR100`` fetches the
    original into ``source`` where nothing usable is there. Decoded once and cached by
    checksum, like :func:`load_cifar10`.

    Raises:
        UserError: nothing usable at ``source`` (the message says where it looked and
            how to get the data), a failed download, CIFAR-10 given instead, corrupt
            files, or a label outside 0..99 (see :func:`_read_cifar100`).
    """
    path = Path(source).expanduser()
    if path.is_file():
        checksum = sha256_file(path)
        cached = _cache_load(checksum, "cifar100")
        if cached is None:
            cached = _load_tar(path, checksum, "cifar100")
            _cache_save(cached, "cifar100")
        return _check_cifar100_classes(cached, path)
    if path.is_dir() or download:
        cdir = _find_cifar100_dir(path) if path.is_dir() else None
        if cdir is None and path.is_dir() and _is_image_tree(path):
            return _check_cifar100_classes(_load_tree(path, "cifar100"), path)
        if cdir is None and path.is_dir() and _find_batches_dir(path) is not None:
            raise UserError(f"{path} holds cifar-10-batches-py (CIFAR-10, 10 classes), not CIFAR-100; use "
                            "--dataset cifar10 for it, or give the CIFAR-100 data")
        if cdir is None and download:
            from torchvision.datasets import CIFAR100

            try:
                CIFAR100(root=str(path), train=True, download=True)
            except Exception as exc:
                raise UserError(f"download of CIFAR-100 into {path} failed ({exc}); check the network or "
                                f"{HOW_TO_GET_100}") from None
            cdir = _find_cifar100_dir(path)
        if cdir is not None:
            files = [cdir / n for n in CIFAR100_FILES if (cdir / n).is_file()]
            checksum = _sha256_tree(cdir, files)
            cached = _cache_load(checksum, "cifar100")
            if cached is not None:
                return cached
            arrays = _read_cifar100({f.name: f.read_bytes() for f in files}, checksum, str(cdir))
            _cache_save(arrays, "cifar100")
            return arrays
    raise UserError(
        f"no CIFAR-100 found at {path} (looked for cifar-100-python/ with train and test, train/ + test/ "
        f"folders, or a .tar/.tar.gz); {HOW_TO_GET_100}"
    )


def load_cifar(dataset: str, source: str | os.PathLike, download: bool = False) -> CifarArrays:
    """:func:`load_cifar10` or :func:`load_cifar100` by ``dataset`` (``"cifar10"`` or
    ``"cifar100"``).

    Raises:
        UserError: another data set name, or what the loader raises.
    """
    if dataset == "cifar100":
        return load_cifar100(source, download=download)
    if dataset == "cifar10":
        return load_cifar10(source, download=download)
    raise UserError(f"unknown CIFAR data set {dataset!r}; choose cifar10 or cifar100")


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
