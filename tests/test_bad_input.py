"""Bad input, systematically (property-based, with hypothesis): command lines, run
directories with missing, empty, truncated, mistyped or binary-garbage files, damaged
checkpoint bytes, and experiment specs. Every case must end either in a correct result or
in exit code 2 with a one-line ``error:`` message; never a traceback, a hang, or a
changed file that should not change.

The CLI runs in process through :func:`resnet_repro.cli.main` (the console-script entry
point; it exits through ``SystemExit``). Training inside the command-line fuzz is
replaced by a stand-in that only checks what it is given; the run-directory fuzz trains
for real (8 iterations of resnet8 on the tiny image set). The default run tries a small
number of cases per test (CI); ``make test-slow`` tries ten times as many.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_repro import experiments, runs
from resnet_repro.cli import app, main
from resnet_repro.errors import UserError
from resnet_repro.train import checkpoint
from resnet_repro.train.config import RunConfig, load_config, make_config
from resnet_repro.train.loop import fit

TIMING = {"wall_s", "images_per_s", "train_s"}
HANG_S = 60  # one case running longer than this is a hang
VARIANTS = [pytest.param(1, id="fast"), pytest.param(10, id="full", marks=pytest.mark.slow)]
TRIED: dict[str, int] = {}
OUTCOMES: dict[str, int] = {}


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if TRIED:
        print("\nbad inputs tried: " + ", ".join(f"{k} {v}" for k, v in TRIED.items())
              + f"; total {sum(TRIED.values())}")
        print("outcomes: " + "; ".join(f"{k}: {v}" for k, v in sorted(OUTCOMES.items())))


def count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


def outcome(what: str) -> None:
    OUTCOMES[what] = OUTCOMES.get(what, 0) + 1


@contextmanager
def no_hang(seconds: int = HANG_S):
    def on_alarm(signum, frame):
        raise TimeoutError(f"a case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``resnet-repro ARGV`` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv, code: int, out: str, err: str, ok_codes=(0,)) -> None:
    """Exit 0 (or another expected code), or exit 2 with exactly one ``error:`` line;
    never a traceback."""
    assert "Traceback" not in out + err, (argv, err)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    else:
        assert code in ok_codes, (argv, code, err)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in ev.items() if k not in TIMING}
            for ev in runs.read_metrics(run_dir) if ev["event"] not in ("start", "resume")]


def cfg8(tree: Path) -> RunConfig:
    return make_config("resnet8", str(tree), iterations=8, batch_size=16, precision="fp32", device="cpu", threads=1)


@pytest.fixture(scope="module")
def base_runs(tiny_tree, tmp_path_factory):
    """A run stopped at iteration 4 (the material to damage) and an uninterrupted one
    (the correct result), 8 iterations each."""
    root = tmp_path_factory.mktemp("base")
    fit(cfg8(tiny_tree), root / "stopped", stop_after=4)
    fit(cfg8(tiny_tree), root / "straight")
    return root / "stopped", root / "straight"


# ----------------------------------------------------------------------------- command lines
COMMANDS = ("arch", "train", "table", "import-weights", "responses", "figure", "report")  # never long ones (run, bench)
WORDS = ["", "0", "1", "-1", "6", "8", "9", "99", "1e309", "nan", "inf", "-inf", "1.5", "resnet20", "plain56",
         "resnet8", "resnet50", "resnet1202", "resnet7", "A", "B", "C", "D", "a", "smoke", "quick", "paper",
         "fp32", "bf16", "auto", "cpu", "cuda", "cuda:9", "markdown", "csv", "latex", "rich", "split", "all",
         "on", "off", "1x1", "3x3", "test", "val", "torchvision", "torchvision:NOPE", "..", "../..", "/", ".",
         "\x00", "x\x00y", "[/bold]", "[red]", "é", "🙂", "--", "-", "--help", "cifar10-depth"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, base_runs):
    """Files a command line may name: garbage run directories, garbage weights and
    configs, a valid config. Nothing here may change."""
    root = tmp_path_factory.mktemp("world")
    stopped, _ = base_runs
    good_cfg = (stopped / "config.json").read_bytes()
    (root / "valid-config.json").write_bytes(good_cfg)
    for name, files in {
        "empty-run": {"config.json": b""},
        "binary-run": {"config.json": bytes(range(256)), "summary.json": b"\xff\xfe\x00",
                       "metrics.jsonl": b"\x00" * 64},
        "wrong-types": {"config.json": json.dumps({"config": {"arch": 5, "schedule": [], "iterations": "x"}}).encode(),
                        "summary.json": b'{"status": 3, "final_test_error": "low"}'},
        "list-config": {"config.json": b"[1, 2, 3]"},
        "deep": {"config.json": b"[" * 100_000 + b"]" * 100_000},
        "half-run": {"config.json": good_cfg[: len(good_cfg) // 2]},
        "nan-summary": {"config.json": good_cfg,
                        "summary.json": b'{"status": "complete", "final_test_error": NaN, "wall_s": Infinity}'},
    }.items():
        d = root / "runs" / name
        d.mkdir(parents=True)
        for fname, data in files.items():
            (d / fname).write_bytes(data)
    (root / "garbage.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    (root / "empty.pt").write_bytes(b"")
    (root / "text.json").write_text("not json")
    (root / "tensor.pt").write_bytes(_saved({"fc.weight": torch.zeros(2, 2)}))
    (root / "adir").mkdir()
    return root


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _command_specs():
    import typer

    group = typer.main.get_command(app)
    specs = {}
    for name in COMMANDS:
        cmd = group.commands.get(name)
        if cmd is None:
            continue
        options, arguments = [], []
        for p in cmd.params:
            if p.param_type_name == "argument":
                arguments.append(p)
            else:
                options.append(p)
        specs[name] = (options, arguments)
    return specs


def _argv_strategy(world: Path, scratch: Path):
    specs = _command_specs()
    paths = [str(p) for p in [world / "runs", *sorted((world / "runs").iterdir()), world / "garbage.pt",
                              world / "empty.pt", world / "text.json", world / "tensor.pt", world / "adir",
                              world / "valid-config.json", world / "missing" / "nothing.json"]]
    value = st.one_of(st.sampled_from(WORDS), st.sampled_from(paths),
                      st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
                      st.integers(-(10**12), 10**12).map(str),
                      st.floats(allow_nan=True, allow_infinity=True).map(repr))
    # Output paths stay in the scratch folder (the commands' own outputs may be written).
    out_value = st.one_of(st.sampled_from([str(scratch / "t.md"), str(scratch / "sub" / "t.csv"), str(scratch),
                                           "", "t\x00.md", str(scratch / "f.png"), str(scratch / "w.pt")]),
                          st.text(st.sampled_from("abc._-"), min_size=1, max_size=8))

    runs_dir, cfg_file = str(world / "runs"), str(world / "valid-config.json")
    templates = [t for t in [
        ["arch", "resnet20"], ["arch", "resnet56", "--shortcut", "B"], ["arch", "resnet50", "--stride-on", "3x3"],
        ["train", "--arch", "resnet20", "--out", str(scratch), "--name", "x"],
        ["train", "--arch", "plain56", "--schedule", "smoke", "--seed", "1", "--precision", "fp32", "--device", "cpu",
         "--threads", "1", "--batch-size", "16", "--lr", "0.01", "--warmup", "on", "--train-on", "all"],
        ["train", "--arch", "resnet110", "--iterations", "100", "--shortcut", "C", "--resume"],
        ["train", "--config", cfg_file, "--out", str(scratch)],
        ["table", "6", "--runs", runs_dir], ["table", "1"], ["table", "6", "--format", "csv", "--out", str(scratch / "t.csv")],
        ["table", "3", "--runs", runs_dir, "--format", "latex"],
        ["figure", "6", "--runs", runs_dir, "--out", str(scratch / "fig")], ["figure", "1", "--runs", runs_dir],
        ["report", "--runs", runs_dir, "--out", str(scratch / "REPORT.md")],
        ["import-weights", str(world / "tensor.pt"), "--arch", "resnet18", "--out", str(scratch / "w.pt")],
        ["responses", str(world / "runs" / "nan-summary")],
    ] if t[0] in specs]

    @st.composite
    def mutated(draw):
        """A valid command line with up to two changes: a value replaced, a word dropped,
        a stray word, or one more option."""
        parts = list(draw(st.sampled_from(templates)))
        for _ in range(draw(st.integers(0, 2))):
            how = draw(st.sampled_from(["replace", "drop", "insert", "option"]))
            i = draw(st.integers(1, max(1, len(parts) - 1)))
            if how == "replace" and i < len(parts):
                parts[i] = draw(value)
            elif how == "drop" and i < len(parts):
                del parts[i]
            elif how == "insert":
                parts.insert(i, draw(value))
            else:
                options = specs[parts[0]][0]
                if options:
                    p = draw(st.sampled_from(options))
                    parts.append(draw(st.sampled_from(list(p.opts) + list(p.secondary_opts))))
                    if not p.is_flag and p.nargs != 0:
                        parts.append(draw(out_value if p.name in ("out", "out_file") else value))
        return parts

    @st.composite
    def argv(draw):
        if draw(st.integers(0, 2)):
            return draw(mutated())
        name = draw(st.sampled_from(sorted(specs)))
        options, arguments = specs[name]
        parts = [name]
        for p in draw(st.lists(st.sampled_from(options), max_size=5)) if options else []:
            opt = draw(st.sampled_from(list(p.opts) + list(p.secondary_opts)))
            parts.append(opt)
            if not p.is_flag and p.nargs != 0:
                parts.append(draw(out_value if p.name in ("out", "out_file") else value))
        for _ in arguments:
            parts.extend(draw(st.lists(value, min_size=0, max_size=2)))
        if draw(st.booleans()):
            parts.insert(draw(st.integers(0, len(parts))), draw(value))  # a stray word anywhere
        return parts

    return argv()


@pytest.mark.parametrize("scale", VARIANTS)
def test_command_lines(scale, world, tmp_path, monkeypatch):
    from resnet_repro.models import convert
    from resnet_repro.train import loop

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("RESNET_REPRO_DATA", str(world / "missing-data"))
    calls = []

    def fake_fit(cfg, run_dir, resume=False, on_event=None, **kw):
        assert isinstance(cfg, RunConfig)
        calls.append((cfg, Path(run_dir)))
        return {"status": "complete", "iterations_done": cfg.iterations, "iterations": cfg.iterations,
                "final_train_error": 1.0, "final_val_error": 2.0, "final_test_error": 3.0, "wall_s": 1.0,
                "images_per_s": 1.0}

    def offline(*a, **k):
        raise UserError("no network in tests")

    monkeypatch.setattr(loop, "fit", fake_fit)
    monkeypatch.setattr(convert, "_download", offline)
    before = snapshot(world)

    @fuzz_settings(60 * scale)
    @given(argv=_argv_strategy(world, scratch))
    def case(argv):
        count("command lines")
        calls.clear()
        with no_hang():
            code, out, err = run_cli(argv)
        check_outcome(argv, code, out, err)
        outcome(f"{argv[0] if argv else '-'} exit {code}")
        if calls:  # training was asked for: a valid config, and a run directory inside its --out
            assert code == 0
            cfg, run_dir = calls[0]
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", run_dir.name), run_dir
            out_dir = run_dir.parent.resolve()
            assert run_dir.resolve().is_relative_to(out_dir) and run_dir.resolve() != out_dir
        # No existing file changes or goes. A new one may appear where an --out names the world
        # (e.g. `figure 6 --out WORLD/runs/x`, which without --runs and results/ draws the paper's axes).
        after = snapshot(world)
        assert {k: after.get(k) for k in before} == before, argv

    case()


def test_command_line_fuzz_reaches_every_outcome(world, tmp_path, monkeypatch):
    """The strategies above are not too narrow: some cases succeed, some fail."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["arch", "resnet20"])[0] == 0
    code, _, err = run_cli(["table", "6", "--runs", str(world / "runs"), "--format", "csv"])
    assert code == 0 and "Traceback" not in err
    for argv in (["train", "--arch", "resnet7"], ["table", "9"], ["table", "x"], ["train", "--nope"],
                 ["import-weights", str(world / "garbage.pt"), "--arch", "resnet18", "--out", "w.pt"],
                 ["train", "--config", str(world / "text.json")], ["arch", "[/bold]"],
                 ["train", "--arch", "resnet20", "--out", "x\x00y"]):
        code, out, err = run_cli(argv)
        check_outcome(argv, code, out, err)
        assert code == 2, (argv, err)


