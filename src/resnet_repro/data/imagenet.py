"""ImageNet in the image-folder layout, with the paper's augmentation (Sec. 3.4).

Layout (``--data-dir``)::

    train/<wnid>/*.JPEG     one folder per class (1000 for ILSVRC-2012)
    val/<wnid>/*.JPEG       the same class folders

Training views (paper Sec. 3.4, after AlexNet and VGG): "the image is resized with its
shorter side randomly sampled in [256, 480] for scale augmentation. A 224x224 crop is
randomly sampled from an image or its horizontal flip, with the per-pixel mean
subtracted. The standard color augmentation [AlexNet] is used."

* :class:`TrainView` draws the shorter side, the crop position, the flip and the three
  PCA lighting coefficients from a generator seeded by ``(seed, epoch, image index)``:
  the augmentation of every image is a pure function of the run's seed, whatever the
  number of DataLoader workers or processes, and a resumed run continues exactly.
* Workers return uint8 crops (4x less to copy than floats); the per-pixel mean
  subtraction and the lighting offset are applied to the whole batch on the training
  device (:func:`normalize_batch`, :func:`lighting_offsets`).
* The per-pixel mean image and the RGB covariance for the PCA lighting are computed
  once from a seeded sample of training images (:func:`compute_stats`) and cached beside
  the data index (:func:`cache_root`).

Test views (:class:`CenterView`, :class:`TenCropView`, :class:`MultiScaleView`) serve
the three testing protocols of :mod:`resnet_repro.evaluate`.

An unreadable image never stops a run: the dataset returns a :class:`BadImage` in its
place, :func:`collate` drops it from the batch, and the caller warns and counts it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.cifar import cache_dir
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write, atomic_write_json

INDEX_VERSION = 1
HOW_TO_LAY_OUT = ("expected DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG with the same class folders; "
                  "give DIR as --data-dir")


# ---------------------------------------------------------------------------- index
@dataclass(frozen=True)
class ImageIndex:
    """The files of an image-folder data set.

    Attributes:
        root: the data directory (absolute).
        classes: class folder names, sorted; label ``i`` is ``classes[i]``.
        train / val: ``(relative path, label)`` pairs, sorted by class then file name.
        digest: SHA-256 over every relative path and file size (the data checksum a run
            records; reading 150 GB of ImageNet to hash contents is not practical).
    """

    root: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]
    digest: str

    def path(self, rel: str) -> str:
        """The file path of an image given relative to the data root (as stored in
        ``train``/``val``)."""
        return os.path.join(self.root, rel)


def _scan_split(root: Path, split: str, classes: Sequence[str]) -> tuple[list[tuple[str, int]], list[str]]:
    samples: list[tuple[str, int]] = []
    lines: list[str] = []
    for label, c in enumerate(classes):
        entries = sorted((e for e in os.scandir(root / split / c) if e.is_file()), key=lambda e: e.name)
        for e in entries:
            if e.name.lower().endswith(IMG_EXTENSIONS):
                rel = f"{split}/{c}/{e.name}"
                samples.append((rel, label))
                lines.append(f"{rel}\t{e.stat().st_size}\n")
    return samples, lines


def _class_dirs(d: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))


def build_index(data_dir: str | os.PathLike, splits: tuple[str, ...] = ("train", "val")) -> ImageIndex:
    """Scan ``data_dir/{train,val}/<class>/`` (any extension torchvision's ImageFolder
    reads) and write the index to :func:`cache_root` as ``index.json``.

    Args:
        data_dir: the image-folder root.
        splits: ``("train", "val")`` for training; ``("val",)`` for evaluation only
            (``train`` is then empty and the classes are val's folders).

    Raises:
        UserError: ``data_dir`` missing, no ``train/`` or ``val/``, class folders that
            differ between them, or a split without images.
    """
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"no ImageNet folder at {root}; {HOW_TO_LAY_OUT}")
    for split in splits:
        if not (root / split).is_dir():
            raise UserError(f"{root} has no {split}/ folder; {HOW_TO_LAY_OUT}")
    va = _class_dirs(root / "val")
    tr = _class_dirs(root / "train") if "train" in splits else va
    if not tr:
        raise UserError(f"no class folders in {root}/{splits[0]}; {HOW_TO_LAY_OUT}")
    if tr != va:
        only_t, only_v = sorted(set(tr) - set(va)), sorted(set(va) - set(tr))
        parts = []
        if only_t:
            parts.append(f"only in train/: {', '.join(only_t[:3])}" + (" ..." if len(only_t) > 3 else ""))
        if only_v:
            parts.append(f"only in val/: {', '.join(only_v[:3])}" + (" ..." if len(only_v) > 3 else ""))
        raise UserError(f"class folders differ between train/ and val/ in {root} ({'; '.join(parts)}); "
                        "both need the same classes")
    train, lt = _scan_split(root, "train", tr) if "train" in splits else ([], [])
    val, lv = _scan_split(root, "val", tr)
    for split, s in (("train", train), ("val", val)):
        if split in splits and not s:
            raise UserError(f"no images in {root}/{split}/<class>/; {HOW_TO_LAY_OUT}")
    h = hashlib.sha256()
    for line in lt + lv:
        h.update(line.encode())
    index = ImageIndex(str(root), tuple(tr), tuple(train), tuple(val), h.hexdigest())
    try:
        atomic_write_json(cache_root(index) / "index.json", {
            "version": INDEX_VERSION, "root": index.root, "digest": index.digest, "classes": list(index.classes),
            "train": [list(s) for s in index.train], "val": [list(s) for s in index.val]})
    except OSError:
        pass  # the index is a record; an unwritable cache costs nothing but the record
    return index


def cache_root(index: ImageIndex) -> Path:
    """``<cache>/imagenet-<digest[:16]>/``: the index and the statistics of one copy."""
    return cache_dir() / f"imagenet-{index.digest[:16]}"


# ---------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class BadImage:
    """Placeholder for an image that could not be read (``path``, ``reason``)."""

    path: str
    reason: str


def load_rgb(path: str) -> Image.Image:
    """Decode ``path`` to an RGB PIL image (fully loaded, file closed).

    Raises:
        OSError / ValueError / PIL errors for unreadable files (callers turn them into
        :class:`BadImage`).
    """
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def _resize_short(img: Image.Image, short: int) -> Image.Image:
    """Resize so the shorter side is ``short`` pixels (aspect kept; torchvision's
    rounding: the longer side becomes ``int(short * long / short_side)``), bilinear with
    antialiasing. A no-op when the shorter side already has that length."""
    if min(img.size) == short:
        return img
    return TF.resize(img, [short], antialias=True)


def to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> ``(3, H, W)`` uint8 tensor."""
    return TF.pil_to_tensor(img)


# ---------------------------------------------------------------------------- views
@dataclass(frozen=True)
class TrainParams:
    """The random choices of one training view: shorter side ``scale``, crop corner
    ``(top, left)`` in the resized image, ``flip``, and lighting ``alpha`` ``(3,)``."""

    scale: int
    top: int
    left: int
    flip: bool
    alpha: np.ndarray


class TrainView:
    """Paper Sec. 3.4 training view: shorter side ``s ~ U{scale[0] .. scale[1]}``, a
    random ``crop x crop`` window, a horizontal flip with probability 1/2, and the
    AlexNet lighting coefficients ``alpha ~ N(0, lighting_std^2)`` (3 values).

    Returns ``((3, crop, crop) uint8, (3,) float32 alpha)``; the mean subtraction and
    the lighting offset are applied on the device (:func:`normalize_batch`).
    """

    def __init__(self, crop: int, scale: tuple[int, int], lighting_std: float, seed: int) -> None:
        if scale[0] < crop:
            raise UserError(f"the smallest training scale {scale[0]} is below the crop size {crop}")
        self.crop, self.scale, self.lighting_std, self.seed = crop, (int(scale[0]), int(scale[1])), lighting_std, seed

    def params(self, width: int, height: int, index: int, epoch: int) -> TrainParams:
        """The choices for image ``index`` in ``epoch`` (a pure function of the seed)."""
        rng = np.random.default_rng([self.seed, epoch, index])
        s = int(rng.integers(self.scale[0], self.scale[1] + 1))
        short, long = min(width, height), max(width, height)
        new_long = int(s * long / short) if short != s else long
        w, h = (s, new_long) if width <= height else (new_long, s)
        top = int(rng.integers(0, h - self.crop + 1))
        left = int(rng.integers(0, w - self.crop + 1))
        flip = bool(rng.random() < 0.5)
        alpha = rng.normal(0.0, self.lighting_std, 3).astype(np.float32)
        return TrainParams(s, top, left, flip, alpha)

    def __call__(self, img: Image.Image, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params(img.width, img.height, index, epoch)
        if min(img.size) == p.scale:
            img = TF.crop(img, p.top, p.left, self.crop, self.crop)
        else:
            # Resample only the crop's window of the source: the same bilinear filter and
            # pixel grid as resizing the whole image and then cropping (to rounding),
            # at a fraction of the cost for large scales.
            short, long = min(img.size), max(img.size)
            new_long = int(p.scale * long / short)
            new_w, new_h = (p.scale, new_long) if img.width <= img.height else (new_long, p.scale)
            sx, sy = img.width / new_w, img.height / new_h
            box = (p.left * sx, p.top * sy, (p.left + self.crop) * sx, (p.top + self.crop) * sy)
            img = img.resize((self.crop, self.crop), Image.BILINEAR, box=box, reducing_gap=None)
        if p.flip:
            img = TF.horizontal_flip(img)
        return to_uint8(img), torch.from_numpy(p.alpha)


class CenterView:
    """Center-crop testing (the validation curves of Fig. 4): shorter side resized to
    ``short``, the central ``crop x crop`` window. Returns ``(3, crop, crop)`` uint8."""

    def __init__(self, crop: int, short: int) -> None:
        self.crop, self.short = crop, short

    def __call__(self, img: Image.Image, index: int, epoch: int) -> torch.Tensor:
        return to_uint8(TF.center_crop(_resize_short(img, self.short), [self.crop]))


class TenCropView:
    """Standard 10-crop testing (AlexNet; paper Tables 2 and 3): shorter side resized to
    ``short``; the four corner and the central ``crop x crop`` windows, and the same five
    windows of the horizontally flipped image (torchvision's ``ten_crop`` order:
    top-left, top-right, bottom-left, bottom-right, center, then flipped).
    Returns ``(10, 3, crop, crop)`` uint8."""

    def __init__(self, crop: int, short: int) -> None:
        self.crop, self.short = crop, short

    def __call__(self, img: Image.Image, index: int, epoch: int) -> torch.Tensor:
        crops = TF.ten_crop(_resize_short(img, self.short), [self.crop])
        return torch.stack([to_uint8(c) for c in crops])


class MultiScaleView:
    """Fully-convolutional multi-scale testing (paper Table 4): the whole image with its
    shorter side resized to each of ``scales`` (224, 256, 384, 480, 640 in the paper).
    Returns a list of ``(3, H_s, W_s)`` uint8 tensors, one per scale."""

    def __init__(self, scales: Sequence[int]) -> None:
        self.scales = tuple(int(s) for s in scales)

    def __call__(self, img: Image.Image, index: int, epoch: int) -> list[torch.Tensor]:
        return [to_uint8(_resize_short(img, s)) for s in self.scales]


# ---------------------------------------------------------------------------- dataset
class ImageFolderSplit(Dataset):
    """One split of an :class:`ImageIndex` seen through a view.

    Indexed by an int or by an ``(index, epoch)`` key (the epoch seeds
    :class:`TrainView`). An item is ``(view output, label)`` or a :class:`BadImage`.
    """

    def __init__(self, index: ImageIndex, split: str, view: Any, subset: Sequence[int] | None = None) -> None:
        samples = index.train if split == "train" else index.val
        self.samples = [samples[i] for i in subset] if subset is not None else list(samples)
        self.root, self.view = index.root, view

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        rel, label = self.samples[i]
        path = os.path.join(self.root, rel)
        try:
            img = load_rgb(path)
        except Exception as exc:  # PIL raises many types for damaged files
            return BadImage(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200])
        return self.view(img, i, epoch), label


def collate(items: list[Any]) -> dict[str, Any]:
    """Batch the readable items and report the unreadable ones.

    Returns ``{"x": ..., "y": (B,) int64, "alpha": (B, 3) float32 or None,
    "bad": [(path, reason), ...]}`` where ``x`` is ``(B, 3, c, c)`` or
    ``(B, 10, 3, c, c)`` uint8, or for multi-scale views a list over images of lists
    over scales of ``(3, H, W)`` uint8. ``B`` counts readable images only (it may be 0).
    """
    good = [it for it in items if not isinstance(it, BadImage)]
    bad = [(it.path, it.reason) for it in items if isinstance(it, BadImage)]
    y = torch.tensor([lab for _, lab in good], dtype=torch.long)
    alpha = None
    if not good:
        x: Any = None
    else:
        first = good[0][0]
        if isinstance(first, tuple):
            x = torch.stack([v[0] for v, _ in good])
            alpha = torch.stack([v[1] for v, _ in good])
        elif isinstance(first, list):
            x = [v for v, _ in good]
        else:
            x = torch.stack([v for v, _ in good])
    return {"x": x, "y": y, "alpha": alpha, "bad": bad}


def warn_bad(bad: list[tuple[str, str]]) -> None:
    """One warning per unreadable image (path and reason)."""
    for path, reason in bad:
        warnings.warn(f"skipped unreadable image {path} ({reason})", stacklevel=2)


def auto_workers(local_world_size: int = 1) -> int:
    """DataLoader workers per process when not set: the CPU cores of the node shared
    among its processes, at most 16."""
    return max(1, min(16, (os.cpu_count() or 1) // max(1, local_world_size)))


def make_loader(dataset: Dataset, workers: int, pin_memory: bool, *, batch_size: int | None = None,
                batch_sampler: Any = None, sampler: Any = None, persistent: bool = True) -> DataLoader:
    """A DataLoader with :func:`collate`, ``workers`` processes (0: in this process),
    pinned memory for CUDA, persistent workers and 4 batches prefetched per worker."""
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory, "collate_fn": collate}
    if workers > 0:
        kw.update(persistent_workers=persistent, prefetch_factor=4)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, **kw)


# ---------------------------------------------------------------------------- statistics
@dataclass
class DataStats:
    """Statistics of the training images used by the input normalisation.

    Attributes:
        mean: ``(3, crop, crop)`` float32 per-pixel mean image in [0, 1] units, of
            center crops of images resized to the test shorter side.
        eigval: ``(3,)`` eigenvalues (descending) of the 3x3 covariance of RGB pixel
            values in [0, 1] units (AlexNet's "PCA on the set of RGB pixel values").
        eigvec: ``(3, 3)`` eigenvectors as columns, matching ``eigval``.
        images: how many training images the statistics come from.
    """

    mean: torch.Tensor
    eigval: torch.Tensor
    eigvec: torch.Tensor
    images: int

    def to_state(self) -> dict[str, Any]:
        """Tensors and an int only (for ``torch.save`` / a ``weights_only`` load, and for
        broadcasting to the other ranks); :meth:`from_state` inverts it."""
        return {"mean": self.mean, "eigval": self.eigval, "eigvec": self.eigvec, "images": self.images}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DataStats:
        """The statistics from :meth:`to_state`'s dict, as float32."""
        return cls(d["mean"].float(), d["eigval"].float(), d["eigvec"].float(), int(d["images"]))


def stats_sample(n_train: int, sample: int, seed: int = 0) -> list[int]:
    """A seeded, sorted choice of ``min(sample, n_train)`` training image indices."""
    k = min(sample, n_train)
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_train, generator=g)[:k].tolist())


