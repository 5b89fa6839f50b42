"""Whether a run agrees with itself: its ``summary.json``, its ``metrics.jsonl`` and its
``config.json`` (``resnet-repro check``; :func:`resnet_repro.runs.load_runs` applies the
same check to every run that tables, figures and the report read).

The training loops write all three files from the same numbers, so a run whose files
disagree was edited by hand, assembled from two runs' files, or written by a broken
version; a table must not show it. :func:`check_run` compares:

* **summary and log.** ``final_train_error``, ``final_val_error``, ``final_test_error``
  (ImageNet: ``final_val_top5_error``) equal the last ``eval`` event's errors and
  ``eval_iteration`` its iteration; ``iterations_done`` is where the log ends; the
  status is the ``end`` event's; for a complete run ``wall_s`` is the ``end`` event's
  (within the moment between the two writes); ``images_per_s`` is
  ``iterations_done x batch_size / train_s``; ``precision`` and ``iterations`` are the
  config's.
* **log and config.** Every ``train`` event's ``lr`` is what the config's schedule gives
  for its iteration (the lr of the window's last step: ``lr`` divided by ``1/lr_gamma``
  at each milestone passed; ``warmup_lr`` up to the ``warmup_end`` event, which must end
  the warm-up at the first logging point whose training error is below
  ``warmup_until_train_error`` or at ``warmup_max_iterations``; ImageNet's plateau rule:
  one division per ``lr_drop`` event before it). ``train`` events come at every
  ``log_every`` iterations and ``eval`` events at every ``eval_every`` (and at the last
  iteration), iterations never go back, and an ``eval`` event's training error is its
  window's. Other events (``warmup_end``, ``lr_drop``, the ``grad_norms`` of
  :func:`resnet_repro.train.loop.fit`) take part only in that order of iterations.
* **evaluation files** (``eval-<protocol>.json``, read by Tables 2-4): errors are
  percentages, top-5 no higher than top-1, a positive image count
  (:func:`eval_file_problems`).
* **config and schedule.** A CIFAR-10 or CIFAR-100 run's ``iterations``,
  ``lr_milestones``, ``eval_every``, ``log_every`` and ``eval_subset`` are those of the
  schedule it names (:func:`resnet_repro.train.schedule.get_schedule`; ``custom``: the
  paper's shape at its length; a preset such as ``akamaster``: its epochs of 391
  iterations, ``train_on`` ``all`` and, with the warm-up, its fixed length), so that a
  table's schedule column says what the run did.

**Runs in progress** (summary ``running`` or ``interrupted``, e.g. a 64k-iteration run
copied into ``results/`` part-way) pass when what they have logged so far agrees: the
summary is the log's last evaluation (a ``running`` summary may be one evaluation
behind: the loop logs an evaluation, then writes its checkpoint, then the summary), and
the lr follows the schedule up to where the log ends. They are not complete, and tables
count only complete runs.

Comparisons are exact where both files hold the same number (a JSON float reads back
bit for bit); only times get a margin.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WALL_MARGIN_S = 60.0  # summary.json is written just after the end event; a slow disk may take a while
LR_REL_TOL = 1e-9  # both are the same Python expression; older logs wrote 0.010000000000000002


@dataclass(frozen=True)
class Disagreement:
    """One thing a run's files disagree on: the ``file`` that holds the wrong-looking
    value (``summary.json``, ``metrics.jsonl``, ``config.json``), its ``field`` and a
    ``detail`` with both values."""

    file: str
    field: str
    detail: str

    def text(self) -> str:
        """``"summary.json final_test_error: 93.57, but ..."`` (one line)."""
        return f"{self.file} {self.field}: {self.detail}"


def warning_line(run_dir: Path | str, problems: list[Disagreement]) -> str:
    """The one line that tables, figures, the report and ``resnet-repro check`` print for
    a run whose files disagree: the run, the first field, how many more."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (f"{run_dir}: {problems[0].text()}{more}; run left out of tables and figures "
            f"(see `resnet-repro check {run_dir}`)")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _fmt(v: Any) -> str:
    return "missing" if v is None else f"{v!r:.40}"


