"""The paper's three ImageNet testing protocols, top-1 and top-5 error.

* ``center``: one central crop of the image resized to the test shorter side (224 of
  256); the validation curves of Fig. 4.
* ``10crop``: the standard 10-crop testing of AlexNet (four corners and center, and
  the same of the flipped image), softmax scores averaged; Tables 2 and 3.
* ``multiscale``: the fully-convolutional form on whole images with the shorter side
  at 224, 256, 384, 480 and 640, softmax scores averaged over the scales; Table 4.
  Our nets end in global average pooling and one fc layer; because the fc is linear,
  ``fc(mean over positions of the features)`` equals the spatial mean of the class
  score map of the fc applied at every position as a 1x1 convolution, so running the
  net on the whole image *is* the fully-convolutional evaluation.

Sizes scale with the run's crop (see :mod:`resnet_repro.train.imagenet_schedule`).
Inputs are normalised as the net was trained: our runs subtract their per-pixel mean
image (its per-channel average for whole images in multi-scale testing); weights
imported from torchvision use torchvision's per-channel mean and std.

Under torchrun the images are sharded without padding and the counts summed, so every
image counts once. :func:`run_evaluation` writes ``eval-<protocol>.json`` with
``top1_error``, ``top5_error`` (percent), ``protocol``, ``images`` and provenance.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_repro.data.imagenet import (
    CenterView,
    ImageFolderSplit,
    ImageIndex,
    MultiScaleView,
    TenCropView,
    auto_workers,
    build_index,
    make_loader,
    normalize_batch,
    warn_bad,
)
from resnet_repro.errors import UserError
from resnet_repro.fsio import sha256_file
from resnet_repro.train import distributed

PROTOCOLS = ("center", "10crop", "multiscale")
DEFAULT_BATCH = {"center": 100, "10crop": 16, "multiscale": 4}  # images per loader batch


@dataclass
class Normalizer:
    """How a net's inputs are normalised: ``mean`` ``(3, c, c)`` (a per-pixel mean image)
    or ``(3,)`` (per channel), optional ``std`` ``(3,)``; ``kind`` names it."""

    mean: torch.Tensor
    std: torch.Tensor | None
    kind: str

    def to(self, device: torch.device | str) -> Normalizer:
        """The same normaliser with its tensors on ``device``."""
        return Normalizer(self.mean.to(device), None if self.std is None else self.std.to(device), self.kind)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> normalised float (see :func:`normalize_batch`)."""
        return normalize_batch(x, self.mean, self.std)


@dataclass
class EvalResult:
    """Top-1 and top-5 error (%) over ``images`` readable images; ``skipped`` unreadable."""

    top1_error: float
    top5_error: float
    images: int
    skipped: int


def make_view(protocol: str, crop: int, test_short: int, multiscale: tuple[int, ...]):
    """The test view of ``protocol`` (see the module docstring).

    Raises:
        UserError: for an unknown protocol.
    """
    if protocol == "center":
        return CenterView(crop, test_short)
    if protocol == "10crop":
        return TenCropView(crop, test_short)
    if protocol == "multiscale":
        return MultiScaleView(multiscale)
    raise UserError(f"unknown protocol {protocol!r}; choose center, 10crop or multiscale")


def _forward(model: nn.Module, x: torch.Tensor, norm: Normalizer, precision: str, channels_last: bool) -> torch.Tensor:
    xf = norm(x)
    if channels_last:
        xf = xf.contiguous(memory_format=torch.channels_last)
    if precision == "bf16":
        with torch.autocast(device_type=xf.device.type, dtype=torch.bfloat16):
            out = model(xf)
    else:
        out = model(xf)
    return torch.softmax(out.to(torch.promote_types(out.dtype, torch.float32)), dim=1)  # bf16 -> fp32


