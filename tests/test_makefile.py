"""``make setup``: the default installs as before; ``TORCH_INDEX`` installs torch and
torchvision from that index first (the CPU-only build: no 4 GB of CUDA libraries)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT


def dry_run(*args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent-venv", *args], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout
    return [ln for ln in out.splitlines() if "pip install" in ln]


def test_setup_default_is_unchanged_and_torch_index_comes_first():
    assert dry_run() == ["/nonexistent-venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'"]
    cpu = dry_run("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert cpu == ["/nonexistent-venv/bin/python -m pip install --quiet --disable-pip-version-check --index-url "
                   "https://download.pytorch.org/whl/cpu torch torchvision",
                   "/nonexistent-venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'"]
