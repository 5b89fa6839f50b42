"""Layer responses of paper Sec. 4.2, "Analysis of Layer Responses" (Fig. 7).

The paper measures "the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)" and plots their standard deviation per layer. Here a
response is recorded by a forward hook on the BatchNorm2d that consumes each 3x3
convolution's output; the model code is not changed. The hook fires when the BN has
returned and before the following in-place ReLU or shortcut addition runs, so it sees
exactly the paper's response.

**Which layers (the x-axis "layer index").** Every 3x3 conv of the network, in network
order, is recorded, *including the stem conv of the CIFAR nets* (it is a 3x3 layer
followed by BN and ReLU like the others). A 6n+2-layer CIFAR net therefore gives
**6n+1** responses (19 for plain-20/ResNet-20, 55 for 56 layers, 109 for ResNet-110),
and layer index k (1-based) is the k-th weighted layer in the paper's own depth count,
the fc being layer 6n+2. The ImageNet nets (Table 1) have a 7x7 stem, which is not a
3x3 layer: they give the 3x3 convs of their blocks only (two per basic block, one per
bottleneck block). 1x1 convs (bottleneck reduce/restore, projection shortcuts) are
never recorded.

**Which statistic.** The population standard deviation (ddof 0) of all values of the
layer's BN output over the whole image set: every image, channel and position, pooled.
The model runs in eval mode (BN uses its running statistics, as at test time) in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnet_repro import runs
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_json

RESPONSES_FILE = "responses.json"
FORMAT_VERSION = 1
MEASURE = ("population std (ddof 0) of the BN output of each 3x3 conv, before ReLU or addition, "
           "pooled over images, channels and positions; eval mode, fp32")
CONVENTION = "every 3x3 conv in network order, stem included (6n+1 layers for a 6n+2-layer CIFAR net)"


@dataclass(frozen=True)
class LayerResponse:
    """The response of one 3x3 layer.

    Attributes:
        index: 1-based position among the recorded layers, in network order.
        conv: module name of the 3x3 conv, e.g. ``"layer1.0.conv2"``.
        bn: module name of the BatchNorm2d that follows it, e.g. ``"layer1.0.bn2"``.
        std: population standard deviation of the BN output (dimensionless, the unit of
            the BN output).
        count: number of values the std pools (images x channels x height x width).
    """

    index: int
    conv: str
    bn: str
    std: float
    count: int


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """The 3x3 convs of ``model`` in network (registration) order, each with the
    BatchNorm2d registered next after it.

    The pairing is checked during every forward pass of :class:`ResponseRecorder`: the
    BN must receive the conv's output tensor itself.

    Raises:
        ValueError: if the model has no 3x3 conv, or a 3x3 conv is not followed by a
            BatchNorm2d of its width before the next conv.
    """
    pairs: list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]] = []
    pending: tuple[str, nn.Conv2d] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if pending is not None:
                raise ValueError(f"3x3 conv {pending[0]} is not followed by a BatchNorm2d (next is {name})")
            if tuple(m.kernel_size) == (3, 3):
                pending = (name, m)
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            if m.num_features != pending[1].out_channels:
                raise ValueError(
                    f"BatchNorm2d {name} ({m.num_features} features) does not match 3x3 conv {pending[0]} "
                    f"({pending[1].out_channels} channels)"
                )
            pairs.append((pending[0], pending[1], name, m))
            pending = None
    if pending is not None:
        raise ValueError(f"3x3 conv {pending[0]} is not followed by a BatchNorm2d")
    if not pairs:
        raise ValueError("the model has no 3x3 conv")
    return pairs


class _Moments:
    """Running count, mean and sum of squared deviations (float64), merged per batch
    with Chan et al.'s pairwise formula."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, t: torch.Tensor) -> None:
        t = t.detach().double()
        nb = t.numel()
        if nb == 0:
            return
        mb = t.mean().item()
        m2b = (t - mb).square().sum().item()
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")