@torch.no_grad()
def protocol_scores(model: nn.Module, x: Any, protocol: str, norm: Normalizer, device: torch.device,
                    precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """Averaged softmax scores ``(B, classes)`` of a batch of views.

    Args:
        x: ``center``: ``(B, 3, c, c)`` uint8; ``10crop``: ``(B, 10, 3, c, c)`` uint8 (the
            10 crops' scores are averaged); ``multiscale``: a list of ``B`` lists of
            ``(3, H_s, W_s)`` uint8 whole images (the scales' scores are averaged;
            images of the same size at a scale go through the net together).
        model: in eval mode.
    """
    if protocol == "center":
        return _forward(model, x.to(device, non_blocking=True), norm, precision, channels_last)
    if protocol == "10crop":
        b, v = x.shape[:2]
        p = _forward(model, x.to(device, non_blocking=True).flatten(0, 1), norm, precision, channels_last)
        return p.view(b, v, -1).mean(1)
    if protocol == "multiscale":
        n_scales = len(x[0])
        total: torch.Tensor | None = None
        for si in range(n_scales):
            groups: dict[tuple[int, ...], list[int]] = {}
            for bi, views in enumerate(x):
                groups.setdefault(tuple(views[si].shape), []).append(bi)
            for members in groups.values():
                batch = torch.stack([x[bi][si] for bi in members]).to(device, non_blocking=True)
                p = _forward(model, batch, norm, precision, channels_last)
                if total is None:
                    total = torch.zeros(len(x), p.shape[1], device=device)
                total[members] += p
        assert total is not None
        return total / n_scales
    raise UserError(f"unknown protocol {protocol!r}; choose center, 10crop or multiscale")


def eval_loader(dataset: ImageFolderSplit, ctx: distributed.DistContext, batch_size: int, workers: int,
                pin_memory: bool, persistent: bool = False):
    """A DataLoader over this rank's shard of ``dataset`` (images ``rank, rank+W, ...``;
    no padding, so each image is evaluated by exactly one rank)."""
    shard = distributed.eval_shard(len(dataset), ctx)
    return make_loader(dataset, workers, pin_memory, batch_size=batch_size, sampler=shard, persistent=persistent)


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader, protocol: str, norm: Normalizer, ctx: distributed.DistContext,
                    device: torch.device, precision: str = "fp32", channels_last: bool = False,
                    on_batch: Callable[[int], None] | None = None) -> EvalResult:
    """Top-1 / top-5 error of ``model`` (switched to eval mode) over the images of
    ``loader`` on every rank (counts summed over ranks). Unreadable images are skipped
    with a warning and counted.

    Raises:
        UserError: if no image could be read.
    """
    was = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # wrong1, wrong5, images, skipped
    for batch in loader:
        if batch["bad"]:
            warn_bad(batch["bad"])
            counts[3] += len(batch["bad"])
        if batch["x"] is None:
            continue
        y = batch["y"].to(device, non_blocking=True)
        p = protocol_scores(model, batch["x"], protocol, norm, device, precision, channels_last)
        k = min(5, p.shape[1])
        top = p.topk(k, dim=1).indices
        counts[0] += (top[:, 0] != y).sum()
        counts[1] += (~(top == y[:, None]).any(1)).sum()
        counts[2] += len(y)
        if on_batch is not None:
            on_batch(len(y) + len(batch["bad"]))
    model.train(was)
    distributed.all_reduce_sum(counts, ctx)
    n = int(counts[2].item())
    if n == 0:
        raise UserError("no readable image to evaluate; check the val/ folder")
    return EvalResult(100.0 * counts[0].item() / n, 100.0 * counts[1].item() / n, n, int(counts[3].item()))


# ---------------------------------------------------------------------------- loading models
@dataclass
class LoadedModel:
    """A net ready for evaluation and what it needs: normalisation, test sizes, the class
    folder names it was trained on (None: not recorded), and where it came from."""

    model: nn.Module
    norm: Normalizer
    crop: int
    test_short: int
    multiscale: tuple[int, ...]
    classes: list[str] | None
    source: dict


def _from_training_state(state: dict, where: str) -> LoadedModel:
    from resnet_repro.data.imagenet import DataStats
    from resnet_repro.models import build

    try:
        model = build(state["arch"], state["shortcut"], num_classes=int(state["num_classes"]),
                      stride_on=state.get("stride_on"))
        model.load_state_dict(state["model"])
        stats = DataStats.from_state(state["stats"])
        s = state["imagenet"]
        return LoadedModel(model, Normalizer(stats.mean, None, "per-pixel mean image"), int(s["crop"]),
                           int(s["test_short"]), tuple(int(v) for v in s["multiscale"]), list(state["classes"]),
                           {"arch": state["arch"], "shortcut": state["shortcut"], "iteration": state.get("iteration")})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{where} is not an ImageNet checkpoint of this project ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from None