# ----------------------------------------------------------------------------- run directories
FILES = ("config.json", "summary.json", "metrics.jsonl", "checkpoints/index.json", "checkpoints/newest",
         "checkpoints/older")


def _json_values():
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3),
                        max_leaves=6)


def _variant(real: bytes, json_like: bool):
    """What one file of a run directory may hold: nothing (missing), the real bytes, or
    damage of many kinds."""
    options = [
        st.just(None), st.just(real), st.just(b""), st.binary(min_size=1, max_size=200),
        st.integers(0, max(0, len(real) - 1)).map(lambda n: real[:n]),
        st.tuples(st.integers(0, max(0, len(real) - 1)), st.integers(1, 255)).map(
            lambda t: real[: t[0]] + bytes([real[t[0]] ^ t[1]]) + real[t[0] + 1:] if real else b"x"),
    ]
    if json_like:
        options.append(_json_values().map(lambda v: json.dumps(v).encode()))
        try:
            obj = json.loads(real)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            keys = sorted(obj) + sorted(obj.get("config", {})) if "config" in obj else sorted(obj)
            options.append(st.tuples(st.sampled_from(keys), _json_values()).map(
                lambda kv: json.dumps(_replace(obj, *kv)).encode()))
    return st.one_of(options)


def _replace(obj: dict, key: str, value) -> dict:
    out = json.loads(json.dumps(obj))
    if key in out:
        out[key] = value
    else:
        out["config"][key] = value
    return out


