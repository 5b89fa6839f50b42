"""Per-stage gradient norms (paper Sec. 4.1): the measurement equals a float64 computation
written out here with torch.autograd.grad, for plain and residual nets; the logged event
is the gradient of the next step's mini-batch at the weights of its iteration; training
with the logging on is bit-identical to training with it off (fp32, bf16; torch.compile
in the slow tests), and resumes exactly; the figure draws the logged values; bad
cadences are one line, exit 2."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_main
from resnet_repro import runcheck, runs
from resnet_repro.analysis.gradients import INPUT_MODULES, WEIGHT_GROUPS, stage_grad_norms
from resnet_repro.errors import UserError
from resnet_repro.models import build
from resnet_repro.report import figures
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.train import checkpoint, loop
from resnet_repro.train.config import RunConfig, make_config
from resnet_repro.train.loop import BatchOrder, fit, prepare_data, train_batch

TIMING = {"wall_s", "images_per_s", "train_s"}


def direct_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The norms computed independently: a float64 copy of ``model``, its forward written
    out stage by stage (CifarResNet's layout), torch.autograd.grad of the batch-mean
    cross-entropy w.r.t. every parameter and every stage input, norms of the
    concatenated gradients."""
    m = copy.deepcopy(model).double().train()
    x = x.double().contiguous()
    stem = F.relu(m.bn1(m.conv1(x)))
    h1 = m.layer1(stem)
    h2 = m.layer2(h1)
    h3 = m.layer3(h2)
    pooled = torch.flatten(F.adaptive_avg_pool2d(h3, 1), 1)
    loss = F.cross_entropy(m.fc(pooled), y)
    parts = {"conv1+bn1": [*m.conv1.parameters(), *m.bn1.parameters()], "layer1": list(m.layer1.parameters()),
             "layer2": list(m.layer2.parameters()), "layer3": list(m.layer3.parameters()),
             "fc": list(m.fc.parameters())}
    acts = {"layer1": stem, "layer2": h1, "layer3": h2, "fc": pooled}
    names = list(parts)
    flat = [p for n in names for p in parts[n]]
    grads = torch.autograd.grad(loss, flat + list(acts.values()))
    out_w, i = {}, 0
    for n in names:
        k = len(parts[n])
        out_w[n] = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads[i: i + k]])).item()
        i += k
    out_in = {n: torch.linalg.vector_norm(g).item() for n, g in zip(acts, grads[i:], strict=True)}
    assert sum(p.numel() for p in flat) == sum(p.numel() for p in m.parameters())  # every parameter counted
    return {"loss": loss.item(), "weight": out_w, "input": out_in}


def assert_norms_close(got: dict, want: dict, rtol: float) -> None:
    assert set(got["weight"]) == {n for n, _ in WEIGHT_GROUPS} == set(want["weight"])
    assert set(got["input"]) == set(INPUT_MODULES) == set(want["input"])
    for kind in ("weight", "input"):
        for k, v in want[kind].items():
            assert v > 0
            assert got[kind][k] == pytest.approx(v, rel=rtol), (kind, k)
    assert got["loss"] == pytest.approx(want["loss"], rel=rtol)


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def scrambled(arch: str, shortcut: str | None) -> torch.nn.Module:
    """A net with He init and BN weights, biases and running statistics away from their
    initial 1 / 0, so that no part's gradient is trivially zero or symmetric."""
    torch.manual_seed(3)
    m = build(arch, shortcut)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.num_batches_tracked.fill_(7)
    return m.train()