def stats_from_crops(crops: torch.Tensor) -> DataStats:
    """Mean image and RGB PCA of ``crops`` ``(N, 3, c, c)`` uint8 (used by
    :func:`compute_stats`; separate for testing)."""
    return _finish(*_accumulate(None, crops))


def _accumulate(acc: tuple | None, crops: torch.Tensor) -> tuple:
    x = crops.double().div_(255.0)
    s_img = x.sum(0)
    px = x.permute(0, 2, 3, 1).reshape(-1, 3)
    s_px, s_xx = px.sum(0), px.T @ px
    n_img, n_px = x.shape[0], px.shape[0]
    if acc is None:
        return s_img, s_px, s_xx, n_img, n_px
    a_img, a_px, a_xx, a_n, a_np = acc
    return a_img + s_img, a_px + s_px, a_xx + s_xx, a_n + n_img, a_np + n_px


def _finish(s_img, s_px, s_xx, n_img, n_px) -> DataStats:
    mean_img = (s_img / n_img).float()
    mu = s_px / n_px
    cov = s_xx / n_px - torch.outer(mu, mu)
    val, vec = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(val, descending=True)
    return DataStats(mean_img, val[order].clamp_min(0).float(), vec[:, order].float(), int(n_img))


def compute_stats(index: ImageIndex, crop: int, short: int, sample: int, workers: int = 0,
                  seed: int = 0) -> DataStats:
    """The per-pixel mean image and RGB PCA of a seeded sample of ``sample`` training
    images (center ``crop`` of the image resized to shorter side ``short``), cached as
    ``stats-c<crop>-s<short>-n<sample>-seed<seed>.pt`` in :func:`cache_root`.

    Unreadable images are skipped with a warning.

    Raises:
        UserError: if none of the sampled images can be read.
    """
    path = cache_root(index) / f"stats-c{crop}-s{short}-n{sample}-seed{seed}.pt"
    if path.is_file():
        try:
            return DataStats.from_state(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:
            pass  # a damaged cache is recomputed
    ds = ImageFolderSplit(index, "train", CenterView(crop, short), stats_sample(len(index.train), sample, seed))
    acc = None
    for b in make_loader(ds, workers, False, batch_size=64, persistent=False):
        warn_bad(b["bad"])
        if b["x"] is not None:
            acc = _accumulate(acc, b["x"])
    if acc is None:
        raise UserError(f"none of the sampled training images in {index.root} could be read; check the data")
    stats = _finish(*acc)
    try:
        atomic_write(path, lambda fh: torch.save(stats.to_state(), fh))
    except OSError:
        pass
    return stats


# ---------------------------------------------------------------------------- device side
def lighting_offsets(alpha: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """AlexNet PCA colour augmentation: to every pixel of image ``b`` add
    ``eigvec @ (alpha[b] * eigval)``.

    Args:
        alpha: ``(B, 3)`` coefficients, drawn ``N(0, sigma^2)`` (sigma = 0.1 in AlexNet).
        eigval: ``(3,)`` eigenvalues of the RGB covariance.
        eigvec: ``(3, 3)`` eigenvectors as columns.

    Returns:
        ``(B, 3)`` RGB offsets; their covariance is ``sigma^2 * V diag(eigval^2) V^T``.
    """
    return (alpha * eigval) @ eigvec.T


def normalize_batch(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None = None,
                    offsets: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 -> float ``x / 255 - mean (+ offsets) (/ std)``, in torch's
    default float dtype (float32; float64 where a check sets it, as
    ``tests/test_distributed.py`` does to compare process counts).

    ``mean`` is the ``(3, c, c)`` mean image when ``H = W = c``; for any other size
    (multi-scale testing of whole images) its per-channel average is subtracted. ``std``
    ``(3,)`` is only used for weights trained with per-channel standardisation
    (torchvision's); ``offsets`` ``(B, 3)`` are lighting offsets.
    """
    h, w = x.shape[-2:]
    xf = x.to(torch.get_default_dtype()).div_(255.0)
    if mean.dim() == 3 and tuple(mean.shape[-2:]) == (h, w):
        xf.sub_(mean)
    else:
        xf.sub_(mean.reshape(3, -1).mean(1).view(3, 1, 1) if mean.dim() == 3 else mean.view(3, 1, 1))
    if offsets is not None:
        xf.add_(offsets.view(-1, 3, 1, 1))
    if std is not None:
        xf.div_(std.view(3, 1, 1))
    return xf


# ---------------------------------------------------------------------------- fixture
def build_mini_imagenet(cifar_source: str | os.PathLike, out_dir: str | os.PathLike, train_per_class: int = 8,
                        val_per_class: int = 2, short_side: int = 256, classes: int = 10) -> Path:
    """A small image-folder "ImageNet" from a CIFAR-10 image-folder tar(.gz) (such as the
    shared JPEG copy): the first ``train_per_class`` train and ``val_per_class`` test
    images of each class, resized to ``short_side`` pixels (bicubic) and saved as
    ``out_dir/{train,val}/<class>/NNNN.JPEG``. Real photos for running the whole ImageNet
    path on a CPU; not a substitute for ImageNet.

    Raises:
        UserError: if the source is not such a tar or has too few images.
    """
    src, out = Path(cifar_source), Path(out_dir)
    want = {"train": train_per_class, "test": val_per_class}
    got: dict[tuple[str, str], int] = {}
    try:
        with tarfile.open(src, "r:*") as tf:
            for m in tf:
                parts = Path(m.name).parts
                if not m.isfile() or len(parts) < 3 or parts[-3] not in want:
                    continue
                split, cls = parts[-3], parts[-2]
                k = got.get((split, cls), 0)
                if k >= want[split] or (k == 0 and len({c for (s, c) in got if s == split}) >= classes):
                    continue
                with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:
                    img = im.convert("RGB").resize((short_side, short_side), Image.BICUBIC)
                d = out / ("val" if split == "test" else "train") / cls
                d.mkdir(parents=True, exist_ok=True)
                img.save(d / f"{k:04d}.JPEG", quality=90)
                got[(split, cls)] = k + 1
                if len(got) == 2 * classes and all(v >= want[sp] for (sp, _), v in got.items()):
                    break
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"cannot read {src} as a CIFAR-10 image-folder tar ({exc})") from None
    short = [f"{s}/{c}" for (s, c), k in got.items() if k < want[s]]
    if not got or short:
        raise UserError(f"{src} has too few images for the fixture ({', '.join(short[:3]) or 'none'})")
    return out


def describe_stats(stats: DataStats) -> dict[str, Any]:
    """JSON-friendly summary of :class:`DataStats` (channel means, eigenvalues)."""
    return {"images": stats.images, "channel_mean": [round(v, 5) for v in stats.mean.reshape(3, -1).mean(1).tolist()],
            "pca_eigval": [round(v, 6) for v in stats.eigval.tolist()]}