def _real_files(stopped: Path) -> dict[str, bytes]:
    ck = stopped / "checkpoints"
    older, newest = checkpoint.read_index(ck)["latest"]
    return {"config.json": (stopped / "config.json").read_bytes(),
            "summary.json": (stopped / "summary.json").read_bytes(),
            "metrics.jsonl": (stopped / "metrics.jsonl").read_bytes(),
            "checkpoints/index.json": (ck / "index.json").read_bytes(),
            "checkpoints/newest": (ck / newest).read_bytes(), "checkpoints/older": (ck / older).read_bytes(),
            "names": [older, newest]}


@pytest.mark.parametrize("scale", VARIANTS)
def test_run_directories(scale, tiny_tree, base_runs, tmp_path):
    stopped, straight = base_runs
    real = _real_files(stopped)
    older, newest = real["names"]
    reference = comparable(straight)
    n = [0]
    argv_train = ["train", "--arch", "resnet8", "--data-dir", str(tiny_tree), "--iterations", "8",
                  "--batch-size", "16", "--precision", "fp32", "--device", "cpu", "--threads", "1",
                  "--name", "r", "--resume"]

    @st.composite
    def strategy(draw):
        """One to three files damaged (or missing), the others as the stopped run left them."""
        damaged = draw(st.sets(st.sampled_from(FILES), min_size=1, max_size=3))
        return {f: (draw(_variant(real[f], not f.startswith("checkpoints/") or f.endswith(".json")))
                    if f in damaged else real[f]) for f in FILES}

    @fuzz_settings(12 * scale)
    @given(files=strategy(), action=st.sampled_from(["train", "train", "table", "load_runs"]))
    def case(files, action):
        count("run directories")
        n[0] += 1
        parent = tmp_path / f"case{n[0]}"
        run = parent / "r"
        (run / "checkpoints").mkdir(parents=True)
        for f, data in files.items():
            if data is None:
                continue
            target = {"checkpoints/newest": f"checkpoints/{newest}", "checkpoints/older": f"checkpoints/{older}"}.get(f, f)
            (run / target).write_bytes(data)
        before = snapshot(run)
        with no_hang():
            if action == "load_runs":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    df = runs.load_runs(parent)
                assert set(runs.RUN_COLUMNS) <= set(df.columns) and len(df) <= 1
                assert set(df["status"]) <= set(runs.ROW_STATUSES)
                for col in ("final_test_error", "wall_s"):
                    assert all(v is None or v == v for v in df[col])  # no NaN passes as a number
                assert snapshot(run) == before
                return
            if action == "table":
                code, out, err = run_cli(["table", "6", "--runs", str(parent), "--format", "csv"])
                check_outcome(action, code, out, err)
                assert snapshot(run) == before
                return
            code, out, err = run_cli([*argv_train, "--out", str(parent)])
        check_outcome(files, code, out, err)
        outcome(f"train exit {code}" + (": " + re.sub(r"\S*/(case\d+|tmp)\S*", "<path>", err.split(";")[0][7:])[:60]
                                        if code == 2 else ""))
        if code == 2:
            assert snapshot(run) == before, err
            return
        summary = json.loads((run / "summary.json").read_bytes())
        assert summary["status"] == "complete"
        if snapshot(run) != before:  # it trained: to exactly the uninterrupted result
            assert comparable(run) == reference
            assert not list(run.rglob(".*.tmp")) and not (run / ".lock").exists()

    case()