def load_run_model(run_dir: str | os.PathLike) -> LoadedModel:
    """The final model of an ImageNet run directory (``checkpoints/final.pt``), with the
    run's mean image and test sizes.

    Raises:
        UserError: not a run directory, not an ImageNet run, or not finished.
    """
    from resnet_repro.train import checkpoint

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise UserError(f"{run} is not a run directory (no config.json); pass --run-dir RUN_DIR or --weights FILE --arch NAME")
    final = run / "checkpoints" / "final.pt"
    if not final.is_file():
        raise UserError(f"{run} has no checkpoints/final.pt (unfinished run?); finish it with "
                        "`resnet-repro train ... --resume` first")
    sha = checkpoint.read_index(run / "checkpoints")["sha256"].get("final.pt")
    try:
        state = checkpoint.load_verified(final, sha)
    except ValueError as exc:
        raise UserError(f"cannot load {final}: {exc}") from None
    lm = _from_training_state(state, str(final))
    lm.source.update({"run": str(run), "checkpoint": str(final), "sha256": sha or sha256_file(final)})
    return lm


def load_weights_model(weights: str | os.PathLike, arch: str, crop: int | None = None) -> LoadedModel:
    """A net from a weights file: one written by ``resnet-repro import-weights``
    (torchvision weights; normalised with torchvision's mean and std) or an ImageNet
    run's ``final.pt``. ``arch`` must name the file's net.

    Raises:
        UserError: unreadable file, unknown format, or ``arch`` not the file's net.
    """
    from resnet_repro.models.convert import IMPORT_FORMAT, _torch_load, build_imported
    from resnet_repro.models.registry import spec
    from resnet_repro.train.imagenet_schedule import paper_sizes

    path = Path(weights)
    want = spec(arch).name
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not weights; pass a file from `resnet-repro import-weights`")
    if obj.get("format") == IMPORT_FORMAT:
        if obj.get("arch") != want:
            raise UserError(f"{path} holds {obj.get('arch')}, not {want}; pass --arch {obj.get('arch')}")
        import torchvision

        model = build_imported(path)
        tv = torchvision.models.get_model_weights(want).DEFAULT.transforms()
        norm = Normalizer(torch.tensor(tv.mean), torch.tensor(tv.std), "torchvision per-channel mean/std")
        sizes = paper_sizes(crop)
        return LoadedModel(model, norm, sizes["crop"], sizes["test_short"], tuple(sizes["multiscale"]), None,
                           {"weights": str(path), "sha256": sha256_file(path), "arch": want,
                            "weights_source": obj.get("source")})
    if "stats" in obj and "model" in obj:
        if obj.get("arch") != want:
            raise UserError(f"{path} holds {obj.get('arch')}, not {want}; pass --arch {obj.get('arch')}")
        lm = _from_training_state(obj, str(path))
        lm.source.update({"weights": str(path), "sha256": sha256_file(path)})
        return lm
    raise UserError(f"{path} is neither a file from `resnet-repro import-weights` nor an ImageNet run's final.pt")


