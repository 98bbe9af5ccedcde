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

.PHONY: venv test test-fast demo bench bench-embed bench-graphcut bench-compensate bench-scaling \
	bench-accuracy bench-accuracy-imagenette bench-render clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (e.g. pyenv install 3.11) or pass make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

# Pure unit tests: no Ray, no data outside the repo; under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit -m "not ray and not data and not slow" -p no:cacheprovider

demo: $(STAMP)
	$(PY) -m dc3ray.cli demo $(if $(DATA),--data $(DATA),) --out $(RUNS)/demo

# Full-size benchmarks (not part of `make test`): each writes benchmarks/results/<name>.json,
# render.py turns them into docs/BENCHMARKS.md. Minutes each on 2 cores; see the scripts.
# The accuracy table's teacher, committed: retraining it on another CPU type gives other weights.
TEACHER ?= benchmarks/teacher_c3/teacher.pt

bench-embed: $(STAMP)
	$(PY) benchmarks/bench_embed.py --data $(RUNS)/cifar10/train --compute-features $(if $(wildcard $(TEACHER)),--teacher $(TEACHER),)

bench-graphcut: $(STAMP)
	$(PY) benchmarks/bench_graphcut.py

bench-compensate: $(STAMP)
	$(PY) benchmarks/bench_compensate.py

bench-scaling: $(STAMP)
	$(PY) benchmarks/bench_scaling.py

# Full-size InstructPix2Pix, random weights (built once into $(RUNS)/cache, ~4.3 GB): seconds and
# memory per compensated image, extrapolated to 100 steps; ~15-25 min on 2 cores. Not part of `bench`.
.PHONY: bench-diffusion-cost
bench-diffusion-cost: $(STAMP)
	$(PY) benchmarks/bench_diffusion_cost.py --model $(RUNS)/cache/p2p_fullsize_random --batch 2 --threads 1 \
	  --attempts 2 --max-wait 30

bench: bench-embed bench-graphcut bench-compensate bench-scaling bench-render

# The accuracy table: days of CPU for every row (hours on a GPU); resumable, run it row by row,
# e.g. make bench-accuracy ROWS="random dc3_select" IPC="10".
ROWS ?=
IPC ?=
bench-accuracy: $(STAMP)
	$(PY) benchmarks/accuracy_cifar10.py --train $(RUNS)/cifar10/train --val $(RUNS)/cifar10/val \
	  --teacher $(TEACHER) --work $(RUNS)/bench/acc $(if $(ROWS),--rows $(ROWS),) $(if $(IPC),--ipc $(IPC),)

# The Imagenette table (issue 23; benchmarks/accuracy_imagenette.py): ingests the data once with
# its class table, builds the preset's subset teacher once (no training); then as above, e.g.
# make bench-accuracy-imagenette ROWS="random herding dc3_select dc3_classical" IPC="1".
# INET_FEATURES=DIR reuses a features folder made with configs/imagenette.yaml's settings.
IMAGENETTE ?= ../shared/data/imagenette
INET_FEATURES ?=
$(RUNS)/imagenette/%/dataset.json: | $(STAMP)
	$(PY) -m dc3ray.cli ingest $(IMAGENETTE)/$* $(RUNS)/imagenette/$* --class-map $(IMAGENETTE)/classes.tsv

bench-accuracy-imagenette: $(STAMP) $(RUNS)/imagenette/train/dataset.json $(RUNS)/imagenette/val/dataset.json
	$(PY) benchmarks/accuracy_imagenette.py --train $(RUNS)/imagenette/train --val $(RUNS)/imagenette/val \
	  --work $(RUNS)/imagenette/acc $(if $(ROWS),--rows $(ROWS),) $(if $(IPC),--ipc $(IPC),) \
	  $(if $(INET_FEATURES),--features $(INET_FEATURES),)

bench-render: $(STAMP)
	$(PY) benchmarks/render.py

clean:
	rm -rf $(RUNS) .pytest_cache
