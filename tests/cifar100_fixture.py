"""A tiny CIFAR-100 made in the test, in the original distribution's formats.

The original ``cifar-100-python`` files are Python 2 pickles (protocol 2): dicts whose
keys and byte strings are Python 2 ``str`` (the ``BINSTRING`` opcodes), the images a numpy
uint8 array rebuilt through ``numpy.core.multiarray._reconstruct``. :func:`py2_pickle`
writes exactly those opcodes (a Python 3 ``pickle.dumps`` would write ``BINUNICODE`` keys
and route the array's bytes through ``_codecs.encode``), so the loader is tested on the
format it meets in the real files.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from resnet_repro.data.cifar import CIFAR100_CLASSES


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: every ``str`` and ``bytes`` as a
    Python 2 byte string, numpy's array rebuilder under its Python 2 module name."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 wrote the CIFAR files (see the module docstring)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar100_arrays(n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Images ``(N, 3072)`` uint8 whose mean grey level follows the fine label (so a net
    learns something) and labels cycling through 0..99."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 100
        base = (y * 2 + 30)[:, None]
        out[split + "_x"] = np.clip(base + rng.integers(-8, 8, (n, 3072)), 0, 255).astype(np.uint8)
        out[split + "_y"] = y
    return out


def write_cifar100_python(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0,
                          labels: dict[str, list[int]] | None = None) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` in the original format; ``labels``
    replaces a split's ``fine_labels`` (to write damaged files). Returns the folder."""
    a = cifar100_arrays(n_train, n_test, seed)
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for split, title in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
        y = list(map(int, a[split + "_y"])) if not labels or split not in labels else labels[split]
        obj = {"filenames": [f"img_{i:05d}.png" for i in range(len(a[split + "_x"]))],
               "batch_label": title, "fine_labels": y, "coarse_labels": [v // 5 for v in y],
               "data": a[split + "_x"]}
        (d / split).write_bytes(py2_pickle(obj))
    (d / "meta").write_bytes(py2_pickle({"fine_label_names": list(CIFAR100_CLASSES),
                                         "coarse_label_names": [f"superclass_{i}" for i in range(20)]}))
    return d


def write_cifar100_tar(folder: Path, out: Path) -> Path:
    """``out`` = ``folder`` (a ``cifar-100-python`` folder) as the original ``.tar.gz``."""
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname="cifar-100-python")
    return out


def write_cifar100_tree(root: Path, per_class_train: int = 3, per_class_test: int = 1, seed: int = 0,
                        n_classes: int = 100) -> Path:
    """``root/{train,test}/<class>/NNNN.png`` for the first ``n_classes`` CIFAR-100 classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for ci, c in enumerate(CIFAR100_CLASSES[:n_classes]):
            d = Path(root) / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(ci * 2 + 30 + rng.integers(-8, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return Path(root)