# ---------------------------------------------------------------------------- the command
def run_evaluation(
    protocol: str,
    data_dir: str,
    run_dir: str | None = None,
    weights: str | None = None,
    arch: str | None = None,
    out: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    images: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[dict, Path | None]:
    """Evaluate a run's final model or a weights file on ``data_dir/val`` under
    ``protocol`` and write the result (rank 0) to ``out`` or ``RUN/eval-<protocol>.json``
    (for ``--weights``: ``<weights>.eval-<protocol>.json`` beside the file).

    Args:
        images: evaluate only this many evenly spaced val images (quick looks); the
            result records it.

    Returns:
        ``(result, path written)``; the result has ``top1_error``, ``top5_error``
        (percent), ``protocol``, ``images``, ``skipped_images`` and ``provenance``.

    Raises:
        UserError: neither or both of ``run_dir`` and ``weights``, ``weights`` without
            ``arch``, bad protocol, data layout, or classes that do not match the net.
    """
    from resnet_repro import __version__
    from resnet_repro.train.config import git_commit, hardware, resolve_device, resolve_precision
    from resnet_repro.train.imagenet_loop import eval_subset_indices

    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose center, 10crop or multiscale")
    if (run_dir is None) == (weights is None):
        raise UserError("give exactly one of --run-dir DIR or --weights FILE (with --arch NAME)")
    if weights is not None and not arch:
        raise UserError("--weights needs --arch NAME (e.g. --arch resnet50)")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if out is not None:
        path: Path | None = Path(out)
    elif run_dir is not None:
        path = Path(run_dir) / f"eval-{protocol}.json"
    else:
        path = Path(f"{weights}.eval-{protocol}.json")
    dev_name = resolve_device(device)
    prec, _ = resolve_precision(precision, dev_name)
    ctx, dev_name = distributed.setup(dev_name)
    try:
        lm = distributed.run_on_main(
            ctx, lambda: load_run_model(run_dir) if run_dir is not None else load_weights_model(weights, arch))

        def check_out() -> None:  # before hours of evaluation, not after
            from resnet_repro.fsio import unwritable_reason

            why = unwritable_reason(path)
            if why is not None:
                raise UserError(f"cannot write {path} ({why}); choose a writable --out")

        distributed.run_on_main(ctx, check_out)

        def index_fn() -> ImageIndex:
            return build_index(data_dir, splits=("val",))

        index = distributed.run_on_main(ctx, index_fn)
        n_classes = lm.model.fc.out_features
        if lm.classes is not None and list(index.classes) != lm.classes:
            raise UserError(f"the class folders of {data_dir}/val differ from those the net was trained on "
                            f"({len(index.classes)} vs {len(lm.classes)} classes); point --data-dir at the right copy")
        if len(index.classes) != n_classes:
            raise UserError(f"{data_dir}/val has {len(index.classes)} class folders but the net has {n_classes} "
                            "outputs; evaluate on the data set the net was trained for")
        dev = torch.device(dev_name)
        model = lm.model.to(dev).eval()
        norm = lm.norm.to(dev)
        view = make_view(protocol, lm.crop, lm.test_short, lm.multiscale)
        ds = ImageFolderSplit(index, "val", view, eval_subset_indices(len(index.val), images))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        nw = workers if workers is not None else auto_workers(local_world)
        loader = eval_loader(ds, ctx, batch_size or DEFAULT_BATCH[protocol], nw, dev.type == "cuda")
        if on_start is not None and ctx.is_main:
            on_start(len(distributed.eval_shard(len(ds), ctx)))
        t0 = time.perf_counter()
        res = evaluate_loader(model, loader, protocol, norm, ctx, dev, prec, False,
                              on_batch if ctx.is_main else None)
        wall = time.perf_counter() - t0
        result = {
            "top1_error": round(res.top1_error, 4), "top5_error": round(res.top5_error, 4), "protocol": protocol,
            "images": res.images, "skipped_images": res.skipped, "classes": len(index.classes),
            "sizes": {"crop": lm.crop, "test_short": lm.test_short, "multiscale": list(lm.multiscale)},
            "provenance": {
                **lm.source, "data_dir": str(data_dir), "val_images_total": len(index.val),
                "val_subset": images, "normalization": lm.norm.kind, "package_version": __version__,
                "git_commit": git_commit(), "torch_version": torch.__version__, "hardware": hardware(dev_name),
                "device": dev_name, "precision": prec, "world_size": ctx.world_size, "wall_s": round(wall, 2),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
        if not ctx.is_main:
            path = None
        else:
            from resnet_repro.fsio import atomic_write_json

            try:
                atomic_write_json(path, result)
            except OSError as exc:
                raise UserError(f"cannot write {path} ({exc.strerror}); choose a writable --out") from None
        return result, path
    finally:
        distributed.teardown(ctx)


def result_line(result: dict) -> str:
    """``10crop: top-1 error 27.88%, top-5 error 9.1% over 50000 images``."""
    return (f"{result['protocol']}: top-1 error {result['top1_error']:.2f}%, top-5 error "
            f"{result['top5_error']:.2f}% over {result['images']} images"
            + (f" ({result['skipped_images']} unreadable skipped)" if result.get("skipped_images") else ""))

