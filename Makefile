# `make test` and `make demo` create .venv when missing and install what they need.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Empty: ../shared/data/cifar10, else torchvision's download (see dc3ray/pipeline/demo.py).
DATA ?= $(DC3RAY_DATA)
RUNS ?= runs

export RAY_AUTH_MODE ?= disabled
# Keep Ray quiet about usage stats and the dashboard on laptops / CI.
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || (echo "need $(PYTHON) (Python >= 3.11)"; exit 1)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

demo: $(STAMP)
	$(PY) -m dc3ray.cli demo $(if $(DATA),--data $(DATA),) --out $(RUNS)/demo

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(RUNS) .pytest_cache