# ----------------------------------------------------------------------------- checkpoint bytes
@pytest.mark.parametrize("scale", VARIANTS)
def test_checkpoint_bytes(scale, base_runs, tmp_path):
    stopped, _ = base_runs
    real = _real_files(stopped)["checkpoints/newest"]
    target = tmp_path / "iter-0000004.pt"
    sha = hashlib.sha256(real).hexdigest()

    @fuzz_settings(150 * scale)
    @given(data=_variant(real, json_like=False).filter(lambda d: d is not None))
    def case(data):
        count("checkpoint bytes")
        target.write_bytes(data)
        with no_hang(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the odd pickle protocols of damaged bytes
            try:
                state = checkpoint.load_verified(target, sha)
            except ValueError as exc:
                assert data != real and str(exc).startswith(target.name)
            else:
                assert data == real and state["iteration"] == 4
            try:  # without a checksum, anything that loads must still pass the field checks or be refused
                checkpoint.check_resume_state(checkpoint.load_verified(target, None), target.name)
            except ValueError as exc:
                assert str(exc).startswith(target.name)

    case()


# ----------------------------------------------------------------------------- readers of single files
@pytest.mark.parametrize("scale", VARIANTS)
def test_file_readers(scale, base_runs, tmp_path):
    stopped, _ = base_runs
    real = _real_files(stopped)

    @fuzz_settings(150 * scale)
    @given(cfg=_variant(real["config.json"], True), log=_variant(real["metrics.jsonl"], True),
           index=_variant(real["checkpoints/index.json"], True))
    def case(cfg, log, index):
        count("single files")
        d = tmp_path / "d"
        (d / "checkpoints").mkdir(parents=True, exist_ok=True)
        for name, data in (("config.json", cfg), ("metrics.jsonl", log), ("checkpoints/index.json", index)):
            (d / name).unlink(missing_ok=True)
            if data is not None:
                (d / name).write_bytes(data)
        with no_hang(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evs = runs.read_metrics(d)
            assert all(isinstance(e, dict) for e in evs)
            assert runs.read_json(d / "config.json") is None or isinstance(runs.read_json(d / "config.json"), dict)
            try:
                c = load_config(d / "config.json")
            except UserError as exc:
                assert "\n" not in str(exc)
            else:
                assert isinstance(c, RunConfig)
            idx = checkpoint.read_index(d / "checkpoints")
            assert all(checkpoint.ITER_NAME.fullmatch(n) for n in idx["latest"])
            try:
                checkpoint.load_latest(d / "checkpoints")
            except UserError as exc:
                assert "\n" not in str(exc)

    case()


# ----------------------------------------------------------------------------- experiment specs
SPEC_DIR = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("scale", VARIANTS)
def test_experiment_specs(scale):
    texts = [p.read_text() for p in sorted(SPEC_DIR.glob("*.toml"))]
    assert len(texts) >= 6, f"the paper's experiment specs are missing from {SPEC_DIR}"

    @st.composite
    def spec_text(draw):
        lines = draw(st.sampled_from(texts)).splitlines()
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["drop", "dup", "value", "garbage", "truncate"]))
            if how == "drop":
                del lines[i]
            elif how == "dup":
                lines.insert(i, lines[i])
            elif how == "value" and "=" in lines[i]:
                key = lines[i].split("=", 1)[0]
                val = draw(st.one_of(st.sampled_from(['"x"', "-1", "0", "[]", '["resnet7"]', "[1, 2]", "1e400",
                                                      "true", "{}", '"paper"', '"B"', "[-1]", '[""]']),
                                     _json_values().map(json.dumps)))
                lines[i] = f"{key}= {val}"
            elif how == "garbage":
                lines[i] = draw(st.text(max_size=20))
            elif how == "truncate":
                lines = lines[:i]
            if not lines:
                lines = [""]
        return "\n".join(lines)

    @fuzz_settings(100 * scale)
    @given(text=spec_text())
    def case(text):
        count("experiment specs")
        with no_hang():
            try:
                spec = experiments.parse_spec(text, "fuzz.toml")
            except UserError as exc:
                assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml")
            else:
                assert spec.name

    case()


