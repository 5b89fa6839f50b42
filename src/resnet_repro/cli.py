"""The ``resnet-repro`` command line: a thin Typer shell over the library.

Each command parses its options, calls library functions, and renders with rich. Errors
the user can fix (:class:`resnet_repro.errors.UserError`, bad options) print one line and
exit with code 2; nothing in the library imports this module.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from rich.console import Console

from resnet_repro.cli_help import App
from resnet_repro.errors import UserError

app = App(  # typer.Typer with help that reads well at 80 columns (resnet_repro.cli_help)
    name="resnet-repro",
    help=(
        "Reproduce 'Deep Residual Learning for Image Recognition' (He et al., 2015): "
        "train plain and residual nets, store every run as plain files, and rebuild the "
        "paper's tables and figures with the paper's numbers beside ours."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: <message>`` on stderr as one line (the message is shown verbatim:
    brackets in paths or names are not read as rich markup)."""
    from rich.markup import escape

    line = " ".join(str(message).split())  # one line, whatever the message holds
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    print_error(message)
    raise typer.Exit(2)


# ---------------------------------------------------------------------------- arch
@app.command()
def arch(
    name: str = typer.Argument(..., help="Architecture, e.g. resnet20, plain56, resnet50."),
    shortcut: str | None = typer.Option(
        None, "--shortcut", "-s", help="Shortcut option A, B or C (default: the paper's)."
    ),
    stride_on: str | None = typer.Option(
        None, "--stride-on", help="Bottleneck stride placement: 1x1 (paper) or 3x3 (torchvision v1.5)."
    ),
) -> None:
    """Print a network's layer-by-layer table (output shape, parameters) and its total."""
    from resnet_repro.report.arch_view import render_arch

    render_arch(console, name, shortcut, stride_on)


# ---------------------------------------------------------------------------- train
DEFAULT_DATA = "data/cifar10"
DEFAULT_CIFAR100_DATA = "data/cifar100"
DEFAULT_IMAGENET_DATA = "data/imagenet"


def _default_data_dir() -> str:
    import os

    return os.environ.get("RESNET_REPRO_DATA", DEFAULT_DATA)


GRAD_NORMS_HELP = ("CIFAR-10: every N iterations (from 0) log the per-stage norms of the loss gradient w.r.t. "
                   "the weights and the stage inputs (paper Sec. 4.1) as grad_norms events in metrics.jsonl, from "
                   "a separate pass that leaves the run's numbers unchanged; 0: off. Default: the schedule's "
                   "evaluation interval (1,000 iterations paper, 250 quick). One measurement costs about one "
                   "training step (1.0-1.2x: ResNet-20, plain-56, bf16, 1 thread, with or without --compile), so "
                   "the default adds about 0.1% (paper) or 0.5% (quick) to the training time.")


