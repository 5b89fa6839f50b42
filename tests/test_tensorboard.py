"""TensorBoard curves of a killed and resumed run hold the points of an uninterrupted
one: the resume purges what the killed process wrote after its checkpoint, and only that
(a stand-in writer with TensorBoard's documented ``purge_step`` rule, so the test needs no
tensorboard package)."""

from __future__ import annotations

import pytest

from resnet_repro.train import loop
from resnet_repro.train.config import make_config


class PurgingWriter:
    """``SummaryWriter(log_dir, purge_step=P)``: events at steps >= P written earlier
    to ``log_dir`` are no longer shown (torch.utils.tensorboard.SummaryWriter docs)."""

    shown: dict[str, list[tuple[str, int]]] = {}

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.points = PurgingWriter.shown.setdefault(log_dir, [])
        if purge_step is not None:
            self.points[:] = [p for p in self.points if p[1] < purge_step]

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.points.append((tag, step))

    def close(self) -> None:
        pass


def test_killed_and_resumed_run_shows_the_same_points(tiny_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "tensorboard_writer_class", lambda: PurgingWriter)
    cfg = make_config("resnet8", str(tiny_tree), iterations=40, batch_size=16, precision="fp32", device="cpu",
                      threads=1, tensorboard=True)
    assert (cfg.log_every, cfg.eval_every) == (1, 2)
    loop.fit(cfg, tmp_path / "straight")
    # killed after iteration 9: its checkpoint at 9 is lost, so the resume starts from the
    # evaluation checkpoint at 8, and the points of iteration 9 were written twice
    loop.fit(cfg, tmp_path / "killed", stop_after=9)
    ckpts = tmp_path / "killed" / "checkpoints"
    (ckpts / "iter-0000009.pt").unlink()
    with pytest.warns(UserWarning, match="iter-0000009.pt unusable"):
        loop.fit(cfg, tmp_path / "killed", resume=True)
    straight = PurgingWriter.shown[str(tmp_path / "straight")]
    killed = PurgingWriter.shown[str(tmp_path / "killed")]
    assert ("eval/test_error", 8) in killed and ("train/train_loss", 9) in killed
    assert sorted(killed) == sorted(straight)  # every point once: none lost at 8, none doubled at 9