def _same(a: Any, b: Any) -> bool:
    """Equal as stored numbers (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    x, y = _num(a), _num(b)
    return x is not None and y is not None and x == y


def _milestones_text(cfg: dict) -> str:
    ms = cfg.get("lr_milestones") or []
    gamma = cfg.get("lr_gamma", 0.1)
    if not ms:
        return f"lr {cfg.get('lr')} throughout"
    div = f"divided by {1 / gamma:g}" if gamma else f"times {gamma}"
    return f"lr {cfg.get('lr')}, {div} at iteration{'s' if len(ms) > 1 else ''} {', '.join(f'{m:,}' for m in ms)}"


# ---------------------------------------------------------------------------- config vs schedule
def _schedule_problems(cfg: dict) -> list[Disagreement]:
    from resnet_repro.errors import UserError
    from resnet_repro.train.schedule import PRESETS, SCHEDULES, get_schedule, named_schedule

    if cfg.get("dataset", "cifar10") not in (None, "cifar10", "cifar100"):
        return []
    name = cfg.get("schedule")
    try:
        if named_schedule(name) is not None:
            want = named_schedule(name)
        elif name == "custom" and _int(cfg.get("iterations")) is not None:
            want = get_schedule(iterations=cfg["iterations"])
        else:
            return [Disagreement("config.json", "schedule", f"{_fmt(name)} is not a CIFAR schedule "
                                 f"({', '.join((*SCHEDULES, *PRESETS))} or custom)")]
    except UserError as exc:
        return [Disagreement("config.json", "iterations", str(exc))]
    expected = {"iterations": want.iterations, "lr_milestones": list(want.milestones), "eval_every": want.eval_every,
                "log_every": want.log_every, "eval_subset": want.eval_subset}
    if want.preset:
        expected["train_on"] = "all"
    if cfg.get("warmup"):
        expected["warmup_max_iterations"] = want.warmup_max_iterations
        if want.warmup_iterations is not None:
            expected["warmup_until_train_error"] = want.warmup_until_train_error
    out = []
    for k, v in expected.items():
        got = cfg.get(k)
        if (list(got) if isinstance(got, (list, tuple)) else got) != v:
            out.append(Disagreement("config.json", k, f"{_fmt(got)}, but the {name} schedule has {v!r}"))
    return out


# ---------------------------------------------------------------------------- log vs config
def _expected_lrs(cfg: dict, train: list[dict], events: list[dict], complete: bool) -> list[Disagreement]:
    """The lr of every train event against the schedule; the warm-up's end against its rule."""
    from resnet_repro.train.schedule import lr_at

    out: list[Disagreement] = []
    if not train:
        return out
    base, gamma, ms = _num(cfg.get("lr")), _num(cfg.get("lr_gamma", 0.1)), cfg.get("lr_milestones") or []
    if base is None or gamma is None or not isinstance(ms, list):
        return [Disagreement("config.json", "lr", f"lr {_fmt(cfg.get('lr'))}, lr_gamma {_fmt(cfg.get('lr_gamma'))}, "
                             f"lr_milestones {_fmt(cfg.get('lr_milestones'))} are not a schedule")]
    imagenet = cfg.get("imagenet") if isinstance(cfg.get("imagenet"), dict) else None
    plateau = imagenet is not None and imagenet.get("lr_rule") == "plateau"
    drops = sorted(_int(e.get("iteration")) or 0 for e in events if e.get("event") == "lr_drop")

    warm = bool(cfg.get("warmup"))
    ends = [e for e in events if e.get("event") == "warmup_end"]
    threshold = _num(cfg.get("warmup_until_train_error"))
    cap = _int(cfg.get("warmup_max_iterations")) or 0

    def ends_warmup(e: dict) -> bool:  # the loop's test at every logging point
        err = _num(e.get("train_error"))
        return (threshold is not None and err is not None and err < threshold) or (_int(e.get("iteration")) or 0) >= cap

    warm_until: float | None = None  # the last iteration trained at the warm-up lr (inf: all so far)
    if ends and not warm:
        out.append(Disagreement("metrics.jsonl", "warmup_end", f"logged at iteration {ends[0].get('iteration')}, "
                                "but the config has no warm-up"))
    elif warm:
        warm_until = float(_int(ends[0].get("iteration")) or 0) if ends else math.inf
        should = next((e for e in train if ends_warmup(e)), None)
        rule = f"training error below {threshold}% or iteration {cap:,}"
        if len(ends) > 1:
            out.append(Disagreement("metrics.jsonl", "warmup_end", f"logged {len(ends)} times"))
        elif ends and (should is None or _int(should.get("iteration")) != _int(ends[0].get("iteration"))):
            where = f"iteration {should.get('iteration')}" if should is not None else "no logged iteration"
            out.append(Disagreement("metrics.jsonl", "warmup_end", f"at iteration {ends[0].get('iteration')}, but "
                                    f"its rule ({rule}) ends it at {where}"))
        elif not ends and should is not None and (complete or should is not train[-1]):
            # (a log that ends right at that point may have lost only the warmup_end line)
            out.append(Disagreement("metrics.jsonl", "warmup_end", f"missing: its rule ({rule}) ends the warm-up "
                                    f"at iteration {should.get('iteration')}"))

    for e in train:
        k = _int(e.get("iteration"))
        if k is None:
            continue
        got = _num(e.get("lr"))
        if warm_until is not None and k <= warm_until:
            want = _num(cfg.get("warmup_lr"))
            why = f"the warm-up lr {cfg.get('warmup_lr')}" + (
                f" until iteration {int(warm_until):,}" if math.isfinite(warm_until) else "")
        elif plateau:
            n = sum(1 for d in drops if d < k)
            want = float(f"{base * gamma ** n:.12g}")
            why = f"lr {base} after {n} plateau drop{'s' if n != 1 else ''}"
        else:
            want, why = lr_at(k - 1, base, ms, gamma), _milestones_text(cfg)
        if got is None or want is None or not math.isclose(got, want, rel_tol=LR_REL_TOL):
            out.append(Disagreement("metrics.jsonl", "lr", f"{_fmt(e.get('lr'))} at iteration {k:,}, but the config's "
                                    f"schedule gives {want!r} ({why})"))
            break  # one line: the first iteration where the lr leaves its schedule
    return out