# ----------------------------------------------------------------------------- run --dry-run over damaged results
@pytest.mark.parametrize("scale", VARIANTS)
def test_run_plan_over_damaged_results(scale, tiny_tree, tmp_path):
    """``run SPEC --dry-run`` inspects every run directory the spec names: damaged ones
    must show up as conflicts or errors, never as a traceback, and stay untouched."""
    spec = experiments.load_spec("cifar10-depth")
    plans = experiments.plan(spec, "smoke", out=tmp_path / "empty", data_dir=str(tiny_tree))
    real = {p.label: {"config.json": json.dumps({"config": p.config.model_dump(), "provenance": {}}).encode(),
                      "summary.json": json.dumps({"status": "complete", "iterations_done": p.config.iterations,
                                                  "wall_s": 1.0, "final_test_error": 50.0}).encode()}
            for p in plans}
    labels = sorted(real)
    n = [0]

    @st.composite
    def results(draw):
        out = {}
        for label in draw(st.sets(st.sampled_from(labels), min_size=1, max_size=3)):
            out[label] = {f: draw(_variant(real[label][f], True)) for f in ("config.json", "summary.json")}
        return out

    @fuzz_settings(40 * scale)
    @given(dirs=results())
    def case(dirs):
        count("results for run --dry-run")
        n[0] += 1
        out = tmp_path / f"case{n[0]}"
        for label, files in dirs.items():
            d = out / "cifar10" / label
            d.mkdir(parents=True)
            for f, data in files.items():
                if data is not None:
                    (d / f).write_bytes(data)
        before = snapshot(out)
        with no_hang():
            code, stdout, err = run_cli(["run", "cifar10-depth", "--profile", "smoke", "--dry-run", "--out", str(out),
                                         "--data-dir", str(tiny_tree)])
        check_outcome(dirs, code, stdout, err)
        outcome(f"run --dry-run exit {code}")
        assert snapshot(out) == before

    case()


def test_run_plan_with_a_non_object_config(tiny_tree, tmp_path):
    d = tmp_path / "cifar10" / "plain20-smoke-s0"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"config": [1, 2]}')
    code, out, err = run_cli(["run", "cifar10-depth", "--profile", "smoke", "--dry-run", "--out", str(tmp_path),
                              "--data-dir", str(tiny_tree)])
    check_outcome("non-object config", code, out, err)
    assert (d / "config.json").read_text() == '{"config": [1, 2]}'