# ---------------------------------------------------------------------------- the measurement
@pytest.mark.parametrize("arch, shortcut", [("plain20", None), ("resnet20", "A"), ("resnet8", "B")])
def test_norms_equal_a_direct_float64_computation(arch, shortcut):
    model = scrambled(arch, shortcut)
    x, y = batch()
    want = direct_norms(model, x, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = stage_grad_norms(model, x, y, "fp32")  # float32 model and batch
    assert_norms_close(got, want, rtol=2e-4)
    # the module is left as it was: BN running statistics and counters bit for bit, no .grad written
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # in float64 the measurement is the same computation: equal to rounding
    m64 = copy.deepcopy(model).double()
    assert_norms_close(stage_grad_norms(m64, x.double(), y, "fp32"), want, rtol=1e-10)
    # activation checkpointing (segments recomputed in the backward pass) measures the same
    m64.checkpoint_activations = True
    assert_norms_close(stage_grad_norms(m64, x.double(), y, "fp32"), want, rtol=1e-10)


def test_plain_and_residual_nets_differ_and_bf16_is_close():
    """The two nets give different norms (the measurement sees the shortcuts), and bf16
    autocast gives the fp32 norms to within bf16 rounding."""
    x, y = batch(16)
    plain, res = scrambled("plain20", None), scrambled("resnet20", "A")
    a, b = stage_grad_norms(plain, x, y), stage_grad_norms(res, x, y)
    assert a["input"]["layer1"] != pytest.approx(b["input"]["layer1"], rel=0.01)
    bf = stage_grad_norms(res, x, y, "bf16")
    assert_norms_close(bf, b, rtol=0.05)
    assert bf != b  # it did run in bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        stage_grad_norms(res, x, y, "fp16")


# ---------------------------------------------------------------------------- in the training loop
def smoke_cfg(tree, **kw) -> RunConfig:
    base = dict(arch="resnet8", data_dir=str(tree), schedule="smoke", batch_size=16, precision="fp32", device="cpu",
                threads=1)
    base.update(kw)
    return make_config(**base)


def without_norms(run_dir) -> list[dict]:
    """metrics.jsonl without start events, grad_norms events and timing fields."""
    return [{k: v for k, v in e.items() if k not in TIMING} for e in runs.read_metrics(run_dir)
            if e["event"] not in ("start", "resume", "grad_norms")]


def comparable(run_dir) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in runs.read_metrics(run_dir)
            if e["event"] not in ("start", "resume")]


def final_state(run_dir) -> dict:
    return checkpoint.load_verified(run_dir / "checkpoints" / "final.pt", None)["model"]


def norm_events(run_dir) -> list[dict]:
    return [e for e in runs.read_metrics(run_dir) if e["event"] == "grad_norms"]


def test_defaults_and_config():
    cfg = make_config("resnet20", "d", schedule="quick", precision="fp32", device="cpu")
    assert cfg.grad_norms_every == cfg.eval_every == 250  # the default: one measurement per evaluation
    assert make_config("resnet20", "d", schedule="paper", precision="fp32", device="cpu").grad_norms_every == 1000
    assert make_config("resnet20", "d", precision="fp32", device="cpu", grad_norms_every=0).grad_norms_every == 0
    # a config.json from before the option logged none
    old = {k: v for k, v in cfg.model_dump().items() if k != "grad_norms_every"}
    assert RunConfig.model_validate(old).grad_norms_every == 0
    # it changes no number: a resume may change it, and it is not part of a run's recipe
    assert "grad_norms_every" not in cfg.result_fields()
    with pytest.raises(UserError, match=r"--grad-norms-every must be >= 0 \(0: off\), got -3"):
        make_config("resnet20", "d", precision="fp32", device="cpu", grad_norms_every=-3)
    with pytest.raises(UserError, match="--grad-norms-every is an option of CIFAR-10 training"):
        make_config("resnet18", "d", precision="fp32", device="cpu", dataset=None, grad_norms_every=10)


@pytest.mark.parametrize("arch, precision", [("resnet8", "fp32"), ("plain8", "fp32"), ("resnet8", "bf16")])
def test_training_is_bit_identical_with_the_logging_on(tiny_tree, tmp_path, arch, precision):
    off = smoke_cfg(tiny_tree, arch=arch, precision=precision, grad_norms_every=0)
    on = smoke_cfg(tiny_tree, arch=arch, precision=precision, grad_norms_every=1)  # every iteration
    fit(off, tmp_path / "off")
    fit(on, tmp_path / "on")
    assert norm_events(tmp_path / "off") == []
    evs = norm_events(tmp_path / "on")
    assert [e["iteration"] for e in evs] == list(range(30))  # 0 .. 29: before each of the 30 steps
    assert without_norms(tmp_path / "on") == without_norms(tmp_path / "off")
    a, b = final_state(tmp_path / "off"), final_state(tmp_path / "on")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights and BN buffers
    for name in ("iter-0000015.pt",):  # the optimizer's momentum too
        sa = checkpoint.load_verified(tmp_path / "off" / "checkpoints" / name, None)["optimizer"]["state"]
        sb = checkpoint.load_verified(tmp_path / "on" / "checkpoints" / name, None)["optimizer"]["state"]
        assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    # the runs check out, the new events included
    assert runcheck.check_files(tmp_path / "on") == [] == runcheck.check_files(tmp_path / "off")
    e = evs[0]
    assert set(e) == {"event", "iteration", "loss", "weight", "input"}
    assert all(math.isfinite(v) and v > 0 for part in ("weight", "input") for v in e[part].values())