def _cadence(kind: str, its: list[int], every: int | None, total: int | None, complete: bool) -> Disagreement | None:
    """``its`` (train or eval iterations) must be every ``every``-th iteration, plus the
    last, without gaps or repeats, up to where they end."""
    if every is None or every <= 0 or total is None:
        return None
    field = "log_every" if kind == "train" else "eval_every"
    if not its:
        if complete:
            return Disagreement("metrics.jsonl", kind, f"no {kind} events in a complete run")
        return None
    want = list(range(every, its[-1] + 1, every))
    if its[-1] == total and (not want or want[-1] != total):
        want.append(total)
    if its != want:
        extra = next((i for i, (a, b) in enumerate(zip(its, want, strict=False)) if a != b), min(len(its), len(want)))
        at = its[extra] if extra < len(its) else want[extra]
        return Disagreement("metrics.jsonl", kind, f"{kind} events at {len(its)} iterations, not at every {field} = "
                            f"{every} iterations (first difference at iteration {at:,})")
    if complete and its[-1] != total:
        return Disagreement("metrics.jsonl", kind, f"the last {kind} event is at iteration {its[-1]:,}, but the "
                            f"run is complete at {total:,}")
    return None


# ---------------------------------------------------------------------------- summary vs log
_SUMMARY_EVAL = (("final_train_error", "train_error"), ("final_val_error", "val_error"),
                 ("final_test_error", "test_error"))


