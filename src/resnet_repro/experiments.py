"""Experiment specs (``experiments/*.toml``) and running them.

One spec per paper experiment names its runs (architectures, shortcut options, seeds),
the schedule of each profile (``paper``, ``quick``, ``smoke``), the data set and the
tables and figures it feeds. Data flows one way::

    experiments/NAME.toml -> ExperimentSpec -> RunConfig (one per run) -> train.fit
        -> run directory (OUT/<dataset>/<run name>/)

:func:`plan` expands a spec into runs and finds the state of each run directory
(``missing``, ``complete``, ``interrupted``, ``conflict`` ...); :func:`execute_local`
runs the unfinished ones, up to N at once in separate processes (each with
``threads = cores // N``), resuming interrupted ones; :func:`execute_submitit` submits the
same runs through submitit (Slurm). A complete run is never trained again, and a run
directory holding a different recipe than the spec asks for is reported, not touched.

Spec format (see ``experiments/cifar10-depth.toml``)::

    name = "cifar10-depth"          # = the file name
    title = "..."
    paper = "Sec. 4.2; Fig. 1; ..."  # where in the paper
    dataset = "cifar10"             # or "imagenet"
    data = ["../shared/data/cifar10-jpeg.tar.gz", "data/cifar10"]  # first that exists
    tables = ["6"]                  # tables it feeds ("1".."8", "cifar-shortcuts")
    figures = [1, 6]
    [[runs]]                        # one or more groups
    arch = ["plain20", "resnet20"]
    shortcut = ["A"]                # optional; default the paper's (A for CIFAR)
    seeds = [0]
    [profiles.quick]                # paper, quick and smoke are required
    schedule = "quick"              # or iterations = N
    only = ["resnet20"]             # optional subset (arch or arch-shortcut)
    seeds = [0]                     # optional: replaces every group's seeds
    seeds_for = {resnet110 = [0]}   # optional: replaces the seeds of the runs named
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resnet_repro.errors import UserError

PROFILES = ("paper", "quick", "smoke")
TABLE_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "cifar-shortcuts")
FIGURE_NUMBERS = (1, 4, 6, 7)
# RunConfig fields that say how a run was executed, not what was trained: a stored run
# that differs from its spec only in these still counts as that spec's run.
EXECUTION_FIELDS = frozenset({
    "data_dir", "data_checksum", "threads", "tensorboard", "precision", "device", "channels_last", "compile",
    "checkpoint_activations", "workers", "grad_norms_every",
})
EventFn = Callable[[str, dict], None]


# ---------------------------------------------------------------------------- spec model
class RunGroup(BaseModel):
    """A group of runs: every architecture x shortcut option x seed."""

    model_config = ConfigDict(extra="forbid")

    arch: list[str] = Field(min_length=1)
    shortcut: list[str | None] = Field(default_factory=lambda: [None])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    stride_on: Literal["1x1", "3x3"] | None = None

    @field_validator("arch", "shortcut", "seeds", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: list[str]) -> list[str]:
        from resnet_repro.models.registry import spec

        out = []
        for a in v:
            try:
                out.append(spec(a).name)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return out

    @field_validator("shortcut")
    @classmethod
    def _known_shortcut(cls, v: list[str | None]) -> list[str | None]:
        for s in v:
            if s is not None and s not in ("A", "B", "C"):
                raise ValueError(f"unknown shortcut option {s!r}; use \"A\", \"B\" or \"C\"")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_ok(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct non-negative integers, got {v}")
        return v


class Profile(BaseModel):
    """How long each run of a spec trains under one profile (``paper``/``quick``/``smoke``)."""

    model_config = ConfigDict(extra="forbid")

    schedule: str | None = None
    iterations: int | None = Field(None, ge=4)
    only: list[str] | None = None
    seeds: list[int] | None = None
    seeds_for: dict[str, list[int]] = Field(default_factory=dict)
    note: str = ""

    @field_validator("seeds_for")
    @classmethod
    def _seeds_for_ok(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, seeds in v.items():
            if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
                raise ValueError(f"seeds_for.{name} must be a non-empty list of distinct non-negative integers, "
                                 f"got {seeds}")
        return v

    @model_validator(mode="after")
    def _one_length(self) -> Profile:
        if (self.schedule is None) == (self.iterations is None):
            raise ValueError('give exactly one of schedule = "paper"|"quick"|"smoke" or iterations = N')
        return self


class ExperimentSpec(BaseModel):
    """One paper experiment (see the module docstring for the TOML format)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    paper: str
    dataset: Literal["cifar10", "imagenet"]
    data: list[str] = Field(default_factory=list)
    train_on: Literal["split", "all"] = "split"
    tables: list[str] = Field(default_factory=list)
    figures: list[int] = Field(default_factory=list)
    runs: list[RunGroup] = Field(min_length=1)
    profiles: dict[str, Profile]

    @field_validator("tables", mode="before")
    @classmethod
    def _tables_str(cls, v: Any) -> Any:
        return [str(t) for t in v] if isinstance(v, list) else v

    @field_validator("tables")
    @classmethod
    def _tables_known(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in TABLE_KEYS:
                raise ValueError(f"unknown table {t!r}; use {', '.join(TABLE_KEYS)}")
        return v

    @field_validator("figures")
    @classmethod
    def _figures_known(cls, v: list[int]) -> list[int]:
        for f in v:
            if f not in FIGURE_NUMBERS:
                raise ValueError(f"unknown figure {f}; the reproducible figures are {', '.join(map(str, FIGURE_NUMBERS))}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        from resnet_repro.models.registry import spec
        from resnet_repro.train.schedule import SCHEDULES

        missing = [p for p in PROFILES if p not in self.profiles]
        if missing:
            raise ValueError(f"missing profile(s) {', '.join(missing)}; add [profiles.{missing[0]}] with a schedule")
        family = "cifar" if self.dataset == "cifar10" else "imagenet"
        for g in self.runs:
            for a in g.arch:
                if spec(a).family != family:
                    raise ValueError(f"{a} is not a {self.dataset} net; use "
                                     + ("6n+2 depths such as resnet20" if family == "cifar" else "depths 18, 34, 50, 101, 152"))
        labels = {lab for g in self.runs for a in g.arch for lab in (a, *(f"{a}-{s}" for s in g.shortcut if s))}
        for pname, p in self.profiles.items():
            if self.dataset == "cifar10" and p.schedule is not None and p.schedule not in SCHEDULES:
                raise ValueError(f"profiles.{pname}.schedule {p.schedule!r} is not a CIFAR-10 schedule; "
                                 f"use {', '.join(SCHEDULES)} or iterations = N")
            for o in [*(p.only or []), *p.seeds_for]:
                if o not in labels:
                    key = "only" if o in (p.only or []) else "seeds_for"
                    raise ValueError(f"profiles.{pname}.{key} names {o!r}, which is not among the runs; "
                                     f"use one of {', '.join(sorted(labels))}")
        return self

    def profile(self, name: str) -> Profile:
        """The profile ``name``.

        Raises:
            UserError: if the spec has no such profile.
        """
        if name not in self.profiles:
            raise UserError(f"experiment {self.name} has no profile {name!r}; choose one of {', '.join(self.profiles)}")
        return self.profiles[name]

    def expand(self, profile: str, seeds: list[int] | None = None) -> list[tuple[str, str | None, int, str | None]]:
        """``[(arch, shortcut, seed, stride_on), ...]`` of the runs of ``profile`` (its
        ``only`` subset applied; seeds from, in this order of precedence, the ``seeds``
        argument, the profile's ``seeds_for`` entry for the arch or arch-shortcut, the
        profile's ``seeds``, the group's seeds), shortcut resolved
        to the paper's default where the spec gives none (None for plain nets), without
        duplicates, in spec order.

        Raises:
            UserError: if the spec has no such profile.
        """
        from resnet_repro.models.registry import resolve_shortcut, spec

        prof = self.profile(profile)
        out: list[tuple[str, str | None, int, str | None]] = []
        for g in self.runs:
            for arch in g.arch:
                for sc in g.shortcut:
                    short = resolve_shortcut(spec(arch), sc)
                    if prof.only is not None and arch not in prof.only and f"{arch}-{short}" not in prof.only:
                        continue
                    chosen = seeds
                    if chosen is None:
                        chosen = prof.seeds_for.get(f"{arch}-{short}", prof.seeds_for.get(arch))
                    if chosen is None:
                        chosen = prof.seeds if prof.seeds is not None else g.seeds
                    for seed in chosen:
                        item = (arch, short, seed, g.stride_on)
                        if item not in out:
                            out.append(item)
        return out

    def run_keys(self) -> set[tuple[str, str | None]]:
        """``{(arch, shortcut)}`` of every run, with the paper's default shortcut filled in
        (None for plain nets)."""
        from resnet_repro.models.registry import resolve_shortcut, spec

        return {(a, resolve_shortcut(spec(a), s)) for g in self.runs for a in g.arch for s in g.shortcut}


# ---------------------------------------------------------------------------- loading
def project_root() -> Path:
    """The folder holding ``experiments/``: the current directory if it has one, else the
    source checkout this package lives in."""
    cwd = Path.cwd()
    if (cwd / "experiments").is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]


def experiments_dir() -> Path:
    """``<project root>/experiments``."""
    return project_root() / "experiments"


def list_specs(directory: Path | None = None) -> list[str]:
    """Names of the experiment specs in ``directory`` (default :func:`experiments_dir`)."""
    d = Path(directory) if directory is not None else experiments_dir()
    return sorted(p.stem for p in d.glob("*.toml"))


def _fix_for(err: dict, model: type[BaseModel] | None) -> str:
    kind = err["type"]
    key = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "extra_forbidden":
        allowed = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}remove it or use one of {', '.join(allowed)}"
    if kind == "missing":
        return f"missing; add `{key} = ...`"
    if kind == "literal_error":
        return f"{err['msg'].lower()}"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    return f"{err['msg'].lower()} (got {err.get('input')!r})"


