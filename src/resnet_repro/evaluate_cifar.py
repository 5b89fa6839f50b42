"""CIFAR-10 (or CIFAR-100) test error of a weights file or a finished run (``resnet-repro
evaluate --dataset cifar10``, ``--dataset cifar100``).

CIFAR-100 runs and their checkpoints (100 outputs) are evaluated the same way on the
CIFAR-100 test set, into ``eval-cifar100.json`` records (``dataset`` ``cifar100``).

One view of each test image (paper Sec. 4.2), all 10,000 by default, fp32 by default,
the net in eval mode. The inputs are normalised as the weights were trained, by default:

* a file of ``resnet-repro import-weights`` records its normalisation (akamaster's
  CIFAR-10 nets: RGB in [0, 1] minus the ImageNet mean, divided by the ImageNet std);
* a run (``--run RUN``) uses its own: the per-pixel mean of its training images (paper
  Sec. 4.2), or the ``input_norm`` of a run fine-tuned from imported weights;
* a CIFAR checkpoint given as ``--weights`` uses the ``input_norm`` it records, else the
  per-pixel mean of all training images of ``--data-dir`` (our runs' way; a run's 45k
  split has a mean within a fraction of a grey level of it).

``--normalization imagenet`` or ``pixel-mean`` evaluates with another one; where that is
not the weights' own, the result says so and a warning is printed (a net fed inputs of
another scale and offset is not being measured).

The record (:data:`RECORD_FORMAT`) is a JSON object: ``test_error`` (%), ``wrong``,
``images`` (evaluated) and ``images_total`` (in the test set), the net, the weights
(path, sha256, and the provenance an import recorded: source file and its sha256,
repository, licence, training data, published error), the normalisation used and
whether it is the weights' own, the data copy (path, checksum, kind), precision, device,
threads, hardware, wall time, versions and git commit. By default it is written beside
the weights (``WEIGHTS.eval-cifar10.json``) or into the run
(``RUN/eval-cifar10.json``); a suffix names a non-default precision, normalisation or
subset (``-bf16``, ``-norm-imagenet``, ``-images500``). Table 6's reference block reads
the records in ``results/cifar10-reference/`` (``make reference`` writes them there).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_repro.errors import UserError

RECORD_FORMAT = "resnet_repro.cifar10_eval/1"
NORMALIZATIONS = ("auto", "imagenet", "pixel-mean")


@dataclass
class CifarNet:
    """A CIFAR-10 net ready for evaluation and how its inputs were normalised in training.

    Attributes:
        own_norm: ``"imagenet"``, ``"pixel-mean"``, ``"custom"`` (another per-channel
            mean/std) or ``None`` (not recorded: assumed ``"pixel-mean"``).
        own_mean / own_std: the per-channel values of ``own_norm`` (None for the
            per-pixel mean).
        pixel_mean: ``(3, 32, 32)`` per-pixel training mean where the source defines one
            (a run: its training split), else None (computed from the data).
        weights: what the record says about the weights (path, sha256, provenance).
    """

    model: torch.nn.Module
    arch: str
    shortcut: str | None
    own_norm: str | None
    own_mean: list[float] | None
    own_std: list[float] | None
    norm_name: str
    weights: dict[str, Any]
    pixel_mean: torch.Tensor | None = None
    origin: str = "the weights' own"
    data_dir: str | None = None
    data_checksum: str | None = None
    notes: list[str] = field(default_factory=list)
    dataset: str = "cifar10"


def _norm_key(mean: list[float] | None, std: list[float] | None) -> str:
    from resnet_repro.models.convert import IMAGENET_MEAN, IMAGENET_STD

    if mean is None:
        return "pixel-mean"
    if (std is not None and np.allclose(mean, IMAGENET_MEAN, atol=1e-6, rtol=0)
            and np.allclose(std, IMAGENET_STD, atol=1e-6, rtol=0)):
        return "imagenet"
    return "custom"


def _recorded(pre: Any) -> tuple[list[float] | None, list[float] | None, str] | None:
    if not isinstance(pre, dict):
        return None
    try:
        mean = [float(v) for v in pre["mean"]]
        std = [float(v) for v in pre["std"]] if pre.get("std") is not None else None
    except (KeyError, TypeError, ValueError):
        return None
    if len(mean) != 3 or (std is not None and len(std) != 3):
        return None
    return mean, std, str(pre.get("name") or "")


def load_weights_net(weights: str | os.PathLike, arch: str | None = None, dataset: str | None = None) -> CifarNet:
    """A CIFAR-10 net from a file of ``import-weights`` or a CIFAR run's checkpoint (a
    CIFAR-100 net: 100 outputs, ``dataset`` None or ``"cifar100"``).

    Raises:
        UserError: unreadable file, not one of those formats, an ImageNet net,
            ``arch`` given and not the file's net, or outputs that are not the classes of
            ``dataset`` (10 for CIFAR-10, 100 for CIFAR-100).
    """
    from resnet_repro.data.cifar import NUM_CLASSES
    from resnet_repro.fsio import sha256_file
    from resnet_repro.models import build
    from resnet_repro.models.convert import IMPORT_FORMAT, _torch_load
    from resnet_repro.models.registry import spec

    path = Path(weights)
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == IMPORT_FORMAT:
        net, shortcut = obj.get("arch"), (obj.get("build_kwargs") or {}).get("shortcut")
        sd, classes, pre = obj.get("state_dict"), obj.get("num_classes"), obj.get("preprocessing")
        prov = obj.get("provenance") if isinstance(obj.get("provenance"), dict) else {}
        fmt = "import-weights"
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("arch"), str):
        net, shortcut, sd = obj["arch"], obj.get("shortcut"), obj["model"]
        classes, pre, prov, fmt = obj.get("num_classes", 10), obj.get("input_norm"), {}, "checkpoint"
    else:
        raise UserError(f"{path} is neither a file of `resnet-repro import-weights` nor a CIFAR run's checkpoint; "
                        "import published weights first (`resnet-repro import-weights --from akamaster`)")
    if not isinstance(net, str):
        raise UserError(f"{path} names no architecture; import it again with `resnet-repro import-weights`")
    s = spec(net)
    if s.family != "cifar":
        raise UserError(f"{path} holds {s.name}, an ImageNet net; evaluate it with --dataset imagenet")
    if arch is not None and spec(arch).name != s.name:
        raise UserError(f"{path} holds {s.name}, not {spec(arch).name}; pass --arch {s.name} (or drop --arch)")
    if dataset is None:
        dataset = "cifar100" if classes == 100 else "cifar10"
    want = NUM_CLASSES.get(dataset)
    if classes != want:
        name = "CIFAR-100" if dataset == "cifar100" else "CIFAR-10"
        raise UserError(f"{path} has {classes} outputs; {name} has {want} classes"
                        + ("" if classes not in NUM_CLASSES.values() else
                           f" (evaluate it with --dataset {'cifar100' if classes == 100 else 'cifar10'})"))
    model = build(s.name, shortcut if s.residual else None, num_classes=classes)
    try:
        model.load_state_dict(sd)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{path}: its tensors do not fit {s.name}: {first}") from None
    rec = _recorded(pre)
    mean, std, name = rec if rec is not None else (None, None, "")
    own = _norm_key(mean, std) if rec is not None else None
    info = {"path": str(path), "sha256": sha256_file(path), "format": fmt, "arch": s.name, "shortcut": shortcut,
            "source": obj.get("source") if fmt == "import-weights" else None, "provenance": prov}
    origin = ("the weights' own, recorded in the file" if rec is not None
              else "not recorded in the file: the per-pixel mean, as our runs train")
    return CifarNet(model, s.name, shortcut, own, mean, std, name, info, origin=origin, dataset=dataset)


def load_run_net(run_dir: str | os.PathLike, data_dir: str | None = None) -> CifarNet:
    """The final net of a CIFAR-10 (or CIFAR-100) run with its own normalisation (its
    per-pixel training mean, computed from the run's split of its data, or its
    ``input_norm``).

    Raises:
        UserError: not a finished CIFAR run, or data other than the run's.
    """
    from resnet_repro.analysis.responses import _check_run
    from resnet_repro.models import build
    from resnet_repro.train import checkpoint
    from resnet_repro.train.loop import prepare_data

    run = Path(run_dir)
    cfg, ckpt, sha = _check_run(run, datasets=("cifar10", "cifar100"))
    try:
        state = checkpoint.load_verified(ckpt, sha, map_location="cpu")
    except ValueError as exc:
        raise UserError(f"{run}: unusable final checkpoint ({exc}); train the run again") from None
    model = build(cfg.arch, cfg.shortcut, num_classes=cfg.num_classes, stride_on=cfg.stride_on)
    model.load_state_dict(state["model"])
    cfg_here = cfg.model_copy(update={"device": "cpu", **({"data_dir": str(data_dir)} if data_dir else {})})
    data = prepare_data(cfg_here)
    if cfg.data_checksum and data.checksum != cfg.data_checksum:
        raise UserError(f"the data at {cfg_here.data_dir} differs from the run's (checksum {data.checksum[:12]} vs "
                        f"{cfg.data_checksum[:12]}); point --data-dir at the copy the run used")
    if cfg.input_norm is not None:
        mean, std, name = list(cfg.input_norm.mean), list(cfg.input_norm.std), cfg.input_norm.name
    else:
        mean, std, name = None, None, ""
    info = {"path": str(ckpt), "sha256": sha, "format": "run", "run": str(run), "arch": cfg.arch,
            "shortcut": cfg.shortcut, "init_weights_sha256": cfg.init_weights_sha256}
    return CifarNet(model, cfg.arch, cfg.shortcut, _norm_key(mean, std), mean, std, name, info,
                    pixel_mean=data.mean if cfg.input_norm is None else None, origin="the run's own",
                    data_dir=cfg_here.data_dir,
                    data_checksum=cfg.data_checksum, dataset=cfg.dataset)


def _describe(key: str, mean: Any, std: Any, name: str, n_train: int | None) -> dict[str, Any]:
    if key == "pixel-mean":
        return {"kind": "per-pixel mean", "key": key, "name": "per-pixel mean of the training images (paper Sec. 4.2)",
                "mean": f"per-pixel mean of {n_train:,} training images" if n_train else "per-pixel mean", "std": None}
    return {"kind": "per-channel mean/std", "key": key, "name": name or ("ImageNet mean/std" if key == "imagenet"
                                                                          else "recorded mean/std"),
            "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def default_out(net: CifarNet, precision: str, normalization: str, images: int | None) -> Path:
    """``WEIGHTS.eval-cifar10[-SUFFIX].json`` or ``RUN/eval-cifar10[-SUFFIX].json`` (see the
    module docstring; ``eval-cifar100`` for a CIFAR-100 net)."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    if normalization != "auto":
        suffix += f"-norm-{normalization}"
    if images is not None:
        suffix += f"-images{images}"
    if net.weights.get("format") == "run":
        return Path(net.weights["run"]) / f"eval-{net.dataset}{suffix}.json"
    return Path(f"{net.weights['path']}.eval-{net.dataset}{suffix}.json")