def _summary_problems(cfg: dict, summ: dict, events: list[dict], evals: list[dict], train: list[dict],
                      live: bool) -> list[Disagreement]:
    out: list[Disagreement] = []
    status = summ.get("status")
    total = _int(cfg.get("iterations"))
    done = _int(summ.get("iterations_done"))
    ends = [e for e in events if e.get("event") == "end"]
    last_end = ends[-1] if ends and events and events[-1] is ends[-1] else None
    pairs = list(_SUMMARY_EVAL)
    if cfg.get("dataset") == "imagenet":
        pairs = [("final_train_error", "train_error"), ("final_val_error", "val_error"),
                 ("final_val_top5_error", "val_top5_error")]

    if "iterations" in summ and summ.get("iterations") != total:
        out.append(Disagreement("summary.json", "iterations", f"{_fmt(summ.get('iterations'))}, but the config has "
                                f"{total}"))
    if "precision" in summ and cfg.get("precision") is not None and summ.get("precision") != cfg.get("precision"):
        out.append(Disagreement("summary.json", "precision", f"{_fmt(summ.get('precision'))}, but the config has "
                                f"{cfg.get('precision')!r}"))

    # which evaluation the summary must repeat
    target = evals[-1] if evals else None
    if status == "running" and evals:
        at = _int(summ.get("eval_iteration")) or done
        match = [i for i, e in enumerate(evals) if _int(e.get("iteration")) == at]
        if match and match[-1] >= len(evals) - 2:  # the loop logs the eval, saves, then writes the summary
            target = evals[match[-1]]
    if status in ("complete", "diverged") and last_end is None:
        out.append(Disagreement("metrics.jsonl", "end", f"no end event closes the log of a {status} run"))
    elif status in ("complete", "diverged") and last_end.get("status") != status:
        out.append(Disagreement("summary.json", "status", f"{status!r}, but the log ends {last_end.get('status')!r}"))

    for sk, ek in pairs:
        want = target.get(ek) if target is not None else None
        if not _same(summ.get(sk), want):
            where = (f"the last evaluation (metrics.jsonl, iteration {target.get('iteration')}) has {_fmt(want)}"
                     if target is not None else "metrics.jsonl holds no evaluation")
            out.append(Disagreement("summary.json", sk, f"{_fmt(summ.get(sk))}, but {where}"))
            break
    if "eval_iteration" in summ and not _same(summ.get("eval_iteration"),
                                               target.get("iteration") if target is not None else None):
        out.append(Disagreement("summary.json", "eval_iteration", f"{_fmt(summ.get('eval_iteration'))}, but the "
                                f"last evaluation is at {target.get('iteration') if target else 'none'}"))

    # where the run got to
    last_it = max((_int(e.get("iteration")) or 0 for e in events), default=0)
    if done is not None:
        if status == "complete" and done != total:
            out.append(Disagreement("summary.json", "iterations_done", f"{done:,} in a complete run of {total:,}"))
        elif status in ("complete", "diverged") and last_end is not None and _int(last_end.get("iteration")) != done:
            out.append(Disagreement("summary.json", "iterations_done", f"{done:,}, but the log ends at iteration "
                                    f"{last_end.get('iteration')}"))
        elif status == "running" and target is not None and done != _int(target.get("iteration")):
            out.append(Disagreement("summary.json", "iterations_done", f"{done:,}, but a running run's summary is "
                                    f"written at its last evaluation ({target.get('iteration')})"))
        elif status == "interrupted" and last_end is not None and last_end.get("status") == "interrupted" and (
                _int(last_end.get("iteration")) != done):
            out.append(Disagreement("summary.json", "iterations_done", f"{done:,}, but the run stopped at iteration "
                                    f"{last_end.get('iteration')} (metrics.jsonl)"))
        elif done > last_it + max(_int(cfg.get("log_every")) or 1, 1) and not live:
            out.append(Disagreement("summary.json", "iterations_done", f"{done:,}, but metrics.jsonl ends at "
                                    f"iteration {last_it:,}"))

    # times
    wall = _num(summ.get("wall_s"))
    if status == "complete" and last_end is not None and wall is not None and _num(last_end.get("wall_s")) is not None:
        gap = wall - float(last_end["wall_s"])
        if not -0.01 <= gap <= WALL_MARGIN_S:
            out.append(Disagreement("summary.json", "wall_s", f"{wall:,.2f} s, but the log ends at "
                                    f"{float(last_end['wall_s']):,.2f} s"))
    ips, train_s, batch = _num(summ.get("images_per_s")), _num(summ.get("train_s")), _int(cfg.get("batch_size"))
    if ips is not None and train_s and train_s > 0.005 and batch and done is not None:
        # train_s is stored rounded to 0.01 s and images_per_s to 0.1, both from the unrounded seconds
        lo, hi = done * batch / (train_s + 0.005) - 0.05, done * batch / (train_s - 0.005) + 0.05
        if not lo - 1e-9 <= ips <= hi + 1e-9:
            out.append(Disagreement("summary.json", "images_per_s", f"{ips:,.1f}, but {done:,} iterations of "
                                    f"{batch} images in train_s {train_s:,.2f} s make {done * batch / train_s:,.1f}"))
    if cfg.get("dataset") == "imagenet" and _int(summ.get("lr_drops")) is not None:
        n = sum(1 for e in events if e.get("event") == "lr_drop")
        if summ["lr_drops"] != n:
            out.append(Disagreement("summary.json", "lr_drops", f"{summ['lr_drops']}, but metrics.jsonl logs {n}"))
    return out