class ResponseRecorder:
    """Forward hooks that record the std of every 3x3 layer's BN output (paper Sec. 4.2,
    Fig. 7) over all forward passes made while the recorder is entered.

    Usage::

        with ResponseRecorder(model) as rec:
            for xb in batches:
                model(xb)
        layers = rec.results()

    The caller chooses the mode (use ``model.eval()`` for the paper's measure) and
    ``torch.no_grad()``; :func:`layer_responses` does both.

    Raises:
        ValueError: on construction, as :func:`conv_bn_pairs`; during a forward pass, if
            a recorded BN does not receive its conv's output directly (the response
            would not be the paper's).
    """

    def __init__(self, model: nn.Module) -> None:
        self.pairs = conv_bn_pairs(model)
        self._moments = [_Moments() for _ in self.pairs]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._last_out: list[torch.Tensor | None] = [None] * len(self.pairs)

    def __enter__(self) -> ResponseRecorder:
        for i, (_, conv, _, bn) in enumerate(self.pairs):
            self._handles.append(conv.register_forward_hook(self._conv_hook(i)))
            self._handles.append(bn.register_forward_hook(self._bn_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._last_out = [None] * len(self.pairs)

    def _conv_hook(self, i: int):
        def hook(module, inputs, output):
            self._last_out[i] = output

        return hook

    def _bn_hook(self, i: int):
        def hook(module, inputs, output):
            if inputs[0] is not self._last_out[i]:
                conv_name, _, bn_name, _ = self.pairs[i]
                raise ValueError(f"{bn_name} does not take the output of 3x3 conv {conv_name} directly")
            self._last_out[i] = None
            self._moments[i].add(output)

        return hook

    def results(self) -> list[LayerResponse]:
        """One :class:`LayerResponse` per 3x3 layer, in network order (std is NaN for a
        layer that saw no forward pass)."""
        return [LayerResponse(i + 1, c, b, m.std, m.n) for i, ((c, _, b, _), m) in
                enumerate(zip(self.pairs, self._moments, strict=True))]


@torch.no_grad()
def layer_responses(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> list[LayerResponse]:
    """The std of each 3x3 layer's response (paper Sec. 4.2, Fig. 7) over ``images``.

    Works for every net of :func:`resnet_repro.models.build`: CIFAR nets (6n+1 layers,
    stem included) and ImageNet nets (the 3x3 convs of basic and bottleneck blocks).
    The model runs in eval mode (restored afterwards) without autocast.

    Args:
        model: the network, on the device of ``images``.
        images: ``(N, 3, H, W)`` float input, preprocessed as for evaluation (for CIFAR:
            :func:`resnet_repro.data.augment.to_float` with the training mean).
        batch_size: images per forward pass (memory only; the result does not depend
            on it beyond float rounding).

    Returns:
        One :class:`LayerResponse` per 3x3 layer, in network order.

    Raises:
        ValueError: as :class:`ResponseRecorder`, or for an empty ``images``.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    try:
        with ResponseRecorder(model) as rec:
            for i in range(0, len(images), batch_size):
                model(images[i: i + batch_size])
        return rec.results()
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- runs
def _fail_run(run_dir: Path, problem: str) -> UserError:
    return UserError(f"{run_dir}: {problem}")


def _check_run(run_dir: Path, datasets: tuple[str, ...] = ("cifar10",)):
    """The run's config and the path and checksum of its final checkpoint.

    Raises:
        UserError: not a run directory, a run of another data set or of an ImageNet
            net, or a run without a final checkpoint.
    """
    from resnet_repro.models import spec
    from resnet_repro.train import checkpoint
    from resnet_repro.train.config import load_config

    if not (run_dir / "config.json").is_file():
        raise _fail_run(run_dir, "not a run directory (no config.json); give a directory made by `resnet-repro train`")
    cfg = load_config(run_dir / "config.json")
    if cfg.dataset not in datasets or spec(cfg.arch).family != "cifar":
        what = ("Fig. 7 responses are measured on CIFAR-10 runs only" if datasets == ("cifar10",)
                else f"this needs a run on {' or '.join(datasets)}")
        raise _fail_run(run_dir, f"a {cfg.arch} run on {cfg.dataset}; {what}")
    ckpt = run_dir / "checkpoints" / "final.pt"
    if not ckpt.is_file():
        status = (runs.read_json(run_dir / "summary.json") or {}).get("status", "unknown")
        if status == "complete":
            fix = (f"the run is complete but its checkpoints are gone (stored logs keep none); retrain it into a new "
                   f"directory with `resnet-repro train --config {run_dir}/config.json --out DIR`")
        else:
            fix = (f"the run is {status}; finish it with `resnet-repro train --config {run_dir}/config.json "
                   f"--out {run_dir.parent} --name {run_dir.name} --resume`")
        raise _fail_run(run_dir, f"no final checkpoint (checkpoints/final.pt): {fix}")
    sha = checkpoint.read_index(run_dir / "checkpoints")["sha256"].get("final.pt")
    return cfg, ckpt, sha


def check_runs(run_dirs: list[Path]) -> None:
    """Validate run directories before any work (see :func:`run_responses`).

    Raises:
        UserError: for the first run that cannot be measured.
    """
    for d in run_dirs:
        _check_run(Path(d))


def run_responses(run_dir: str | Path, split: str = "test", device: str = "cpu", data_dir: str | None = None,
                  batch_size: int = 500) -> dict:
    """Measure the Fig. 7 responses of a finished CIFAR-10 run.

    Loads ``checkpoints/final.pt`` (SHA-256 checked against ``checkpoints/index.json``),
    loads the run's data with :func:`resnet_repro.train.loop.prepare_data` (same split,
    same per-pixel training mean as the run's evaluation), and runs ``split`` through
    the net in eval mode and fp32, recording every 3x3 layer (see the module docstring
    for the convention: 6n+1 layers, stem included).

    Args:
        run_dir: a run directory written by :func:`resnet_repro.train.loop.fit`.
        split: ``"test"`` (the 10k test images, the paper's) or ``"val"`` (the held-out
            training images; runs trained with ``train_on="split"`` only).
        device: ``"cpu"``, ``"cuda"``...; the result does not depend on it beyond
            float rounding.
        data_dir: CIFAR-10 location if not the run's ``data_dir`` (it must hold the
            same data: the checksum is compared).
        batch_size: images per forward pass.

    Returns:
        The content of ``responses.json``: run identity (arch, shortcut, schedule,
        iterations, seed, data checksum and kind), ``split``, ``images``, ``error`` (top-1
        error in % of the same pass, single view), ``checkpoint_sha256``, ``measure``,
        ``convention`` and ``layers`` (a list of ``{"index", "conv", "bn", "std"}``).

    Raises:
        UserError: not a run, another data set, no or a corrupt final checkpoint, other
            data than the run's, an unknown split or a val split the run lacks.
    """
    from resnet_repro.data.augment import to_float
    from resnet_repro.models import build, spec
    from resnet_repro.train import checkpoint
    from resnet_repro.train.loop import prepare_data

    run_dir = Path(run_dir)
    if split not in ("test", "val"):
        raise UserError(f"unknown split {split!r}; choose test (the paper's) or val")
    cfg, ckpt_path, sha = _check_run(run_dir)
    if split == "val" and cfg.train_on != "split":
        raise _fail_run(run_dir, "trained on all 50k images, so it has no val split; use --split test")
    try:
        state = checkpoint.load_verified(ckpt_path, sha, map_location="cpu")
    except ValueError as exc:
        raise _fail_run(run_dir, f"unusable final checkpoint ({exc}); train the run again") from None
    if state.get("arch") != cfg.arch or int(state.get("num_classes", 10)) != 10:
        raise _fail_run(run_dir, f"final.pt holds {state.get('arch')!r}, not the run's {cfg.arch}; train the run again")

    updates: dict = {"device": device}
    if data_dir:
        updates["data_dir"] = str(data_dir)
    cfg_here = cfg.model_copy(update=updates)
    data = prepare_data(cfg_here)
    if cfg.data_checksum and data.checksum != cfg.data_checksum:
        raise _fail_run(
            run_dir,
            f"the data at {cfg_here.data_dir} differs from the run's (checksum {data.checksum[:12]} vs "
            f"{cfg.data_checksum[:12]}); point --data-dir at the copy the run used",
        )
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)

    model = build(cfg.arch, state.get("shortcut", cfg.shortcut), num_classes=10, stride_on=cfg.stride_on)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    wrong = 0
    with torch.no_grad(), ResponseRecorder(model) as rec:
        for i in range(0, len(x), batch_size):
            out = model(to_float(x[i: i + batch_size], data.mean, data.std))
            wrong += int((out.argmax(1) != y[i: i + batch_size]).sum())
    layers = rec.results()
    prov = (runs.read_json(run_dir / "config.json") or {}).get("provenance") or {}
    return {
        "format": FORMAT_VERSION,
        "arch": cfg.arch,
        "paper_name": spec(cfg.arch).paper_name,
        "shortcut": cfg.shortcut,
        "schedule": cfg.schedule,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "data_checksum": data.checksum,
        "data_source_kind": prov.get("data_source_kind", data.source_kind),
        "checkpoint_sha256": sha,
        "split": split,
        "images": int(len(x)),
        "error": 100.0 * wrong / len(x),
        "measure": MEASURE,
        "convention": CONVENTION,
        "layers": [{"index": r.index, "conv": r.conv, "bn": r.bn, "std": r.std} for r in layers],
    }


def write_responses(run_dir: str | Path, **kwargs) -> dict:
    """:func:`run_responses`, written atomically to ``run_dir/responses.json``; returns
    the written dict. Raises as :func:`run_responses`, and ``UserError`` if the run
    directory is not writable."""
    result = run_responses(run_dir, **kwargs)
    path = Path(run_dir) / RESPONSES_FILE
    try:
        atomic_write_json(path, result)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}); make the run directory writable") from None
    return result


def read_responses(run_dir: str | Path) -> dict | None:
    """``run_dir/responses.json`` if present, of this format and well formed (a CIFAR
    arch name, schedule, iterations, split, image count, and a list of layers with
    finite ``std``); else None."""
    from resnet_repro.models import spec

    obj = runs.read_json(Path(run_dir) / RESPONSES_FILE)
    if not obj or obj.get("format") != FORMAT_VERSION:
        return None
    try:
        ok = (spec(str(obj["arch"])).family == "cifar" and isinstance(obj["schedule"], str)
              and int(obj["iterations"]) > 0 and obj["split"] in ("test", "val") and int(obj["images"]) > 0
              and isinstance(obj["layers"], list) and len(obj["layers"]) > 0
              and all(math.isfinite(float(layer["std"])) for layer in obj["layers"]))
    except (KeyError, TypeError, ValueError, UserError):
        return None
    return obj if ok else None