@app.command()
def train(
    arch_name: str | None = typer.Option(
        None, "--arch", "-a",
        help="Network: plain or resnet + depth 6n+2 for CIFAR-10 (resnet20, plain56, resnet110, resnet1202), or 18, 34, 50, 101, 152 for ImageNet (resnet34, plain18).",
    ),
    shortcut: str | None = typer.Option(
        None, "--shortcut", "-s",
        help="Shortcut option: A (identity + zero padding, paper default), B (projection where the shape changes), C (projection everywhere). Ignored for plain nets.",
    ),
    schedule: str | None = typer.Option(
        None, "--schedule",
        help="CIFAR (default quick): paper (64k iterations, drops at 32k/48k), quick (4k, drops at 2k/3k: 1/16 of the paper's), smoke (30; tests); presets of other reproductions, not the paper's protocol (all 50k training images, best test epoch reported): akamaster (200 epochs of 391 iterations, drops at 39,100/58,650), fb (fb.resnet.torch: 164 epochs, drops at 31,280/47,311). ImageNet (default paper): paper (lr /10 on val plateaus, up to 600k), fixed (drops at 150k/300k), smoke (8 iterations, 64-px crops; tests).",
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="cifar10 (Sec. 4.2), cifar100 (the same nets with 100 classes; not in the paper) or imagenet (Sec. 3.4; multi-GPU with torchrun). Default: the net's own, CIFAR-10 for 6n+2 layers, ImageNet for 18 to 152."),
    workers: int | None = typer.Option(None, "--workers", help="ImageNet: DataLoader worker processes per training process (default: the node's cores / processes, at most 16)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="ImageNet under torchrun: batch normalisation over the global batch (default: per process, as with the paper's 8 GPUs)."),
    iterations: int | None = typer.Option(
        None, "--iterations", help="Scale the paper's schedule shape to N iterations (overrides --schedule)."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", "-d",
        help="CIFAR-10: cifar-10-batches-py, cifar-10-python.tar.gz, or an image-folder tree/tar(.gz) with train/ and test/ (default $RESNET_REPRO_DATA or data/cifar10). CIFAR-100: cifar-100-python, cifar-100-python.tar.gz, or an image-folder tree/tar(.gz) of 100 classes (default data/cifar100). ImageNet: a folder DIR with DIR/train/<wnid>/ and DIR/val/<wnid>/ (default data/imagenet).",
    ),
    download: bool = typer.Option(False, "--download", help="Download the original CIFAR-10 (or CIFAR-100) into --data-dir through torchvision if it is not there."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Parent folder of run directories."),
    name: str | None = typer.Option(None, "--name", help="Run directory name (default e.g. resnet20-A-quick-s0; CIFAR-100: resnet20-A-cifar100-quick-s0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the init, batch order and augmentation; a CPU run is repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run from its newest checkpoint (exactly)."),
    train_on: str | None = typer.Option(None, "--train-on", help="split: 45k train / 5k val (the paper's protocol; the default); all: train on 50k (implied by the akamaster and fb presets, which refuse split)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast where native: AVX512-BF16/AMX CPUs, recent GPUs), fp32, bf16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory format (default on: faster with oneDNN on CPU and with cuDNN on GPU)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    checkpoint_activations: bool = typer.Option(False, "--checkpoint-activations", help="Keep only the inputs of segments of about sqrt(n) blocks for the backward pass and recompute the rest (CIFAR nets; same results, one extra forward pass; ResNet-1202 at batch 128 on CPU: about 4 GB instead of 8)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for this run (default: all cores; 1 per run when running several side by side)."),
    warmup: str = typer.Option("auto", "--warmup", help="lr 0.01 until training error < 80%: auto (110 layers and deeper, as in the paper), on, off."),
    lr: float = typer.Option(0.1, "--lr", help="Initial learning rate (paper: 0.1, for batch 128 on CIFAR-10 and 256 on ImageNet)."),
    scale_lr: bool = typer.Option(False, "--scale-lr", help="Scale --lr (and the warm-up lr) by the batch size over the paper's (linear-scaling rule, Goyal et al. 2017; not the paper's, off by default)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Mini-batch size, global over all processes (paper: 128 for CIFAR-10, 256 for ImageNet)."),
    config: Path | None = typer.Option(None, "--config", help="Rerun exactly the run described by a config.json (other options except --out/--name/--data-dir/--resume are ignored)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files beside metrics.jsonl (needs pip install -e '.\\[tensorboard]')."),
    grad_norms_every: int | None = typer.Option(None, "--grad-norms-every", help=GRAD_NORMS_HELP),
    init_weights: Path | None = typer.Option(None, "--init-weights", help="CIFAR-10: start from these weights instead of He initialisation (fine-tuning): a file of `resnet-repro import-weights` or a CIFAR run's checkpoints/final.pt. Its sha256 goes into config.json; --arch defaults to its net, and the run normalises inputs as the weights were trained (akamaster: ImageNet mean/std)."),
) -> None:
    """Train one plain or residual net on CIFAR-10 (paper Sec. 4.2), CIFAR-100 (--dataset
    cifar100) or ImageNet (Sec. 3.4, --dataset imagenet) into a run directory.

    Examples:

      resnet-repro train --arch resnet20 --schedule quick --data-dir ../shared/data/cifar10-jpeg.tar.gz

      resnet-repro train --dataset cifar100 --arch resnet20 --data-dir data/cifar100 --download

      resnet-repro train --arch resnet20 --schedule akamaster --data-dir data/cifar10

      resnet-repro train --arch resnet56 --shortcut B --seed 1 --resume

      resnet-repro train --arch plain56 --seed 1

      resnet-repro train --init-weights runs/reference/akamaster-resnet20.pt --iterations 300 --lr 0.01 --out runs/finetune
    """
    from resnet_repro.train.config import load_config, make_config, resolve_dataset
    from resnet_repro.train.loop import fit

    if config is not None:
        if not config.is_file():
            fail(f"--config {str(config)!r} is not a file; give a run directory's config.json")
        cfg = load_config(config)
        if data_dir:
            cfg = cfg.model_copy(update={"data_dir": data_dir})
    else:
        if not arch_name and init_weights is None:
            fail("missing --arch; e.g. --arch resnet20 (see `resnet-repro train --help`)")
        if arch_name:  # an ImageNet net trains on ImageNet (--init-weights: CIFAR-10, the file's net)
            dataset = resolve_dataset(arch_name, dataset)
        default_dir = (_default_data_dir() if dataset in (None, "cifar10") else DEFAULT_CIFAR100_DATA
                       if dataset == "cifar100" else DEFAULT_IMAGENET_DATA)
        cfg = make_config(
            arch_name, data_dir or default_dir, shortcut=shortcut, schedule=schedule,
            iterations=iterations, seed=seed, train_on=train_on, precision=precision, device=device,
            channels_last=channels_last, compile=compile_model, threads=threads, batch_size=batch_size,
            lr=lr, warmup=warmup, checkpoint_activations=checkpoint_activations,
            dataset=dataset, workers=workers, sync_bn=sync_bn,
            init_weights=None if init_weights is None else str(init_weights), scale_lr=scale_lr,
            grad_norms_every=grad_norms_every,
        )
    if tensorboard:
        cfg = cfg.model_copy(update={"tensorboard": True})
    run_dir = _safe_run_dir(out, name or cfg.run_name)
    from resnet_repro.report.progress import TrainProgress

    if cfg.dataset == "imagenet":  # also the path for torchrun (DDP)
        _train_imagenet(cfg, run_dir, resume)
        return
    from resnet_repro.train.distributed import env_world_size

    if env_world_size() > 1:
        fail("multi-process training (torchrun) is implemented for --dataset imagenet; train CIFAR-10 in one process")
    with TrainProgress(console, cfg, run_dir, warn=_warn) as prog:
        summary = fit(cfg, run_dir, resume=resume, on_event=prog.on_event, download=download)
    prog.print_summary(summary)
    if summary["status"] == "diverged":
        raise typer.Exit(1)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


def _warn(line: str) -> None:
    err_console.print(f"warning: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _train_imagenet(cfg, run_dir: Path, resume: bool) -> None:
    """ImageNet training (one process, or one of torchrun's): progress on rank 0 only."""
    from resnet_repro.report.progress import TrainProgress
    from resnet_repro.train.distributed import env_rank
    from resnet_repro.train.imagenet_loop import describe_event, fit_imagenet

    if cfg.tensorboard:
        fail("--tensorboard is implemented for CIFAR-10 training; drop it for --dataset imagenet")
    if env_rank() != 0:
        summary = fit_imagenet(cfg, run_dir, resume=resume)
    else:
        with TrainProgress(console, cfg, run_dir, warn=_warn) as prog:
            def on_event(ev: dict) -> None:
                line = describe_event(ev)
                if line is not None:
                    console.print(line, highlight=False)
                else:
                    prog.on_event(ev)

            summary = fit_imagenet(cfg, run_dir, resume=resume, on_event=on_event)
        prog.print_summary(summary)
    if summary["status"] == "diverged":
        raise typer.Exit(1)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")


def _safe_run_dir(out: Path, name: str) -> Path:
    """``out/name``, refusing anything that would put the run outside ``out``: names
    other than letters, digits and ``. _ - + =`` (so no ``/``, ``..``, absolute paths,
    leading ``.`` or control characters), and an existing ``out/name`` that is a
    symbolic link pointing outside ``out``."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        fail(f"invalid run name {name!r}; use up to 200 letters, digits, '-', '_', '.', '+' or '=', "
             "starting with a letter or digit")
    run_dir = out / name
    try:
        base, target = out.resolve(), run_dir.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        fail(f"cannot resolve {run_dir} ({exc}); choose another --out or --name")
    if target == base or not target.is_relative_to(base):
        fail(f"{run_dir} is a symbolic link to {target}, outside --out {out}; remove the link or choose another --name")
    return run_dir


# ---------------------------------------------------------------------------- table
RUNS_HELP = ("Run directories or folders of runs (repeatable). Default: results/ where the current folder has "
             "one, else none (the paper's values only).")


def default_roots(runs_dir: list[Path] | None) -> list[Path]:
    """The run roots of ``table``, ``figure`` and ``report``: ``--runs`` as given (a
    missing one is an error later), else ``results/`` where it exists, else none."""
    from resnet_repro.runs import default_roots as roots

    return roots(runs_dir)


@app.command()
def table(
    number: str = typer.Argument(..., help="Paper table number, 1 to 8, or cifar-shortcuts (options A/B/C on CIFAR-10, not in the paper)."),
    runs_dir: list[Path] | None = typer.Option(None, "--runs", "-r", help=RUNS_HELP),
    fmt: str = typer.Option("rich", "--format", "-f", help="rich (terminal), markdown, csv or latex."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Also write the table (markdown/csv/latex) to this file."),
    dataset: str | None = typer.Option(None, "--dataset", help="Table 6 only: cifar10 (the paper's; default) or cifar100 (the same nets on CIFAR-100, a table of its own: the paper reports no CIFAR-100 numbers)."),
) -> None:
    """Rebuild paper Table N from logged runs, with the paper's numbers beside ours.

    Tables 2-4 read ImageNet runs' evaluations, Table 6 CIFAR-10 runs (--dataset
    cifar100: CIFAR-100 runs, in a table of their own); Table 1 is measured from the
    code; Tables 5, 7 and 8 show the paper's values only. Cells without runs say which
    command would fill them.
    """
    import warnings

    from resnet_repro.fsio import atomic_write_text
    from resnet_repro.report.tables import FORMATS, get_table, to_text

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out_file is not None:  # before the table is built and printed
        from resnet_repro.fsio import unwritable_reason

        why = unwritable_reason(out_file)
        if why is not None:
            fail(f"cannot write {out_file} ({why}); choose a writable --out")
    runs_dir = default_roots(runs_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = get_table(number, runs_dir, dataset)
    for w in caught:
        err_console.print(f"warning: {w.message}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if fmt == "rich":
        from resnet_repro.report.render import print_table

        print_table(console, t)
    else:
        console.print(to_text(t, fmt), markup=False, highlight=False, soft_wrap=True)
    if out_file is not None:
        text = to_text(t, "markdown" if fmt == "rich" else fmt)
        try:
            atomic_write_text(out_file, text)
        except OSError as exc:
            fail(f"cannot write {out_file} ({exc.strerror}); choose a writable --out")


# ---------------------------------------------------------------------------- check
@app.command()
def check(
    run_dirs: list[Path] = typer.Argument(None, help="Run directories or folders of runs (default: results/)."),
) -> None:
    """Check that every run agrees with itself: summary.json is the last evaluation in
    metrics.jsonl, the logged lr follows the config's schedule (warm-up included), the
    iterations add up. Exit 1 if any run disagrees (tables and figures leave it out)."""
    from resnet_repro.runcheck import check_dirs
    from resnet_repro.runs import check_roots

    roots = run_dirs or [Path("results")]
    check_roots(roots, option="check")
    reports = check_dirs(roots)
    if not reports:
        fail(f"no run directories (with config.json) under {', '.join(map(str, roots))}")
    bad = [r for r in reports if r.problems]
    for r in reports:
        if not r.problems:
            console.print(f"ok    {r.run_dir}: {r.state}", markup=False, highlight=False, soft_wrap=True)
        for p in r.problems:
            console.print(f"FAIL  {r.run_dir}: {p.text()}", markup=False, highlight=False, soft_wrap=True)
    n = len(reports)
    if bad:
        console.print(f"{len(bad)} of {n} run{'s' if n != 1 else ''} disagree with their own files; tables and "
                      "figures leave them out", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{n} run{'s' if n != 1 else ''} checked: each agrees with its own log and config",
                  markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------- import-weights
@app.command("import-weights")
def import_weights(
    file: Path | None = typer.Argument(
        None, help="A state_dict file: torchvision's (.pth/.pt; omit with --from torchvision:WEIGHTS) or akamaster's (.th)."
    ),
    source: str = typer.Option(
        "torchvision",
        "--from",
        help="torchvision (with FILE), torchvision:IMAGENET1K_V1 to download torchvision's weights, or akamaster (FILE from akamaster/pytorch_resnet_cifar10: CIFAR-10 ResNets, option A).",
    ),
    arch_name: str = typer.Option(..., "--arch", help="torchvision: resnet18, resnet34, resnet50, resnet101 or resnet152; akamaster: resnet20, resnet32, resnet44, resnet56, resnet110 (any 6n+2)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the converted weights (.pt)."),
) -> None:
    """Convert published ResNet weights to this project's networks and save them
    atomically with their input normalisation and provenance: torchvision's ImageNet
    ResNets (option-B shortcuts; bottleneck stride on the 3x3 conv, as torchvision), or
    akamaster's CIFAR-10 ResNets (option A; channels permuted so the function is the same).

    Examples:

      resnet-repro import-weights ../shared/pretrained/akamaster/resnet20-12fca82f.th --from akamaster --arch resnet20 --out runs/reference/akamaster-resnet20.pt

      resnet-repro import-weights --from torchvision:IMAGENET1K_V1 --arch resnet50 --out r50.pt
    """
    from resnet_repro.models import count_params
    from resnet_repro.models.convert import (
        build_imported,
        load_torchvision_weights,
        save_imported,
        torchvision_build_kwargs,
    )

    if source.strip().lower().partition(":")[0] == "akamaster":
        _import_akamaster(file, source, arch_name, out)
        return
    notes: list[str] = []
    sd = load_torchvision_weights(source, arch_name, file, notes=notes)
    for line in notes:
        console.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
    save_imported(sd, arch_name, out, source if file is None else f"{source}:{file}")
    model = build_imported(out)
    kwargs = ", ".join(f"{k}={v!r}" for k, v in torchvision_build_kwargs(arch_name).items())
    console.print(
        f"wrote {out}: {arch_name}, {count_params(model):,} parameters; "
        f"load with resnet_repro.models.convert.build_imported(path) (= build({arch_name!r}, {kwargs}))",
        highlight=False,
        soft_wrap=True,
    )


def _import_akamaster(file: Path | None, source: str, arch_name: str, out: Path) -> None:
    """``import-weights --from akamaster``: convert, record normalisation and provenance."""
    from resnet_repro.models import count_params
    from resnet_repro.models.convert import (
        akamaster_preprocessing,
        build_imported,
        load_akamaster_weights,
        save_imported,
    )

    inline = source.strip().partition(":")[2].strip()
    if inline and file is not None:
        fail(f"give either FILE or a path in --from {source!r}, not both")
    path = file if file is not None else (Path(inline) if inline else None)
    if path is None:
        fail("no weights given: pass the akamaster .th FILE, e.g. ../shared/pretrained/akamaster/resnet20-12fca82f.th")
    sd, prov = load_akamaster_weights(path, arch_name)
    from resnet_repro.models.registry import spec as arch_spec

    arch = arch_spec(arch_name).name
    save_imported(sd, arch, out, f"akamaster:{path}", build_kwargs={"shortcut": "A"},
                  preprocessing=akamaster_preprocessing(), provenance=prov)
    model = build_imported(out)
    pub = (f"published {prov['published_test_error']:.2f}% test error on the original CIFAR-10"
           if prov.get("published_test_error") is not None else "not one of the published files (sha256 unknown)")
    console.print(
        f"wrote {out}: {arch} from akamaster ({pub}), {count_params(model):,} parameters, option A; inputs "
        "normalised with the ImageNet mean/std (recorded in the file, used by `resnet-repro evaluate` and "
        "`train --init-weights`)",
        highlight=False, soft_wrap=True,
    )


# ---------------------------------------------------------------------------- responses
@app.command()
def responses(
    run_dirs: list[Path] = typer.Argument(..., help="Finished CIFAR-10 run directories (with checkpoints/final.pt)."),
    split: str = typer.Option("test", "--split", help="test (the paper's, 10k images) or val (the 5k held out)."),
    data_dir: str | None = typer.Option(None, "--data-dir", "-d", help="CIFAR-10 location if not the run's (same data, checked)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    batch_size: int = typer.Option(500, "--batch-size", help="Images per forward pass (memory only)."),
) -> None:
    """Measure each run's layer responses (paper Sec. 4.2, Fig. 7): the std of every 3x3
    layer's output after BN, before ReLU/addition, stem included (6n+1 layers), on the
    test set in eval mode; writes RUN/responses.json. Draw them with `resnet-repro figure 7`."""
    from resnet_repro.analysis.responses import check_runs, write_responses
    from resnet_repro.train.config import resolve_device

    if batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    check_runs(run_dirs)
    for d in run_dirs:
        r = write_responses(d, split=split, device=dev, data_dir=data_dir, batch_size=batch_size)
        stds = [layer["std"] for layer in r["layers"]]
        console.print(
            f"wrote {d}/responses.json: {r['paper_name']}, {len(stds)} 3x3 layers, {r['split']} set "
            f"({r['images']:,} images, top-1 error {r['error']:.2f}%), std {min(stds):.3f} to {max(stds):.3f}",
            highlight=False, soft_wrap=True,
        )


# ---------------------------------------------------------------------------- bench
@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Fewer, shorter windows and fewer memory probes (about 2 minutes on 2 CPU cores)."),
    data_dir: str | None = typer.Option(None, "--data-dir", "-d", help="CIFAR-10 source (default: ../shared/data/cifar10-jpeg.tar.gz where present, else $RESNET_REPRO_DATA or data/cifar10)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Random images instead of CIFAR-10 (for machines without the data set)."),
    synthetic_images: int = typer.Option(45000, "--synthetic-images", help="Random training images with --synthetic (test images: a fifth, 200 to 10,000)."),
    out: Path = typer.Option(Path("runs/bench.json"), "--out", "-o", help="Where to write the results as JSON (atomically)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers of the baseline (default: the CPU count, at most 8)."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated nets to time (default resnet20,resnet56,resnet110,resnet50)."),
    memory: str | None = typer.Option(None, "--memory", help="Peak-memory probes as arch:path[:ckpt],... (path ours or baseline; ckpt = activation checkpointing); 'none' for none."),
    rounds: int | None = typer.Option(None, "--rounds", help="Alternations of ours and the baseline per measurement."),
    iters: int | None = typer.Option(None, "--iters", help="Minimum timed iterations per window."),
    seconds: float | None = typer.Option(None, "--seconds", help="Minimum seconds per window."),
    ablation: bool = typer.Option(True, "--fast-paths/--no-fast-paths", help="Time the fast paths one by one on ResNet-20."),
    compile_variant: bool = typer.Option(False, "--compile", help="Also time torch.compile among the fast paths (always on CUDA)."),
    check: bool = typer.Option(False, "--check", help="Also train ResNet-20 on the smoke schedule with our loop (fast paths on and off) and with the baseline, and compare test errors."),
    check_seeds: int = typer.Option(1, "--check-seeds", help="Seeds of --check (0..N-1)."),
) -> None:
    """Time our training step against the usual PyTorch pipeline (torchvision transforms
    on PIL images, DataLoader workers, fp32, NCHW), side by side and in alternation:
    training and evaluation images/s, FLOP/s, peak memory, fast paths, and a projection of
    the paper's 64k-iteration schedule. Prints tables and writes them as JSON.

    Examples:

      resnet-repro bench --quick

      resnet-repro bench --synthetic --models resnet20 --out runs/bench-synthetic.json
    """
    import os

    from resnet_repro.bench import default_options, run_bench, tables, write_result
    from resnet_repro.train.config import resolve_device

    dev = resolve_device(device)
    n_cpu = os.cpu_count() or 1
    if threads is not None and threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    if workers is not None and workers < 0:
        fail(f"--workers must be >= 0, got {workers}")
    opts = default_options(quick, dev, threads or n_cpu, min(n_cpu, 8) if workers is None else workers)
    if synthetic:
        if synthetic_images < 256:
            fail(f"--synthetic-images must be >= 256, got {synthetic_images}")
        opts.synthetic, opts.synthetic_train = True, synthetic_images
    else:
        shared = Path("../shared/data/cifar10-jpeg.tar.gz")
        opts.data_dir = data_dir or (str(shared) if shared.is_file() else _default_data_dir())
    if models is not None:
        opts.models = [m.strip() for m in models.split(",") if m.strip()]
    if memory is not None:
        opts.memory = []
        for item in ([] if memory.strip() == "none" else memory.split(",")):
            parts = item.strip().split(":")
            if len(parts) not in (2, 3) or parts[1] not in ("ours", "baseline") or parts[2:] not in ([], ["ckpt"]):
                fail(f"bad --memory item {item!r}; write arch:ours, arch:baseline or arch:ours:ckpt")
            opts.memory.append((parts[0], parts[1], parts[2:] == ["ckpt"]))
    for name, v in (("rounds", rounds), ("iters", iters)):
        if v is not None:
            if v < 1:
                fail(f"--{name} must be >= 1, got {v}")
            setattr(opts, name, v)
    if seconds is not None:
        opts.seconds = max(0.0, seconds)
    opts.ablation, opts.compile_variant = ablation, compile_variant
    opts.check, opts.check_seeds = check, list(range(max(1, check_seeds)))
    with console.status("benchmark") as status:
        result = run_bench(opts, progress=lambda m: status.update(f"benchmark: {m}"))
    from resnet_repro.report.render import print_fitted

    for t in tables(result):
        print_fitted(console, t)
    write_result(out, result)
    console.print(f"wrote {out} ({result['meta']['bench_seconds']:.0f} s)", highlight=False)


# ---------------------------------------------------------------------------- run
@app.command()
def run(
    experiment: str = typer.Argument(..., help="An experiments/NAME.toml spec (e.g. cifar10-depth) or a path to one."),
    profile: str = typer.Option("quick", "--profile", "-p", help="paper (the paper's schedule), quick (1/16 of it on CIFAR-10) or smoke (seconds; a subset of the runs)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds replacing the spec's, e.g. 0,1,2."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs at once, each in its own process with cores // N threads."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Parent of <dataset>/<run>/ directories (default: results/, what tables and figures read)."),
    data_dir: str | None = typer.Option(None, "--data-dir", "-d", help="Data location (default: $RESNET_REPRO_DATA, else the first of the spec's `data` that exists)."),
    download: bool = typer.Option(False, "--download", help="CIFAR-10: download the original through torchvision if no copy is found."),
    iterations: int | None = typer.Option(None, "--iterations", help="Replace the profile's length by N iterations (a custom schedule, kept apart in tables)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads per run (default: cores // --jobs)."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16 (as for train)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    launcher: str = typer.Option("local", "--launcher", help="local (processes here) or slurm (one submitit job per run; needs the slurm extra)."),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition", help="Slurm partition for --launcher slurm."),
    slurm_time: int = typer.Option(24 * 60, "--slurm-time", help="Time limit per job in minutes for --launcher slurm."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files in each run directory."),
    grad_norms_every: int | None = typer.Option(None, "--grad-norms-every", help=GRAD_NORMS_HELP + " An unfinished run resumes with its own."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the runs and what would be done to each."),
) -> None:
    """Run an experiment: expand its spec into runs, skip complete ones, resume
    interrupted ones, and train the rest, N at once, with one progress view.

    Examples:

      resnet-repro run cifar10-depth --profile smoke

      resnet-repro run cifar10-depth --profile quick --jobs 2 --seeds 0,1,2
    """
    from resnet_repro.experiments import (
        execute_local,
        execute_submitit,
        load_spec,
        make_submitit_executor,
        plan,
    )
    from resnet_repro.report.render import ExperimentProgress, print_plan

    seed_list = None
    if seeds is not None:
        try:
            seed_list = sorted({int(x) for x in seeds.split(",") if x.strip()})
        except ValueError:
            fail(f"bad --seeds {seeds!r}; give comma-separated integers such as 0,1,2")
        if not seed_list or any(x < 0 for x in seed_list):
            fail(f"bad --seeds {seeds!r}; give comma-separated non-negative integers such as 0,1,2")
    if launcher not in ("local", "slurm"):
        fail(f"unknown --launcher {launcher!r}; choose local or slurm")
    spec = load_spec(experiment)
    plans = plan(spec, profile, out=out, seeds=seed_list, data_dir=data_dir, iterations=iterations, jobs=jobs,
                 threads=threads, precision=precision, device=device, tensorboard=tensorboard, download=download,
                 grad_norms_every=grad_norms_every)
    todo = [p for p in plans if p.todo]
    if todo and not dry_run:  # before the plan is shown and any run starts
        from resnet_repro.fsio import unwritable_reason

        why = unwritable_reason(out / spec.dataset, kind="dir")
        if why is not None:
            fail(f"cannot write to {out / spec.dataset} ({why}); choose a writable --out")
    ex = None
    if launcher == "slurm" and todo and not dry_run:  # before any output: a missing extra is one error line
        ex = make_submitit_executor(out / ".submitit", todo[0].config.threads or 1, slurm_time,
                                    slurm_partition, gpus=1 if todo[0].config.device.startswith("cuda") else 0)
    print_plan(console, f"{spec.name} ({profile}): {spec.title}", plans)
    if dry_run:
        return
    if download and spec.dataset == "cifar10" and any(p.todo for p in plans):
        from resnet_repro.data.cifar import load_cifar10

        load_cifar10(plans[0].config.data_dir, download=True)  # once, before the runs start
    if not todo:  # nothing to train: report the skipped and conflicting runs
        outcomes = execute_local(plans, jobs)
    else:
        with ExperimentProgress(console, plans) as prog:
            if ex is not None:
                outcomes = execute_submitit(plans, ex, prog.on_event)
            else:
                outcomes = execute_local(plans, jobs, prog.on_event)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    console.print(f"{spec.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" (runs in {out})",
                  highlight=False)
    for o in outcomes:
        if o.status == "failed":
            err_console.print(f"error: {o.label}: {o.message}", style="bold red", markup=False, highlight=False,
                              soft_wrap=True)
    if any(o.status in ("interrupted", "cancelled") for o in outcomes):
        raise typer.Exit(130)
    if any(o.status in ("failed", "diverged") for o in outcomes):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- figure
@app.command()
def figure(
    number: str = typer.Argument(..., help="Paper figure: 1, 4, 6 or 7; or gradients (per-stage gradient norms, Sec. 4.1)."),
    runs_dir: list[Path] | None = typer.Option(None, "--runs", "-r", help=RUNS_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Base path or folder (default results/figures/figureN, or figureN-SCHEDULE with --schedule; results/figures/gradients for the gradients); writes .png and .pdf."),
    schedule: str | None = typer.Option(None, "--schedule", help="Figures 1 and 6 and gradients: draw the runs of this schedule (paper, quick, smoke, custom), runs still in progress drawn thin and labelled. Default: the schedule of the longest complete run (for gradients: of those that logged gradient norms), so one figure never mixes schedules."),
) -> None:
    """Rebuild paper Figure N from logged runs as PNG and PDF: 1 (plain-20/56 on
    CIFAR-10), 4 (ImageNet 18/34), 6 (CIFAR-10 depths), 7 (layer responses); or
    gradients: the per-stage gradient norms of plain-20/56 and ResNet-20/56 that paper
    Sec. 4.1 states are healthy but does not show (runs' grad_norms events).

    Examples:

      resnet-repro figure 6

      resnet-repro figure 6 --schedule paper --runs results

      resnet-repro figure gradients --schedule quick
    """
    import warnings

    from resnet_repro.report.figures import GRADIENTS
    from resnet_repro.report.figures import figure as make_figure

    key = number.strip().lower()
    if key != GRADIENTS:
        if not key.isdigit() or not key.isascii():
            fail(f"unknown figure {number!r}; choose 1, 4, 6, 7 or {GRADIENTS}")
        key = int(key)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = make_figure(key, default_roots(runs_dir), out, schedule)
    for w in caught:
        err_console.print(f"warning: {w.message}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    for p in paths:
        console.print(f"wrote {p}", highlight=False)


# ---------------------------------------------------------------------------- report
@app.command()
def report(
    runs_dir: list[Path] | None = typer.Option(None, "--runs", "-r", help=RUNS_HELP),
    out: Path = typer.Option(Path("results/REPORT.md"), "--out", "-o", help="The Markdown report; figures go to figures/ beside it."),
) -> None:
    """Write one Markdown report with every table and figure, the runs behind each and
    the commands that rerun them."""
    from resnet_repro.report.report import build_report

    res = build_report(default_roots(runs_dir), out)
    for w in res["warnings"]:
        err_console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {res['report']} and {len(res['figures'])} figure files", highlight=False)


# ---------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    run: Path | None = typer.Option(None, "--run-dir", help="A run directory (its checkpoints/final.pt): ImageNet, or CIFAR-10 with --dataset cifar10."),
    run_old: Path | None = typer.Option(None, "--run", hidden=True, help="Old spelling of --run-dir (torchrun refuses it: an abbreviation of its --run-path)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights from `resnet-repro import-weights` (or a run's final.pt); ImageNet needs --arch, CIFAR-10 reads the net from the file."),
    arch_name: str | None = typer.Option(None, "--arch", help="The net of --weights, e.g. resnet50 (CIFAR-10: optional, checked against the file)."),
    dataset: str | None = typer.Option(None, "--dataset", help="imagenet (Tables 2-4 protocols), cifar10 (test error over the 10,000 test images, one view each) or cifar100 (the same on CIFAR-100); default: the run's or the file's (a CIFAR net: cifar10, or cifar100 for 100 outputs), else imagenet."),
    protocol: str | None = typer.Option(None, "--protocol", "-p", help="ImageNet: center (Fig. 4 curves), 10crop (default; Tables 2, 3) or multiscale (Table 4: shorter sides 224..640, scores averaged)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", "-d", help="ImageNet: image folders with val/<wnid>/ (train/ not needed). CIFAR-10: any form train reads (default for --run: the run's own)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Results file (default RUN/eval-<protocol>.json or WEIGHTS.eval-<protocol>.json; CIFAR-10: eval-cifar10.json, e.g. results/cifar10-reference/NAME.json for Table 6)."),
    normalization: str = typer.Option("auto", "--normalization", help="CIFAR-10 inputs: auto (as the weights were trained: recorded in imported files, the run's own), imagenet (per-channel ImageNet mean/std) or pixel-mean (per-pixel training mean). Another than the weights' own is a warning."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per batch (default 100 center, 16 10-crop, 4 multi-scale; CIFAR-10 500)."),
    workers: int | None = typer.Option(None, "--workers", help="ImageNet: DataLoader workers (default: the cores / processes, at most 16)."),
    threads: int | None = typer.Option(None, "--threads", help="CIFAR-10: CPU threads (default: torch's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (one GPU per process under torchrun)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (default) or bf16 autocast."),
    images: int | None = typer.Option(None, "--images", help="Evaluate only N evenly spaced val/test images (a quick look; recorded, and tables ignore it)."),
) -> None:
    """Error (%) of a trained or imported net, written as JSON for the tables: ImageNet
    top-1/top-5 under one of the paper's testing protocols (Tables 2-4), or CIFAR-10
    test error (--dataset cifar10; the reference rows of Table 6).

    Examples:

      resnet-repro evaluate --run-dir runs/resnet34-A-paper-s0 --protocol 10crop --data-dir /data/imagenet

      torchrun --nproc_per_node=8 -m resnet_repro evaluate --weights r50.pt --arch resnet50 --protocol multiscale --data-dir /data/imagenet

      resnet-repro evaluate --weights runs/reference/akamaster-resnet20.pt --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if run is not None and run_old is not None:
        fail("give --run-dir once (--run is its old spelling)")
    run = run if run is not None else run_old
    if dataset is None:
        dataset = _dataset_of(run, weights)
    if dataset not in ("imagenet", "cifar10", "cifar100"):
        fail(f"unknown --dataset {dataset!r}; choose imagenet, cifar10 or cifar100")
    if dataset in ("cifar10", "cifar100"):
        if protocol is not None or workers is not None:
            fail("--protocol and --workers are ImageNet options; CIFAR is evaluated on one view of each test image")
        _evaluate_cifar(run, weights, arch_name, data_dir, out_file, normalization, batch_size, threads, device,
                        precision, images, dataset)
        return
    if normalization != "auto" or threads is not None:
        fail("--normalization and --threads are CIFAR-10 options (--dataset cifar10)")
    if data_dir is None:
        fail("missing --data-dir: the ImageNet image folders with val/<wnid>/")
    protocol = protocol or "10crop"

    from resnet_repro.evaluate import result_line, run_evaluation
    from resnet_repro.report.progress import interactive
    from resnet_repro.train.distributed import env_rank

    main_rank = env_rank() == 0
    prog = Progress(TextColumn(f"[bold]{protocol}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not main_rank or not interactive(console))
    task = prog.add_task("eval", total=None)

    started = []

    def on_start(n: int) -> None:  # the bar appears once the inputs are checked and loaded
        prog.update(task, total=n)
        prog.start()
        started.append(True)

    try:
        result, path = run_evaluation(
            protocol, str(data_dir), run_dir=None if run is None else str(run),
            weights=None if weights is None else str(weights), arch=arch_name,
            out=None if out_file is None else str(out_file), batch_size=batch_size, workers=workers,
            device=device, precision=precision, images=images,
            on_start=on_start, on_batch=lambda k: prog.advance(task, k))
    finally:
        if started:
            prog.stop()
    if main_rank:
        console.print(f"{result_line(result)}; wrote {path}", highlight=False, soft_wrap=True)


def _dataset_of(run: Path | None, weights: Path | None) -> str:
    """``evaluate`` without ``--dataset``: the data set of a CIFAR run (``cifar10`` or
    ``cifar100``), ``cifar10`` for a file holding a CIFAR net (``cifar100`` where it has
    100 outputs), else ``imagenet`` (unreadable inputs are left to the evaluation's
    errors)."""
    from resnet_repro.models.registry import spec as arch_spec

    try:
        if run is not None:
            from resnet_repro.runs import read_json

            conf = (read_json(run / "config.json") or {}).get("config") or {}
            ds = conf.get("dataset", "imagenet")
            return ds if ds in ("cifar10", "cifar100") else "imagenet"
        if weights is not None and weights.is_file():
            from resnet_repro.models.convert import _torch_load

            obj = _torch_load(weights)
            arch = obj.get("arch") if isinstance(obj, dict) else None
            if not (isinstance(arch, str) and arch_spec(arch).family == "cifar"):
                return "imagenet"
            return "cifar100" if obj.get("num_classes") == 100 else "cifar10"
    except (UserError, AttributeError, TypeError):
        pass
    return "imagenet"


def _evaluate_cifar(run, weights, arch_name, data_dir, out_file, normalization, batch_size, threads, device,
                    precision, images, dataset: str = "cifar10") -> None:
    """``evaluate --dataset cifar10`` (or ``cifar100``): progress bar, the normalisation
    used, warnings, result."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from resnet_repro.evaluate_cifar import evaluate_cifar, result_line

    prog = Progress(TextColumn(f"[bold]{dataset} test"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)
    task = prog.add_task("eval", total=None)
    started = []

    def on_start(n: int, norm: dict) -> None:
        console.print(f"normalisation: {norm['name']} ({norm['source']})", highlight=False, soft_wrap=True)
        prog.update(task, total=n)
        prog.start()
        started.append(True)

    try:
        record, path, warns = evaluate_cifar(
            None if data_dir is None else str(data_dir), weights=None if weights is None else str(weights),
            run_dir=None if run is None else str(run), arch=arch_name,
            out=None if out_file is None else str(out_file), normalization=normalization, precision=precision,
            device=device, threads=threads, images=images, batch_size=batch_size or 500,
            on_start=on_start, on_batch=lambda k: prog.advance(task, k), dataset=dataset)
    finally:
        if started:
            prog.stop()
    for w in warns:
        err_console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{result_line(record)}; wrote {path}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------- entry
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the Typer app and turns :class:`UserError` into a
    one-line message with exit code 2."""
    from typer import Abort

    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # typer before it vendored click
        from click.exceptions import ClickException, NoArgsIsHelpError
    try:
        rv = app(args=argv, standalone_mode=False)
    except UserError as exc:
        print_error(str(exc))
        sys.exit(2)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ClickException as exc:  # bad options: one line naming the problem and where help is
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print_error(exc.format_message() + hint)
        sys.exit(exc.exit_code)
    except Abort:
        print_error("aborted")
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