def _model_at(loc: tuple) -> type[BaseModel]:
    """The pydantic model that owns the last key of ``loc`` (for 'did you mean')."""
    if len(loc) >= 3 and loc[0] == "runs":
        return RunGroup
    if len(loc) >= 3 and loc[0] == "profiles":
        return Profile
    return ExperimentSpec


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_spec(text: str, source: str = "<string>") -> ExperimentSpec:
    """Parse and validate a spec from TOML text.

    Raises:
        UserError: invalid TOML or an invalid spec; the message names ``source``, the
            key (e.g. ``runs[0].arch``) and the fix.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML ({exc}); fix the syntax") from None
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: {_loc_text(loc)}: {_fix_for(err, _model_at(loc))}{more}") from None
    return spec


def load_spec(name_or_path: str | os.PathLike) -> ExperimentSpec:
    """Load the spec ``experiments/NAME.toml`` (or a path to a ``.toml`` file).

    Raises:
        UserError: unknown name (the message lists the specs), unreadable or invalid
            file, or a ``name`` that differs from the file name.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = experiments_dir() / f"{name_or_path}.toml"
        if not p.is_file():
            names = list_specs()
            close = difflib.get_close_matches(str(name_or_path), names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"no experiment {str(name_or_path)!r} in {experiments_dir()}; {hint}"
                            f"choose one of {', '.join(names) or '(none found)'}")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {p} ({exc.strerror}); give an existing experiments/*.toml") from None
    spec = parse_spec(text, str(p))
    if spec.name != p.stem:
        raise UserError(f"{p}: name: {spec.name!r} differs from the file name; set name = {p.stem!r}")
    return spec


def load_all_specs(directory: Path | None = None) -> list[ExperimentSpec]:
    """Every spec in ``directory`` (default :func:`experiments_dir`); invalid ones raise."""
    d = Path(directory) if directory is not None else experiments_dir()
    return [load_spec(d / f"{n}.toml") for n in list_specs(d)]


def spec_for(dataset: str, arch: str, shortcut: str | None, specs: list[ExperimentSpec] | None = None) -> str | None:
    """The name of the spec that trains ``arch`` with ``shortcut`` on ``dataset`` (the one
    with the most runs where several do, e.g. cifar10-depth for ResNet-110), or None."""
    cands = specs if specs is not None else _cached_specs()
    for s in sorted(cands, key=lambda s: (-len(s.expand("paper")), s.name)):
        if s.dataset == dataset and (arch, shortcut) in s.run_keys():
            return s.name
    return None


_SPEC_CACHE: dict[str, list[ExperimentSpec]] = {}


def _cached_specs() -> list[ExperimentSpec]:
    key = str(experiments_dir())
    if key not in _SPEC_CACHE:
        try:
            _SPEC_CACHE[key] = load_all_specs()
        except UserError:
            _SPEC_CACHE[key] = []
    return _SPEC_CACHE[key]


# ---------------------------------------------------------------------------- planning
@dataclass
class PlannedRun:
    """One run of an experiment.

    Attributes:
        label: the run directory name, e.g. ``resnet20-A-quick-s0``.
        config: the validated RunConfig to train (for an unfinished run: the stored one,
            so that the resume is exact).
        run_dir: ``OUT/<dataset>/<label>``.
        status: ``missing``, ``complete``, ``interrupted``, ``running``, ``diverged`` or
            ``conflict`` (the directory holds another recipe).
        note: why, for ``conflict`` and ``diverged``, and a damaged ``summary.json``.
    """

    label: str
    arch: str
    shortcut: str | None
    seed: int
    config: Any
    run_dir: Path
    status: str = "missing"
    note: str = ""

    @property
    def todo(self) -> bool:
        """True if running it would train (missing or unfinished)."""
        return self.status in ("missing", "interrupted", "running")


def recipe(config: dict) -> dict:
    """The fields of a RunConfig dict that determine what is trained (all but
    :data:`EXECUTION_FIELDS`)."""
    return {k: v for k, v in config.items() if k not in EXECUTION_FIELDS}


def recipe_diff(stored: dict, expected: dict) -> list[str]:
    """``["lr: 0.05 there vs 0.1 in the spec", ...]`` for every recipe field that differs
    (compared as JSON: a tuple equals the list it is stored as)."""
    a, b = (json.loads(json.dumps(recipe(d), default=str)) for d in (stored, expected))
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} there vs {b.get(k)!r} in the spec" for k in keys if a.get(k) != b.get(k)]


def resolve_data_dir(spec: ExperimentSpec, data_dir: str | None, download: bool = False) -> str:
    """The data location for ``spec``: ``data_dir`` if given, else ``$RESNET_REPRO_DATA``,
    else the first of the spec's ``data`` entries that exists (relative to the project
    root, written relative to the current directory).

    Raises:
        UserError: if none exists (ImageNet: a clear note that it needs ``--data-dir``).
    """
    if data_dir:
        return str(data_dir)
    if os.environ.get("RESNET_REPRO_DATA") and spec.dataset == "cifar10":
        return os.environ["RESNET_REPRO_DATA"]
    root = project_root()
    cands = [os.path.normpath(root / d) for d in spec.data]
    for c in cands:
        if os.path.exists(c):
            return os.path.relpath(c)
    if spec.dataset == "imagenet":
        raise UserError("ImageNet training needs --data-dir with an ImageNet folder (train/ and val/ with one "
                        "subfolder per class); none found at " + ", ".join(spec.data))
    if download and cands:
        return os.path.relpath(cands[-1])
    raise UserError(f"no CIFAR-10 copy found at {', '.join(spec.data)}; give --data-dir PATH or add --download")


def _expected_config(spec: ExperimentSpec, prof: Profile, arch: str, shortcut: str | None, seed: int,
                     stride_on: str | None, data_dir: str, iterations: int | None, **execution: Any):
    """The RunConfig the spec asks for."""
    from resnet_repro.train.config import make_config

    its = iterations if iterations is not None else prof.iterations
    if spec.dataset == "imagenet":
        return make_config(arch, data_dir, shortcut=shortcut, schedule=None if its else prof.schedule,
                           iterations=its, seed=seed, stride_on=stride_on, dataset="imagenet", **execution)
    return make_config(arch, data_dir, shortcut=shortcut, schedule=prof.schedule or "custom", iterations=its,
                       seed=seed, train_on=spec.train_on, stride_on=stride_on, **execution)


def plan(
    spec: ExperimentSpec,
    profile: str = "quick",
    out: Path = Path("results"),
    seeds: list[int] | None = None,
    data_dir: str | None = None,
    iterations: int | None = None,
    jobs: int = 1,
    threads: int | None = None,
    precision: str = "auto",
    device: str = "auto",
    tensorboard: bool = False,
    download: bool = False,
    grad_norms_every: int | None = None,
) -> list[PlannedRun]:
    """Expand ``spec`` under ``profile`` into runs and find each run directory's state.

    Args:
        profile: ``paper``, ``quick`` or ``smoke`` (or another profile of the spec).
        out: parent of ``<dataset>/<run name>/`` (default ``results/``).
        seeds: replace every group's seeds.
        iterations: replace the profile's length (a ``custom`` schedule; tests).
        jobs: runs at once; each run gets ``threads = cores // jobs`` unless ``threads``.
        grad_norms_every: the cadence of the CIFAR-10 runs' ``grad_norms`` events (None:
            the schedule's default, see :func:`resnet_repro.train.config.make_config`); an
            unfinished run resumes with its own.

    Raises:
        UserError: unknown profile, missing data, an invalid choice (device, precision,
            --jobs or --threads below 1).
    """
    prof = spec.profile(profile)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_run = threads or max(1, cores // jobs)
    ddir = resolve_data_dir(spec, data_dir, download)
    from resnet_repro.train.config import RunConfig

    planned: dict[str, PlannedRun] = {}
    for arch, short, seed, stride_on in spec.expand(profile, seeds):
        execution = dict(precision=precision, device=device, threads=per_run, tensorboard=tensorboard,
                         grad_norms_every=grad_norms_every)
        cfg = _expected_config(spec, prof, arch, short, seed, stride_on, ddir, iterations, **execution)
        label = cfg.run_name
        if label in planned:
            continue
        p = PlannedRun(label, arch, short, seed, cfg, Path(out) / spec.dataset / label)
        _inspect(p, RunConfig, threads)
        planned[label] = p
    return list(planned.values())


def _inspect(p: PlannedRun, config_cls: type, threads: int | None = None) -> None:
    """Set ``p.status`` (and ``p.config`` to the stored config for unfinished runs).

    An unfinished CPU run resumes with the thread count it trained with (the count
    changes a CPU run's numbers), whatever ``--jobs`` gives now; an explicit ``threads``
    (``--threads``) that differs from it makes the run a conflict. A damaged
    ``summary.json`` (not a JSON object, or no known status) is named in ``p.note``: the
    run resumes where it has checkpoints and is a ``conflict`` where it has none
    (resuming would train it again from zero over its logs).
    """
    from resnet_repro.runs import STATUSES, read_json

    stored = read_json(p.run_dir / "config.json")
    if stored is None:
        if (p.run_dir / "config.json").exists():
            p.status, p.note = "conflict", f"{p.run_dir}/config.json is unreadable; move that directory away"
        return
    if not isinstance(stored.get("config"), dict):
        p.status, p.note = "conflict", f"{p.run_dir}/config.json holds no config object; move that directory away"
        return
    diff = recipe_diff(stored["config"], p.config.model_dump())
    if diff:
        p.status = "conflict"
        p.note = (f"{p.run_dir} holds a different recipe ({'; '.join(diff[:3])}); move it away or choose "
                  f"another --out")
        return
    summary_path = p.run_dir / "summary.json"
    summary = read_json(summary_path)
    if summary_path.exists() and (summary is None or summary.get("status") not in STATUSES):
        from resnet_repro.train.checkpoint import has_checkpoints

        what = "not a JSON object" if summary is None else f"status {summary.get('status')!r:.40}"
        if not has_checkpoints(p.run_dir / "checkpoints"):  # resuming would train it again from zero
            p.status = "conflict"
            p.note = (f"{summary_path} is damaged ({what}) and the run has no checkpoints; restore that file "
                      "(e.g. from git) or move the directory away")
            return
        if (p.run_dir / "checkpoints" / "final.pt").is_file():  # it finished: resuming would retrain its tail
            p.status = "conflict"
            p.note = (f"{summary_path} is damaged ({what}) but the run finished (checkpoints/final.pt); restore "
                      "that file (e.g. from git) or move the directory away")
            return
        p.note = f"{summary_path} is damaged ({what}); resuming from the checkpoints rewrites it"
        summary = {}
    summary = summary or {}
    status = summary.get("status", "interrupted")
    if status == "complete":
        p.status = "complete"
        return
    if status == "diverged":
        p.status, p.note = "diverged", f"{summary.get('message', 'diverged')}; delete {p.run_dir} to train it again"
        return
    from resnet_repro.runs import run_in_progress

    p.status = "running" if run_in_progress(p.run_dir) else "interrupted"
    try:
        old = config_cls.model_validate(stored["config"])
    except (ValidationError, KeyError, TypeError):
        p.status, p.note = "conflict", f"{p.run_dir} holds an invalid config; move that directory away"
        return
    # Resume exactly as it started; only the execution fields that may change between a
    # run and its resume (data location, TensorBoard; threads on a GPU) come from now.
    update = {k: getattr(p.config, k) for k in ("data_dir", "threads", "tensorboard")}
    from resnet_repro.runs import recorded_threads
    from resnet_repro.train.checkpoint import has_checkpoints

    # only a run that will resume from its checkpoints depends on its old count (one
    # without them starts again from zero; one training now is not touched)
    resumable = p.status == "interrupted" and has_checkpoints(p.run_dir / "checkpoints")
    had = recorded_threads(p.run_dir, stored["config"]) if resumable and str(old.device) == "cpu" else None
    if had is not None:
        if threads is not None and threads != had:
            p.status = "conflict"
            p.note = (f"{p.run_dir} was trained with {had} CPU thread{'' if had == 1 else 's'}, which its results "
                      f"depend on; resume it "
                      f"with --threads {had} or without --threads")
            return
        update["threads"] = had
    p.config = old.model_copy(update=update)


# ---------------------------------------------------------------------------- running
@dataclass
class RunOutcome:
    """What became of one planned run: ``status`` is the run's summary status
    (``complete``, ``interrupted``, ``diverged``), ``skipped`` (already complete),
    ``failed`` (a UserError, in ``message``) or ``cancelled`` (never started)."""

    label: str
    run_dir: Path
    status: str
    message: str = ""
    summary: dict = field(default_factory=dict)


def _train_one(config: dict, run_dir: str, on_event: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) one run; a UserError becomes ``{"status": "failed", ...}``."""
    from resnet_repro.train.config import RunConfig
    from resnet_repro.train.loop import fit

    cfg = RunConfig.model_validate(config)
    try:
        if cfg.dataset == "imagenet":  # paper Sec. 3.4: the ImageNet training path
            from resnet_repro.train.imagenet_loop import fit_imagenet

            return fit_imagenet(cfg, run_dir, resume=True, on_event=on_event)
        return fit(cfg, run_dir, resume=True, on_event=on_event)
    except UserError as exc:
        return {"status": "failed", "message": str(exc)}


_QUEUE = None
_STOP = None


def _init_worker(queue, stop) -> None:
    """Pool-process initializer: keep the event queue and stop flag; ignore Ctrl-C outside
    training (``fit`` installs its own handler, which checkpoints and stops cleanly)."""
    global _QUEUE, _STOP
    _QUEUE, _STOP = queue, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(config: dict, run_dir: str, label: str) -> dict:
    """Run one training in a pool process, forwarding its events (step events at most
    5 per second) to the parent, and stopping cleanly when the parent asks."""
    last = [0.0]
    asked = [False]

    def forward(ev: dict) -> None:
        if _STOP is not None and _STOP.is_set() and not asked[0]:
            asked[0] = True
            os.kill(os.getpid(), signal.SIGTERM)  # fit checkpoints and returns "interrupted"
        if ev.get("event") == "step":
            now = time.monotonic()
            if now - last[0] < 0.2:
                return
            last[0] = now
        if _QUEUE is not None:
            _QUEUE.put((label, ev))

    return _train_one(config, run_dir, forward)


def _skipped(plans: list[PlannedRun]) -> list[RunOutcome]:
    out = []
    for p in plans:
        if p.status == "complete":
            out.append(RunOutcome(p.label, p.run_dir, "skipped", "already complete"))
        elif not p.todo:
            out.append(RunOutcome(p.label, p.run_dir, "failed" if p.status == "conflict" else p.status, p.note))
    return out


def _outcome(p: PlannedRun, s: dict) -> RunOutcome:
    return RunOutcome(p.label, p.run_dir, s.get("status", "failed"), s.get("message", ""), s)


def execute_local(plans: list[PlannedRun], jobs: int = 1, on_event: EventFn | None = None) -> list[RunOutcome]:
    """Train the unfinished runs of ``plans``; up to ``jobs`` at once.

    ``jobs == 1`` trains in this process, one run after the other; ``jobs > 1`` starts a
    fresh process per run (spawned; each uses its config's ``threads``). Complete runs
    are skipped, interrupted ones resumed exactly. Ctrl-C (or SIGTERM) checkpoints the
    running runs, marks them ``interrupted`` and starts no more; run the same command
    again to continue.

    Returns:
        One :class:`RunOutcome` per plan, in plan order.
    """
    emit = on_event or (lambda label, ev: None)
    results = {o.label: o for o in _skipped(plans)}
    todo = [p for p in plans if p.todo]
    if jobs <= 1 or len(todo) <= 1:
        stopped = False
        for p in todo:
            if stopped:
                results[p.label] = RunOutcome(p.label, p.run_dir, "cancelled", "not started: stopped")
                continue
            s = _train_one(p.config.model_dump(), str(p.run_dir), lambda ev, lab=p.label: emit(lab, ev))
            results[p.label] = _outcome(p, s)
            emit(p.label, {"event": "finished", "status": s.get("status"), "message": s.get("message", "")})
            stopped = s.get("status") == "interrupted"
    else:
        _run_pool(todo, jobs, emit, results)
    return [results[p.label] for p in plans]


def _run_pool(todo: list[PlannedRun], jobs: int, emit: EventFn, results: dict) -> None:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()

    def drain(timeout: float) -> None:
        try:
            label, ev = q.get(timeout=timeout)
        except queue_mod.Empty:
            return
        emit(label, ev)
        while True:
            try:
                label, ev = q.get_nowait()
            except queue_mod.Empty:
                return
            emit(label, ev)

    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(q, stop),
                             max_tasks_per_child=1) as ex:
        futs = {ex.submit(_worker, p.config.model_dump(), str(p.run_dir), p.label): p for p in todo}
        pending = set(futs)
        while pending:
            try:
                drain(0.2)
            except KeyboardInterrupt:
                stop.set()
                for f in pending:
                    f.cancel()
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                p = futs[f]
                if f.cancelled():
                    results[p.label] = RunOutcome(p.label, p.run_dir, "cancelled", "not started: stopped")
                    continue
                try:
                    s = f.result()
                except Exception as exc:  # a crashed worker process
                    s = {"status": "failed", "message": f"the training process failed: {exc!r}"}
                results[p.label] = _outcome(p, s)
                emit(p.label, {"event": "finished", "status": s.get("status"), "message": s.get("message", "")})
                if s.get("status") == "interrupted":
                    stop.set()
                    for g in pending:
                        g.cancel()
        drain(0.0)


def _run_job(config: dict, run_dir: str) -> dict:
    """The function a submitit job runs (module level, so it pickles by reference)."""
    return _train_one(config, run_dir)


def execute_submitit(plans: list[PlannedRun], executor: Any, on_event: EventFn | None = None,
                     poll_s: float = 2.0) -> list[RunOutcome]:
    """Submit the unfinished runs of ``plans`` as one job each through a submitit
    ``executor`` (``submitit.AutoExecutor`` for Slurm; ``submitit.LocalExecutor`` in
    tests) and wait for them, reporting progress from the run directories (their
    ``summary.json`` is rewritten at every evaluation). The run directories are the
    same files :func:`execute_local` writes.

    Returns:
        One :class:`RunOutcome` per plan, in plan order.
    """
    from resnet_repro.runs import read_json

    emit = on_event or (lambda label, ev: None)
    results = {o.label: o for o in _skipped(plans)}
    jobs = {}
    for p in plans:
        if p.todo:
            jobs[p.label] = (p, executor.submit(_run_job, p.config.model_dump(), str(p.run_dir)))
    seen: dict[str, int] = {}
    while jobs:
        for label, (p, job) in list(jobs.items()):
            done = (read_json(p.run_dir / "summary.json") or {}).get("iterations_done")
            if done is not None and done != seen.get(label):
                seen[label] = done
                emit(label, {"event": "step", "iteration": done})
            if job.done():
                try:
                    s = job.result()
                except Exception as exc:  # the job failed on the cluster
                    s = {"status": "failed", "message": f"job {job.job_id} failed: {str(exc).splitlines()[0]}"}
                results[label] = _outcome(p, s)
                emit(label, {"event": "finished", "status": s.get("status"), "message": s.get("message", "")})
                del jobs[label]
        if jobs:
            time.sleep(poll_s)
    return [results[p.label] for p in plans]


def make_submitit_executor(folder: Path, threads: int, timeout_min: int = 24 * 60, partition: str | None = None,
                           gpus: int = 0) -> Any:
    """A ``submitit.AutoExecutor`` (Slurm where available, else local processes).

    Raises:
        UserError: if submitit is not installed.
    """
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit; install it with pip install -e '.[slurm]'") from None
    ex = submitit.AutoExecutor(folder=str(folder))
    params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": threads, "nodes": 1, "tasks_per_node": 1}
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["slurm_partition"] = partition
    ex.update_parameters(**params)
    return ex


# ---------------------------------------------------------------------------- stored runs vs specs
def spec_mismatches(rows: list[dict], specs: list[ExperimentSpec] | None = None) -> dict[str, str]:
    """Stored runs whose recipe differs from the spec that names them.

    A run belongs to a spec when the spec trains its ``(arch, shortcut)`` on its data set
    and one of the spec's profiles uses the run's schedule. A run of another length (a
    ``custom`` schedule, ``--iterations N``) is held to the same rule at its own length:
    it must match the spec in everything but the length (data, split, lr, batch, ...), so
    that no table shows a ``custom`` row whose protocol its caption denies.

    Args:
        rows: one dict per run with the RunConfig fields and ``run_dir`` (rows of
            :func:`resnet_repro.runs.load_runs`).

    Returns:
        ``{run_dir: "differs from cifar10-depth (profile quick): lr: 0.05 there vs 0.1 in the spec"}``.
    """
    from resnet_repro.train.config import RunConfig

    specs = specs if specs is not None else _cached_specs()
    out: dict[str, str] = {}
    fields = set(RunConfig.model_fields)
    for row in rows:
        if row.get("dataset") != "cifar10" or row.get("schedule") is None:
            continue
        custom = row.get("schedule") == "custom"
        its = _plain(row.get("iterations")) if custom else None
        if custom and not isinstance(its, int):
            continue
        stored = {k: _plain(row.get(k)) for k in fields if k in row}
        for s in specs:
            if s.dataset != "cifar10" or (row.get("arch"), row.get("shortcut")) not in s.run_keys():
                continue
            for pname, prof in s.profiles.items():
                if prof.schedule != row.get("schedule") and not custom:
                    continue
                stride = next((g.stride_on for g in s.runs if row.get("arch") in g.arch), None)
                try:
                    exp = _expected_config(s, prof, row["arch"], row.get("shortcut"), int(row.get("seed") or 0),
                                           stride, "-", its, precision="fp32", device="cpu")
                except UserError:
                    continue
                diff = recipe_diff(stored, exp.model_dump())
                if diff:
                    out[str(row["run_dir"])] = f"differs from {s.name} (profile {pname}): {'; '.join(diff[:3])}"
                break
            if str(row["run_dir"]) in out:
                break
    return out


def _plain(v: Any) -> Any:
    """pandas/numpy scalars and NaN back to plain Python values."""
    try:
        import math

        if isinstance(v, float) and math.isnan(v):
            return None
    except TypeError:
        pass
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