def test_logged_event_is_the_next_steps_gradient_and_resumes_exactly(tiny_tree, tmp_path):
    cfg = smoke_cfg(tiny_tree, grad_norms_every=5)
    fit(cfg, tmp_path / "straight")
    s = fit(cfg, tmp_path / "cut", stop_after=10)
    assert s["status"] == "interrupted"
    state = checkpoint.load_verified(tmp_path / "cut" / "checkpoints" / "iter-0000010.pt", None)
    fit(cfg, tmp_path / "cut", resume=True)
    assert comparable(tmp_path / "cut") == comparable(tmp_path / "straight")  # grad_norms events included
    assert runcheck.check_files(tmp_path / "cut") == []
    evs = runs.read_metrics(tmp_path / "straight")
    kinds = [(e["event"], e["iteration"]) for e in evs]
    assert [k for k in kinds if k[0] == "grad_norms"] == [("grad_norms", i) for i in (0, 5, 10, 15, 20, 25)]
    # each right after its step: before the train and eval events of its iteration
    assert kinds.index(("grad_norms", 15)) + 1 == kinds.index(("train", 15))
    assert kinds.index(("grad_norms", 0)) == 1  # after the start event
    # the event at 10: the weights after 10 steps (the checkpoint), the mini-batch of the 11th step
    data = prepare_data(cfg)
    x, y = train_batch(data, BatchOrder(len(data.train_x), cfg.batch_size, cfg.seed, torch.device("cpu")), cfg, 10)
    model = build(cfg.arch, cfg.shortcut)
    model.load_state_dict(state["model"])
    logged = next(e for e in evs if e["event"] == "grad_norms" and e["iteration"] == 10)
    assert_norms_close(logged, direct_norms(model.train(), x, y), rtol=2e-4)
    other = direct_norms(model.train(), *train_batch(data, BatchOrder(len(data.train_x), 16, 0, torch.device("cpu")),
                                                     cfg, 9))
    assert logged["input"]["fc"] != pytest.approx(other["input"]["fc"], rel=1e-3)  # not the batch of another step


def test_tensorboard_gets_the_norms_as_scalars():
    calls = []

    class Writer:
        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

    loop.tensorboard_log(Writer(), {"event": "grad_norms", "iteration": 250, "loss": 1.5,
                                    "weight": {"layer1": 0.5, "fc": 2.0}, "input": {"layer3": 0.01}})
    assert sorted(calls) == [("grad_norms/input/layer3", 0.01, 250), ("grad_norms/loss", 1.5, 250),
                             ("grad_norms/weight/fc", 2.0, 250), ("grad_norms/weight/layer1", 0.5, 250)]


@pytest.mark.slow
def test_bit_identical_with_compile(tiny_tree, tmp_path):
    """The speed configuration of the CPU runs (torch.compile, bf16 autocast, channels_last):
    the measurement uses the uncompiled module, and the compiled step trains as without it."""
    for n in (0, 3):
        fit(smoke_cfg(tiny_tree, precision="bf16", compile=True, grad_norms_every=n), tmp_path / f"n{n}")
    assert without_norms(tmp_path / "n3") == without_norms(tmp_path / "n0")
    a, b = final_state(tmp_path / "n0"), final_state(tmp_path / "n3")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["iteration"] for e in norm_events(tmp_path / "n3")] == list(range(0, 30, 3))


# ---------------------------------------------------------------------------- the figure
@pytest.fixture(scope="module")
def grad_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grads") / "results"
    made = {}
    for arch, seed, every in (("plain20", 0, 250), ("plain56", 0, 500), ("resnet20", 0, 250),
                              ("resnet56", 0, 0), ("resnet56", 1, 250)):
        name = f"{arch}-{'A-' if arch.startswith('resnet') else ''}quick-s{seed}"
        made[name] = write_synthetic_run(root / "cifar10" / name, arch, seed, "quick", final_test_error=9,
                                         grad_norms_every=every)
    return root, made


