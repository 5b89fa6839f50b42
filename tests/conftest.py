"""Shared fixtures: a tiny real image-folder data set made on the fly, and the shared
CIFAR-10 copy (tests that need it are skipped, with the reason, when it is absent)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# One thread per test process: the tiny nets here gain nothing from more, and several
# processes sharing 2 cores with more threads than cores slow each other down badly.
torch.set_num_threads(int(os.environ.get("RESNET_REPRO_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests cache decoded arrays in a per-session folder, never in ~/.cache,
    except for the shared CIFAR-10 copy (see ``shared_cifar``)."""
    if "RESNET_REPRO_TEST_CACHE" not in os.environ:
        os.environ["RESNET_REPRO_TEST_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("RESNET_REPRO_CACHE", os.environ["RESNET_REPRO_TEST_CACHE"])


def run_main(argv: list[str], capsys) -> tuple[int | str | None, str, str]:
    """``resnet-repro ARGV`` in process through the console-script entry point
    (:func:`resnet_repro.cli.main`, which always exits): (exit code, stdout, stderr)."""
    from resnet_repro.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Torch's default float dtype set to ``dtype`` inside the block (tests that compare
    two float computations run them in float64, where rounding is 2**-53: see
    ``tests/test_distributed.py``)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def write_image_tree(root: Path, n_train_per_class: int = 12, n_test_per_class: int = 4, ext: str = "png",
                     classes: tuple[str, ...] = CLASSES, seed: int = 0) -> Path:
    """A small CIFAR-like tree ``root/{train,test}/<class>/NNNN.<ext>`` of 32x32 RGB images
    whose mean colour depends on the class (so a net can learn something)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.full((32, 32, 3), 20 * ci + 10, dtype=np.int16)
                img = np.clip(base + rng.integers(-10, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """A 120-train / 40-test image-folder data set (PNG, 10 classes)."""
    return write_image_tree(tmp_path_factory.mktemp("tiny") / "cifar")


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    """The shared JPEG CIFAR-10 copy, decoded into the user's normal cache (decoding
    takes ~20 s once)."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"shared CIFAR-10 copy not found at {SHARED_CIFAR}")
    return SHARED_CIFAR