# ---------------------------------------------------------------------------- the check
def check_run(config: dict, summary: dict | None, events: list[dict], live: bool = False) -> list[Disagreement]:
    """Everything a run's files disagree on (empty: the run agrees with itself).

    Args:
        config: the ``config`` section of ``config.json`` (already type-checked by
            :func:`resnet_repro.runs.load_runs`).
        summary: ``summary.json`` as a dict, or None where there is none yet (a live run
            before its first evaluation).
        events: the events of ``metrics.jsonl``, in order.
        live: a process is training the run now (its files may be one write apart).

    Returns:
        One :class:`Disagreement` per field, in the order: config, log, summary.
    """
    out = _schedule_problems(config)
    if not events:
        if summary is not None:
            out.append(Disagreement("metrics.jsonl", "log", "holds no events, so summary.json cannot be checked "
                                    "against it"))
        return out
    iters = [_int(e.get("iteration")) for e in events]
    bad = next((i for i, v in enumerate(iters) if v is None or v < 0), None)
    if bad is not None:
        return out + [Disagreement("metrics.jsonl", "iteration", f"event {bad + 1} ({_fmt(events[bad].get('event'))}) "
                                   f"has iteration {_fmt(events[bad].get('iteration'))}")]
    back = next((i for i in range(1, len(iters)) if iters[i] < iters[i - 1]), None)
    if back is not None:
        out.append(Disagreement("metrics.jsonl", "iteration", f"goes back from {iters[back - 1]:,} to "
                                f"{iters[back]:,} (event {back + 1}): the log holds two runs or a resume that was "
                                "not cut back"))
    total = _int(config.get("iterations"))
    if total is not None and iters and max(iters) > total:
        out.append(Disagreement("metrics.jsonl", "iteration", f"reaches {max(iters):,}, past the config's "
                                f"{total:,} iterations"))
    if events and (events[0].get("event") != "start" or iters[0] != 0):
        out.append(Disagreement("metrics.jsonl", "start", f"the log begins with {_fmt(events[0].get('event'))} at "
                                f"iteration {iters[0]}, not the start event at 0"))
    status = (summary or {}).get("status")
    complete = status == "complete"
    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval"]
    for kind, evs, every in (("train", train, config.get("log_every")), ("eval", evals, config.get("eval_every"))):
        d = _cadence(kind, [int(e["iteration"]) for e in evs], _int(every), total, complete)
        if d is not None:
            out.append(d)
    by_it = {int(e["iteration"]): e for e in train}
    for e in evals:
        t = by_it.get(int(e["iteration"]))
        if t is not None and not _same(t.get("train_error"), e.get("train_error")):
            out.append(Disagreement("metrics.jsonl", "train_error", f"the eval event at iteration {e['iteration']:,} "
                                    f"says {_fmt(e.get('train_error'))}, its train event {_fmt(t.get('train_error'))}"))
            break
    out += _expected_lrs(config, train, events, complete)
    if summary is not None:
        out += _summary_problems(config, summary, events, evals, train, live)
    return out


