# resnet-repro: every command a user or CI needs. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CIFAR-10: the shared JPEG copy where it exists, else the original downloaded into data/cifar10.
SHARED_CIFAR := ../shared/data/cifar10-jpeg.tar.gz
DATA   ?= $(if $(wildcard $(SHARED_CIFAR)),$(SHARED_CIFAR),data/cifar10)
DOWNLOAD := $(if $(wildcard $(SHARED_CIFAR)),,--download)
SCHEDULE ?= quick
RUNS   ?= runs/quickstart

.PHONY: help setup test test-slow lint quickstart clean

help:
	@echo "make quickstart  set up, train plain-20 and ResNet-20 on CIFAR-10 (SCHEDULE=$(SCHEDULE)), print Table 6"
	@echo "make test        set up, run the fast tests (make test-slow: the slow ones)"
	@echo "make setup       create $(VENV) and install the package with its dev extras"
	@echo "make lint        ruff over src/ and tests/"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests

quickstart: setup
	$(BIN)/resnet-repro train --arch plain20 --schedule $(SCHEDULE) --data-dir $(DATA) $(DOWNLOAD) --out $(RUNS) --resume
	$(BIN)/resnet-repro train --arch resnet20 --schedule $(SCHEDULE) --data-dir $(DATA) --out $(RUNS) --resume
	$(BIN)/resnet-repro table 6 --runs $(RUNS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
