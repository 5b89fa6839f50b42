"""CIFAR-10 loading in all its forms, caching, the 45k/5k split, batched augmentation."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_image_tree
from resnet_repro.data import cifar
from resnet_repro.data.augment import pad_crop_flip, to_float
from resnet_repro.data.cifar import load_cifar10, split_indices
from resnet_repro.errors import UserError


def test_image_tree_folder_and_tar_agree(tiny_tree, tmp_path):
    a = load_cifar10(tiny_tree)
    assert a.train_x.shape == (120, 3, 32, 32) and a.train_x.dtype == np.uint8
    assert a.test_x.shape == (40, 3, 32, 32)
    assert a.classes[0] == "airplane" and a.classes[-1] == "truck"
    assert np.bincount(a.train_y).tolist() == [12] * 10
    # The class-dependent colour survives decoding: class 3 images average ~70.
    assert abs(a.train_x[a.train_y == 3].mean() - 70) < 2
    tgz = tmp_path / "c.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tiny_tree / "train", arcname="cifar/train")
        tf.add(tiny_tree / "test", arcname="cifar/test")
    b = load_cifar10(tgz)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    assert b.source_kind == "image-folder (png)"


def _fake_batches(root):
    rng = np.random.default_rng(1)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    data = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        data[name] = (x, y)
        (d / name).write_bytes(pickle.dumps({"data": x, "labels": y}))
    return d, data


def test_cifar_batches_folder_and_original_tarball(tmp_path):
    d, data = _fake_batches(tmp_path / "src")
    a = load_cifar10(tmp_path / "src")  # a folder holding cifar-10-batches-py
    assert a.source_kind == "cifar-10-batches-py"
    assert a.train_x.shape == (20, 3, 32, 32) and a.test_x.shape == (3, 3, 32, 32)
    assert np.array_equal(a.train_x[0].reshape(-1), data["data_batch_1"][0][0])
    assert a.train_y[4] == data["data_batch_2"][1][0]
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    b = load_cifar10(tgz)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_cache_is_used_and_keyed_by_checksum(tiny_tree, tmp_path, monkeypatch):
    tgz = tmp_path / "c.tar"
    with tarfile.open(tgz, "w") as tf:
        tf.add(tiny_tree / "train", arcname="train")
        tf.add(tiny_tree / "test", arcname="test")
    first = load_cifar10(tgz)
    monkeypatch.setattr(cifar, "_load_tar", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_cifar10(tgz)
    assert np.array_equal(first.train_x, again.train_x)
    monkeypatch.undo()
    # A changed source has another checksum and is decoded afresh.
    other = write_image_tree(tmp_path / "other", 2, 1, seed=5)
    tgz2 = tmp_path / "c2.tar"
    with tarfile.open(tgz2, "w") as tf:
        tf.add(other / "train", arcname="train")
        tf.add(other / "test", arcname="test")
    assert load_cifar10(tgz2).train_x.shape[0] == 20


def test_missing_and_corrupt_sources(tmp_path):
    with pytest.raises(UserError, match="no CIFAR-10 found at .*--download"):
        load_cifar10(tmp_path / "nowhere")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_cifar10(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 found"):
        load_cifar10(empty)


def test_wrong_image_size_is_refused(tmp_path):
    root = write_image_tree(tmp_path / "t", 1, 1, classes=("a", "b"))
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "train" / "a" / "big.png")
    with pytest.raises(UserError, match="are 32x32"):
        load_cifar10(root)


def test_split_is_45k_5k_fixed_and_disjoint():
    tr, va = split_indices(50000, seed=0)
    assert len(tr) == 45000 and len(va) == 5000
    assert len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == 50000
    tr2, va2 = split_indices(50000, seed=0)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, split_indices(50000, seed=1)[1])


def _brute_force_match(out, x, pad=4):
    padded = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    hits = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = padded[..., oy: oy + h, ox: ox + w]
            for flip in (False, True):
                if torch.equal(out, crop.flip(-1) if flip else crop):
                    hits.append((oy, ox, flip))
    return hits


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 6))
def test_pad_crop_flip_is_a_crop_of_the_padded_image(seed, b):
    x = torch.arange(b * 2 * 32 * 32, dtype=torch.float32).reshape(b, 2, 32, 32) + 1  # all values distinct, non-zero
    out = pad_crop_flip(x, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    for i in range(b):
        assert len(_brute_force_match(out[i], x[i])) == 1


def test_augmentation_covers_offsets_and_flips():
    x = torch.arange(64 * 32 * 32, dtype=torch.float32).reshape(64, 1, 32, 32) + 1
    out = pad_crop_flip(x, torch.Generator().manual_seed(0))
    found = [_brute_force_match(out[i], x[i])[0] for i in range(64)]
    flips = sum(f for _, _, f in found)
    assert 16 <= flips <= 48
    assert len({(oy, ox) for oy, ox, _ in found}) > 20
    same = pad_crop_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_to_float_subtracts_per_pixel_mean():
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    mean = torch.full((3, 32, 32), 0.25)
    assert torch.allclose(to_float(x, mean), torch.full((2, 3, 32, 32), 0.75))


def test_a_tampered_batch_file_cannot_run_code(tmp_path):
    d, _ = _fake_batches(tmp_path / "src")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (d / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(UserError, match="not allowed in a CIFAR batch file"):
        load_cifar10(tmp_path / "src")
    assert not marker.exists()