def evaluate_cifar(
    data_dir: str | None,
    weights: str | None = None,
    run_dir: str | None = None,
    arch: str | None = None,
    out: str | None = None,
    normalization: str = "auto",
    precision: str = "fp32",
    device: str = "auto",
    threads: int | None = None,
    images: int | None = None,
    batch_size: int = 500,
    on_start: Callable[[int, dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    dataset: str | None = None,
) -> tuple[dict, Path, list[str]]:
    """Evaluate a CIFAR-10 (or CIFAR-100) net on the test set and write its record.

    Args:
        dataset: ``cifar10`` or ``cifar100``; None: the run's, or the file's net's (100
            outputs: CIFAR-100). Another than the net's is an error.
        data_dir: CIFAR-10 in any form :func:`resnet_repro.data.cifar.load_cifar10`
            reads; for ``run_dir`` None means the run's own ``data_dir``.
        normalization: ``auto`` (the weights' own), ``imagenet`` (per-channel ImageNet
            mean/std) or ``pixel-mean`` (the per-pixel mean of the training images).
        precision: ``fp32`` or ``bf16`` (autocast).
        images: only this many evenly spaced test images (a quick look; recorded, and
            tables ignore such records).
        on_start: called with the number of images and the normalisation dict once
            the inputs are checked and loaded.

    Returns:
        ``(record, path written, warnings)``; ``warnings`` holds one line per problem the
        user should see (another normalisation than the weights').

    Raises:
        UserError: neither or both of ``weights`` and ``run_dir``, a bad option value, a
            file or run that cannot be evaluated, missing data, an unwritable ``out``.
    """
    from resnet_repro import __version__
    from resnet_repro.data.augment import to_float
    from resnet_repro.data.cifar import NUM_CLASSES, load_cifar
    from resnet_repro.fsio import atomic_write_json, unwritable_reason
    from resnet_repro.models import count_params
    from resnet_repro.models.convert import IMAGENET_MEAN, IMAGENET_STD
    from resnet_repro.runs import data_copy_name
    from resnet_repro.train.config import git_commit, hardware, resolve_device
    from resnet_repro.train.imagenet_loop import eval_subset_indices

    if (weights is None) == (run_dir is None):
        raise UserError("give exactly one of --weights FILE or --run DIR")
    if normalization not in NORMALIZATIONS:
        raise UserError(f"unknown --normalization {normalization!r}; choose {', '.join(NORMALIZATIONS)}")
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose fp32 or bf16")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if images is not None and images < 1:
        raise UserError(f"--images must be >= 1, got {images}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if weights is not None and data_dir is None:
        raise UserError("--weights needs --data-dir (CIFAR-10: a cifar-10-batches-py folder, the original "
                        ".tar.gz, or an image-folder tree/tar with train/ and test/)")
    dev_name = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    if dataset not in (None, *NUM_CLASSES):
        raise UserError(f"unknown --dataset {dataset!r} for a CIFAR net; choose cifar10 or cifar100")
    net = load_weights_net(weights, arch, dataset) if weights is not None else load_run_net(run_dir, data_dir)
    if dataset is not None and net.dataset != dataset:  # a run (a file's outputs were checked on loading)
        raise UserError(f"{run_dir} is a {net.dataset} run; evaluate it with --dataset {net.dataset} (or leave "
                        "--dataset out)")
    data_dir = data_dir or net.data_dir
    path = Path(out) if out is not None else default_out(net, precision, normalization, images)
    why = unwritable_reason(path)
    if why is not None:
        raise UserError(f"cannot write {path} ({why}); choose a writable --out")
    arrays = load_cifar(net.dataset, data_dir)
    if net.data_checksum and arrays.checksum != net.data_checksum:
        raise UserError(f"the data at {data_dir} differs from the run's (checksum {arrays.checksum[:12]} vs "
                        f"{net.data_checksum[:12]}); point --data-dir at the copy the run used")
    if len(arrays.classes) != NUM_CLASSES[net.dataset]:
        raise UserError(f"{data_dir} has {len(arrays.classes)} classes; {net.dataset} has {NUM_CLASSES[net.dataset]}")

    own = net.own_norm or "pixel-mean"
    use = own if normalization == "auto" else normalization
    warn: list[str] = []
    if use == "pixel-mean":
        mean_t = net.pixel_mean if net.pixel_mean is not None else torch.from_numpy(
            arrays.train_x.mean(axis=0, dtype=np.float64) / 255.0).float()
        std_t = None
        n_train = None if net.pixel_mean is not None else len(arrays.train_x)
        norm = _describe("pixel-mean", None, None, "", n_train)
        if net.pixel_mean is not None:
            norm["mean"] = "per-pixel mean of the run's training images"
    else:
        m, sd, name = ((net.own_mean, net.own_std, net.norm_name) if use == own and net.own_mean is not None
                       else (list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet mean/std"))
        mean_t = torch.tensor(m, dtype=torch.float32).view(3, 1, 1)
        std_t = torch.tensor(sd, dtype=torch.float32).view(3, 1, 1)
        norm = _describe(use, m, sd, name, None)
    matches = use == own
    norm["source"] = net.origin if normalization == "auto" else f"--normalization {normalization}"
    norm["matches_weights"] = matches
    if not matches:
        own_desc = {"imagenet": "the ImageNet mean/std", "pixel-mean": "the per-pixel mean",
                    "custom": "their recorded mean/std"}[own]
        warn.append(f"evaluating {net.arch} with --normalization {normalization}, but its weights were trained "
                    f"with {own_desc}: the error is not the net's own")

    idx = eval_subset_indices(len(arrays.test_x), images)
    tx, ty = arrays.test_x, arrays.test_y
    if idx is not None:
        tx, ty = tx[idx], ty[idx]
    dev = torch.device(dev_name)
    x = torch.from_numpy(np.ascontiguousarray(tx)).to(dev)
    y = torch.from_numpy(np.ascontiguousarray(ty)).to(dev)
    mean_t = mean_t.to(dev)
    std_t = None if std_t is None else std_t.to(dev)
    model = net.model.to(dev).eval()
    if on_start is not None:
        on_start(len(x), norm)
    wrong = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = to_float(x[i: i + batch_size], mean_t, std_t)
            if precision == "bf16":
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                    logits = model(xb)
            else:
                logits = model(xb)
            wrong += int((logits.float().argmax(1) != y[i: i + batch_size]).sum())
            if on_batch is not None:
                on_batch(len(xb))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    n = len(x)
    record = {
        "format": RECORD_FORMAT,
        "dataset": net.dataset, "split": "test", "view": "single view of each image (paper Sec. 4.2)",
        "test_error": round(100.0 * wrong / n, 4), "wrong": wrong, "images": n, "images_total": len(arrays.test_x),
        "subset": images,
        "net": {"arch": net.arch, "shortcut": net.shortcut, "params": count_params(model)},
        "weights": net.weights,
        "normalization": norm,
        "data": {"data_dir": str(data_dir), "checksum": arrays.checksum, "source_kind": arrays.source_kind,
                 "copy": data_copy_name(str(data_dir), arrays.source_kind)},
        "precision": precision, "device": dev_name, "threads": torch.get_num_threads(),
        "hardware": hardware(dev_name), "wall_s": round(wall, 2), "images_per_s": round(n / wall, 1) if wall else None,
        "package_version": __version__, "git_commit": git_commit(), "torch_version": torch.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        atomic_write_json(path, record)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}); choose a writable --out") from None
    return record, path, warn


def result_line(record: dict) -> str:
    """``resnet20: test error 18.97% (1,897 of 10,000 test images), fp32, ImageNet mean/std``."""
    sub = "" if record["images"] == record["images_total"] else f" (a subset of {record['images_total']:,})"
    return (f"{record['net']['arch']}: test error {record['test_error']:.2f}% ({record['wrong']:,} of "
            f"{record['images']:,} test images{sub}), {record['precision']}, normalised with "
            f"{record['normalization']['name']}")