def check_files(run_dir: Path | str) -> list[Disagreement]:
    """:func:`check_run` on a run directory's files, plus the damage that keeps a run out
    of tables before any comparison: a missing or unreadable ``config.json`` or
    ``summary.json`` (a missing summary is fine while a process trains the run), a
    summary field that is no usable number, a corrupt line of ``metrics.jsonl``."""
    from resnet_repro import runs

    d = Path(run_dir)
    cfg_obj = runs.read_json(d / "config.json")
    if cfg_obj is None:
        what = "missing" if not (d / "config.json").exists() else "unreadable (not a JSON object)"
        return [Disagreement("config.json", "config", what)]
    cfg = cfg_obj.get("config")
    why = "has no 'config' object" if not isinstance(cfg, dict) else runs.config_problem(cfg)
    if why:
        return [Disagreement("config.json", "config", why)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = runs.read_metrics(d)
    out = [Disagreement("metrics.jsonl", "line", str(w.message).split(": ", 1)[-1]) for w in caught[:1]]
    live = runs.run_in_progress(d)
    summ: dict | None = None
    if not (d / "summary.json").exists():
        if not live:
            out.append(Disagreement("summary.json", "summary", "missing (and no process trains the run)"))
    else:
        summ = runs.read_json(d / "summary.json")
        if summ is None:
            out.append(Disagreement("summary.json", "summary", "unreadable (not a JSON object)"))
        else:
            why = runs.summary_problem(summ)
            if why:
                out.append(Disagreement("summary.json", why.split(" ", 1)[0], why))
    missing = log_missing(d)
    return out + ([missing] if missing else check_run(cfg, summ, events, live)) + eval_file_problems(d)


def eval_file_problems(run_dir: Path) -> list[Disagreement]:
    """What is wrong with a run's ``eval-<protocol>.json`` files (Tables 2-4 read them):
    ``top1_error`` and ``top5_error`` must be percentages with top-5 no higher than top-1
    (a top-5 miss is a top-1 miss); a CIFAR-10 or CIFAR-100 record (``eval-cifar10.json``,
    ``eval-cifar100.json``) has one ``test_error``, a percentage; ``images`` (where present) a positive count. An
    unreadable file is warned about by the tables themselves."""
    from resnet_repro import runs

    out = []
    for f in sorted(Path(run_dir).glob("eval-*.json")):
        obj = runs.read_json(f)
        if obj is None:
            continue
        if obj.get("dataset") in ("cifar10", "cifar100"):  # a CIFAR record (evaluate --dataset ...): one test error
            te = _num(obj.get("test_error"))
            if te is None or not 0 <= te <= 100:
                out.append(Disagreement(f.name, "test_error", f"test error {_fmt(obj.get('test_error'))}: an error "
                                        "is a percentage, 0 to 100"))
        else:
            t1, t5 = _num(obj.get("top1_error")), _num(obj.get("top5_error"))
            if t1 is None or not 0 <= t1 <= 100 or (t5 is not None and not 0 <= t5 <= t1):
                out.append(Disagreement(f.name, "top5_error" if t1 is not None and 0 <= t1 <= 100 else "top1_error",
                                        f"top-1 error {_fmt(obj.get('top1_error'))}, top-5 error "
                                        f"{_fmt(obj.get('top5_error'))}: errors are percentages and top-5 <= top-1"))
        n = obj.get("images")
        if "images" in obj and (_int(n) is None or n < 1):
            out.append(Disagreement(f.name, "images", f"{_fmt(n)} is not a count of evaluated images"))
    return out


def log_missing(run_dir: Path) -> Disagreement | None:
    """The disagreement of a run without ``metrics.jsonl`` (nothing to check its summary
    against), or None."""
    if (Path(run_dir) / "metrics.jsonl").exists():
        return None
    return Disagreement("metrics.jsonl", "log", "missing, so summary.json cannot be checked against it")


@dataclass
class RunReport:
    """The check of one run directory: ``problems`` (empty: it agrees with itself) and
    ``state``, e.g. ``"complete, 4,000 of 4,000 iterations, 16 evaluations"``."""

    run_dir: Path
    problems: list[Disagreement]
    state: str


def check_dirs(roots: list[Path] | Path) -> list[RunReport]:
    """:func:`check_files` for every run directory under ``roots`` (searched
    recursively, as tables do), and a report for each directory that holds run files but
    no ``config.json``. Sorted by directory."""
    from resnet_repro import runs

    out = [RunReport(d, [Disagreement("config.json", "config", "missing (the directory holds other run files)")],
                     "unknown") for d in runs.orphan_runs(roots)]
    for d in runs.find_runs(roots):
        summ = runs.read_json(d / "summary.json") or {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n_eval = sum(1 for e in runs.read_metrics(d) if e.get("event") == "eval")
        cfg = ((runs.read_json(d / "config.json") or {}).get("config") or {})
        status = summ.get("status") if isinstance(summ.get("status"), str) else "no summary"
        if status == "running" and not runs.run_in_progress(d):
            status = "running (no process: copied or killed)"
        elif status == "running":
            status = "running (in progress)"
        done, total = _int(summ.get("iterations_done")), _int(cfg.get("iterations") if isinstance(cfg, dict) else None)
        its = f"{done:,} of {total:,} iterations" if done is not None and total is not None else "iterations unknown"
        out.append(RunReport(d, check_files(d), f"{status}, {its}, {n_eval} evaluation{'s' if n_eval != 1 else ''}"))
    return sorted(out, key=lambda r: str(r.run_dir))