def test_gradient_figure_draws_the_logged_norms(grad_runs, tmp_path):
    root, made = grad_runs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = figures.draw("gradients", root)
    # ResNet-56 seed 0 logged no norms: seed 1 is drawn instead, and the warning names seed 0's log
    assert any("resnet56-A-quick-s0/metrics.jsonl holds no grad_norms events" in str(w.message) for w in caught)
    assert d.runs == sorted(str(made[n]) for n in ("plain20-quick-s0", "plain56-quick-s0", "resnet20-A-quick-s0",
                                                  "resnet56-A-quick-s1"))
    (w20, w56), (i20, i56) = np.asarray(d.figure.axes[:4]).reshape(2, 2)
    parts = [n for n, _ in WEIGHT_GROUPS]
    assert [ln.get_label() for ln in w20.lines] == [f"{net} {p}" for net in ("plain-20", "ResNet-20") for p in parts]
    assert [ln.get_label() for ln in i56.lines] == [f"{net} {p}" for net in ("plain-56", "ResNet-56")
                                                    for p in INPUT_MODULES]
    assert all(ax.get_yscale() == "log" for ax in (w20, w56, i20, i56))
    assert {ln.get_linestyle() for ln in w20.lines[:5]} == {"--"} and {ln.get_linestyle() for ln in w20.lines[5:]} == {"-"}
    # a curve is the run's logged values against iterations / 1e4
    evs = norm_events(made["plain56-quick-s0"])
    assert [e["iteration"] for e in evs] == list(range(0, 4000, 500))
    line = next(ln for ln in i56.lines if ln.get_label() == "plain-56 layer2")
    np.testing.assert_allclose(line.get_xdata(), [e["iteration"] / 1e4 for e in evs])
    np.testing.assert_allclose(line.get_ydata(), [e["input"]["layer2"] for e in evs])
    line = next(ln for ln in w20.lines if ln.get_label() == "ResNet-20 conv1+bn1")
    np.testing.assert_allclose(line.get_ydata(), [e["weight"]["conv1+bn1"] for e in norm_events(made["resnet20-A-quick-s0"])])
    # the same colour for a part in both rows; the caption says what is drawn, at which schedule
    assert line.get_color() == next(ln for ln in w56.lines if ln.get_label() == "ResNet-56 conv1+bn1").get_color()
    assert "w.r.t. each part's weights (top) and the tensor entering it (bottom)" in d.title
    assert "dashed = plain, solid = ResNet" in d.title and "quick schedule, 4,000 iterations" in d.title
    with pytest.warns(UserWarning, match="holds no grad_norms events"):
        paths = figures.figure("gradients", root, tmp_path)
    assert [p.name for p in paths] == ["gradients.png", "gradients.pdf"]
    with pytest.warns(UserWarning, match="holds no grad_norms events"):
        again = figures.figure("gradients", root, tmp_path / "again")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_gradient_figure_without_norms_and_from_the_cli(grad_runs, tmp_path, capsys):
    d = figures.draw("gradients", tmp_path)  # no runs at all
    texts = [t.get_text() for ax in d.figure.axes for t in ax.texts]
    assert len(texts) == 4 and all(t.startswith("not run yet:\nresnet-repro run cifar10-depth") for t in texts)
    root, _ = grad_runs
    code, out, err = run_main(["figure", "gradients", "--runs", str(root), "--schedule", "quick", "--out",
                               str(tmp_path / "g")], capsys)
    assert code == 0, err
    assert f"wrote {tmp_path / 'g.png'}" in out and (tmp_path / "g.pdf").stat().st_size > 5_000
    code, _, err = run_main(["figure", "gradient", "--runs", str(root)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "choose 1, 4, 6, 7 or gradients" in err
    code, _, err = run_main(["figure", "4", "--schedule", "quick", "--runs", str(root)], capsys)
    assert code == 2 and "--schedule applies to Figures 1 and 6 and the gradients figure" in err


# ---------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("argv", [["train", "--arch", "resnet20", "--grad-norms-every", "-1"],
                                  ["train", "--arch", "resnet20", "--grad-norms-every=-5"]])
def test_negative_cadence_is_one_line_exit_2(argv, capsys, tmp_path):
    code, out, err = run_main([*argv, "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--grad-norms-every must be >= 0 (0: off), got -" in err
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_run_passes_the_cadence_and_rejects_a_negative_one(tiny_tree, tmp_path, capsys):
    code, _, err = run_main(["run", "cifar10-depth", "--profile", "smoke", "--data-dir", str(tiny_tree), "--out",
                             str(tmp_path), "--dry-run", "--grad-norms-every", "-2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--grad-norms-every must be >= 0" in err
    from resnet_repro.experiments import load_spec, plan

    plans = plan(load_spec("cifar10-depth"), "smoke", out=tmp_path, data_dir=str(tiny_tree), grad_norms_every=3)
    assert plans and {p.config.grad_norms_every for p in plans} == {3}
    assert {p.config.grad_norms_every for p in plan(load_spec("cifar10-depth"), "smoke", out=tmp_path,
                                                     data_dir=str(tiny_tree))} == {15}  # smoke: eval_every
