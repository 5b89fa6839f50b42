"""A benchmark of the report path: how long rebuilding every table and figure takes from
many stored runs. It writes synthetic but format-valid run directories (``config.json``
from a real :class:`~resnet_repro.train.config.RunConfig`, ``metrics.jsonl`` with
``train``/``eval`` events, ``summary.json``) into a temporary folder, then times each
table and figure. Nothing is trained."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from resnet_repro import runs
from resnet_repro.fsio import atomic_write_text

BENCH_NETS = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56",
              "resnet110", "resnet1202")


def write_synthetic_run(run_dir: Path, arch: str, seed: int, schedule: str = "quick", shortcut: str | None = None,
                        final_test_error: float | None = None, rng: np.random.Generator | None = None,
                        lr: float = 0.1, iterations: int | None = None, train_on: str | None = None,
                        dataset: str = "cifar10", grad_norms_every: int = 0) -> Path:
    """Write one complete, format-valid CIFAR-10 (or ``dataset`` CIFAR-100) run directory
    (no checkpoints) whose curves decay from 90% to ``final_test_error`` (default: random
    6-15%), with the lr (base ``lr``) and warm-up of its schedule logged as the training
    loop logs them. ``train_on`` None: the schedule's (``all`` for a preset, else
    ``split``). With ``grad_norms_every`` > 0, ``grad_norms`` events (made-up positive
    norms) where the loop logs them: at iterations 0, N, 2N, ..., each before the train
    event of its iteration.

    Returns:
        ``run_dir``.
    """
    from resnet_repro.analysis.gradients import INPUT_MODULES, WEIGHT_GROUPS
    from resnet_repro.train.config import make_config
    from resnet_repro.train.schedule import lr_at

    rng = rng if rng is not None else np.random.default_rng(seed)
    cfg = make_config(arch, "synthetic", shortcut=shortcut, schedule=schedule, seed=seed, precision="fp32",
                      device="cpu", threads=1, lr=lr, iterations=iterations, train_on=train_on, dataset=dataset,
                      grad_norms_every=grad_norms_every)
    cfg = cfg.model_copy(update={"data_checksum": "0" * 64})
    run_dir = Path(run_dir)
    runs.write_config(run_dir, cfg.model_dump(), {"hardware": {"cpu": "synthetic CPU"},
                                                  "data_source_kind": "synthetic"})
    final = float(final_test_error if final_test_error is not None else rng.uniform(6, 15))
    lines = [json.dumps({"event": "start", "iteration": 0, "wall_s": 0.0}, sort_keys=True)]

    def grad_norms(upto: int) -> None:  # the events of the iterations up to `upto` (each right after its step)
        nonlocal next_norm
        while grad_norms_every and next_norm <= upto and next_norm < cfg.iterations:
            decay = float(np.exp(-3 * next_norm / cfg.iterations))
            lines.append(json.dumps({
                "event": "grad_norms", "iteration": next_norm, "loss": 2.3 * decay + 0.2,
                "weight": {n: float(rng.uniform(0.2, 2.0)) * decay + 0.05 for n, _ in WEIGHT_GROUPS},
                "input": {n: float(rng.uniform(0.005, 0.2)) * decay + 0.001 for n in INPUT_MODULES}},
                sort_keys=True))
            next_norm += grad_norms_every

    next_norm = 0
    grad_norms(0)
    last = {}
    warm = cfg.warmup  # the loop's warm-up rule, so that the run passes resnet_repro.runcheck
    for it in range(cfg.log_every, cfg.iterations + 1, cfg.log_every):
        grad_norms(it)
        frac = it / cfg.iterations
        train_err = max(0.5, final - 3 + (90 - final) * np.exp(-6 * frac) + rng.normal(0, 0.5))
        lr = lr_at(it - 1, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.warmup_lr if warm else None)
        lines.append(json.dumps({"event": "train", "iteration": it, "lr": lr, "train_loss": train_err / 30,
                                 "train_error": train_err, "images_per_s": 500.0, "wall_s": it * 0.1},
                                sort_keys=True))
        if warm and (train_err < cfg.warmup_until_train_error or it >= cfg.warmup_max_iterations):
            warm = False
            lines.append(json.dumps({"event": "warmup_end", "iteration": it, "train_error": train_err,
                                     "reason": "cap_reached" if it >= cfg.warmup_max_iterations
                                     else "train_error_below_threshold"}, sort_keys=True))
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            test = final if it == cfg.iterations else final + (90 - final) * np.exp(-6 * frac)
            last = {"event": "eval", "iteration": it, "train_error": train_err, "val_error": test + 0.3,
                    "test_error": test, "wall_s": it * 0.1}
            if cfg.train_on == "all":  # no validation images: the loop logs no val_error
                del last["val_error"]
            lines.append(json.dumps(last, sort_keys=True))
    lines.append(json.dumps({"event": "end", "iteration": cfg.iterations, "status": "complete"}, sort_keys=True))
    atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
    runs.write_summary(run_dir, {
        "status": "complete", "iterations_done": cfg.iterations, "iterations": cfg.iterations,
        "final_train_error": last["train_error"], "final_val_error": last.get("val_error"),
        "final_test_error": last["test_error"], "eval_iteration": cfg.iterations, "wall_s": cfg.iterations * 0.1,
        "images_per_s": 500.0, "data_source_kind": "synthetic"})
    return run_dir


def write_synthetic_runs(root: Path, n_runs: int = 100, schedule: str = "quick") -> list[Path]:
    """``n_runs`` synthetic runs under ``root/cifar10/``: the nets of Table 6 and Fig. 6
    in turn, seeds 0, 1, 2, ... (ResNet-1202 only once: it is the costliest to count)."""
    rng = np.random.default_rng(0)
    out = []
    nets = [n for n in BENCH_NETS if n != "resnet1202"]
    for i in range(n_runs):
        arch = "resnet1202" if i == n_runs - 1 and n_runs > len(nets) else nets[i % len(nets)]
        seed = i // len(nets)
        name = f"{arch}-{'A-' if arch.startswith('resnet') else ''}{schedule}-s{seed}"
        out.append(write_synthetic_run(root / "cifar10" / name, arch, seed, schedule, rng=rng))
    return out


def bench_reports(n_runs: int = 100) -> dict:
    """Time rebuilding every table (1-8 and cifar-shortcuts) and figure (1, 4, 6; 7 where
    its module exists) from ``n_runs`` synthetic run directories.

    Returns:
        ``{"n_runs": int, "write_s": float, "tables_s": {key: s}, "figures_s": {n: s},
        "total_s": float}`` (seconds, wall clock), plus ``"table6_n"``: the runs counted
        in Table 6 (a check that the synthetic runs were read).
    """
    from resnet_repro.errors import UserError
    from resnet_repro.report import figures
    from resnet_repro.report.tables import TABLE_KEYS, get_table

    with tempfile.TemporaryDirectory(prefix="resnet-repro-bench-") as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        write_synthetic_runs(root, n_runs)
        write_s = time.perf_counter() - t0
        tables_s, figures_s = {}, {}
        counted = 0
        t_all = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key in TABLE_KEYS:
                t = time.perf_counter()
                tab = get_table(key, root)
                tables_s[key] = round(time.perf_counter() - t, 4)
                if key == "6":
                    counted = int(tab.frame["n"].sum())
            for n in figures.FIGURES:
                t = time.perf_counter()
                try:
                    figures.figure(n, root, Path(tmp) / "figures" / f"figure{n}")
                except UserError:
                    continue  # Figure 7 without its module
                figures_s[n] = round(time.perf_counter() - t, 4)
        total = time.perf_counter() - t_all
    return {"n_runs": n_runs, "write_s": round(write_s, 4), "tables_s": tables_s, "figures_s": figures_s,
            "total_s": round(total, 4), "table6_n": counted}
