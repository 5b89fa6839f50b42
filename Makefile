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
# Where torch and torchvision come from. Empty (the default): PyPI, whose Linux torch is the
# CUDA build (5.7 GB installed with its NVIDIA libraries). TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the CPU-only build from PyTorch's index first; the package then finds torch installed.
TORCH_INDEX ?=
PIP    = $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: help setup test test-slow lint quickstart clean paper-runs paper-runs-status paper-runs-stop paper-runs-store

help:
	@echo "make quickstart  set up, train plain-20 and ResNet-20 on CIFAR-10, print Table 6"
	@echo "                 (SCHEDULE=$(SCHEDULE); smoke: a minute; RUNS=$(RUNS))"
	@echo "make test        set up, run the fast tests (make test-slow: the slow ones)"
	@echo "make setup       create $(VENV) and install the package with its dev extras (TORCH_INDEX=https://download.pytorch.org/whl/cpu: CPU-only PyTorch)"
	@echo "make lint        ruff over src/ and tests/"
	@echo "make table-N     paper Table N (1-8) from the run logs in results/, printed and"
	@echo "                 written to results/tableN.md"
	@echo "make figure-N    paper Figure N (1, 4, 6, 7) as results/figures/figureN.png/.pdf;"
	@echo "                 figure-1-paper, figure-6-quick, ...: at one schedule"
	@echo "make figure-gradients  per-stage gradient norms (Sec. 4.1) as"
	@echo "                 results/figures/gradients.png/.pdf (-paper, -quick)"
	@echo "make report      results/REPORT.md: every table and figure"
	@echo "make reproduce-cifar-quick"
	@echo "                 every CIFAR-10 experiment at the quick schedule, then report"
	@echo "                 (reproduce-cifar-paper: at the paper's)"
	@echo "make paper-runs  start or resume the 64k-iteration CPU runs in the background"
	@echo "                 (pinned code; paper-runs-status, -stop, -store)"
	@echo "make bench       time our training step against the usual pipeline"
	@echo "                 (BENCH=--quick: about 2 minutes)"
	@echo "make reference   import the published CIFAR-10 ResNets, evaluate them on DATA"
	@echo "                 into results/cifar10-reference/, rebuild Table 6"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PIP) --index-url $(TORCH_INDEX) torch torchvision)
	$(PIP) -e '.[dev]'
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

# Experiments, tables, figures and the report, rebuilt from the run logs in $(RESULTS).
RESULTS ?= results
JOBS    ?= 2
TABLES  := $(addprefix table-,1 2 3 4 5 6 7 8)
FIGURES := $(addprefix figure-,1 4 6 7)
.PHONY: $(TABLES) $(FIGURES) report reproduce-cifar-quick reproduce-cifar-paper
$(TABLES): table-%: setup
	$(BIN)/resnet-repro table $* --runs $(RESULTS) --out $(RESULTS)/table$*.md
$(FIGURES): figure-%: setup
	$(BIN)/resnet-repro figure $* --runs $(RESULTS) --out $(RESULTS)/figures/figure$*
# Figures 1 and 6 at one schedule each (runs in progress drawn and labelled): figure-6-paper, figure-1-quick, ...
SCHEDULE_FIGURES := $(foreach f,1 6,$(foreach s,paper quick,figure-$(f)-$(s)))
.PHONY: $(SCHEDULE_FIGURES)
$(SCHEDULE_FIGURES): setup
	$(BIN)/resnet-repro figure $(word 2,$(subst -, ,$@)) --schedule $(word 3,$(subst -, ,$@)) --runs $(RESULTS) --out $(RESULTS)/figures/figure$(word 2,$(subst -, ,$@))-$(word 3,$(subst -, ,$@))
# The per-stage gradient norms of plain-20/56 and ResNet-20/56 (paper Sec. 4.1 states them, shows none).
GRADIENT_FIGURES := figure-gradients figure-gradients-paper figure-gradients-quick
.PHONY: $(GRADIENT_FIGURES)
figure-gradients: setup
	$(BIN)/resnet-repro figure gradients --runs $(RESULTS) --out $(RESULTS)/figures/gradients
figure-gradients-paper figure-gradients-quick: figure-gradients-%: setup
	$(BIN)/resnet-repro figure gradients --schedule $* --runs $(RESULTS) --out $(RESULTS)/figures/gradients-$*
report: setup
	$(BIN)/resnet-repro report --runs $(RESULTS) --out $(RESULTS)/REPORT.md
reproduce-cifar-quick reproduce-cifar-paper: reproduce-cifar-%: setup
	$(BIN)/resnet-repro run cifar10-depth --profile $* --jobs $(JOBS) --out $(RESULTS) $(if $(wildcard $(SHARED_CIFAR)),,--data-dir $(DATA) $(DOWNLOAD))
	$(BIN)/resnet-repro run cifar10-1202 --profile $* --jobs $(JOBS) --out $(RESULTS) $(if $(wildcard $(SHARED_CIFAR)),,--data-dir $(DATA))
	$(BIN)/resnet-repro run cifar10-shortcuts --profile $* --jobs $(JOBS) --out $(RESULTS) $(if $(wildcard $(SHARED_CIFAR)),,--data-dir $(DATA))
	$(BIN)/resnet-repro report --runs $(RESULTS) --out $(RESULTS)/REPORT.md

# Speed: ours vs the usual pipeline, side by side (synthetic images where CIFAR-10 is absent).
BENCH ?=
.PHONY: bench
bench: setup
	$(BIN)/resnet-repro bench $(BENCH) $(if $(wildcard $(DATA)),--data-dir $(DATA),--synthetic)

# The paper's 64k-iteration CIFAR-10 runs on this CPU, from a pinned worktree (scripts/paper-runs).
paper-runs:
	scripts/paper-runs start
paper-runs-status:
	scripts/paper-runs status
paper-runs-stop:
	scripts/paper-runs stop
paper-runs-store:
	scripts/paper-runs store

# The yardstick: the published CIFAR-10 ResNet-20/32/44/56 of akamaster/pytorch_resnet_cifar10, converted
# exactly and evaluated on all 10,000 test images of $(DATA) (fp32, one thread); Table 6's reference block
# reads the records in $(REFERENCE_OUT). REF_PRECISION=bf16 writes ...-bf16.json records beside them.
PRETRAINED    ?= ../shared/pretrained/akamaster
REFERENCE_OUT ?= $(RESULTS)/cifar10-reference
REF_PRECISION ?= fp32
REF_WEIGHTS   ?= runs/reference
.PHONY: reference
reference: setup
	@test -d $(PRETRAINED) || { echo "no checkpoints at $(PRETRAINED): set PRETRAINED=DIR (akamaster's resnetN-*.th files)"; exit 2; }
	@set -e; for f in $(sort $(wildcard $(PRETRAINED)/resnet*-*.th)); do \
	  n=$$(basename $$f | cut -d- -f1); \
	  $(BIN)/resnet-repro import-weights $$f --from akamaster --arch $$n --out $(REF_WEIGHTS)/akamaster-$$n.pt; \
	  $(BIN)/resnet-repro evaluate --weights $(REF_WEIGHTS)/akamaster-$$n.pt --dataset cifar10 --data-dir $(DATA) \
	    --precision $(REF_PRECISION) --threads 1 \
	    --out $(REFERENCE_OUT)/akamaster-$$n$(if $(filter fp32,$(REF_PRECISION)),,-$(REF_PRECISION)).json; \
	done
	$(BIN)/resnet-repro table 6 --runs $(RESULTS) --out $(RESULTS)/table6.md
