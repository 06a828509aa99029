# medtfx: `make run` runs the pipeline locally, `make test` runs the test suite.
# Both build .venv from requirements.lock first, and only when it is missing or stale.

PYTHON ?= python3.11
VENV   := .venv
UV_VERSION := 0.13.9
UV     := $(VENV)/uv/bin/uv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

# Pins that tfx 1.21.0's own metadata does not allow: the 1.21 wheels of ml-metadata and
# tensorflow-data-validation are not published for cp311, and tensorflow-hub 0.15 (the
# version tfx pins) does not import on TF 2.21. The rest bound what those pins can run with.
OVERRIDES := ml-metadata==1.17.1 tensorflow-data-validation==1.16.1 tensorflow-hub==0.16.1 \
             tfx-bsl==1.21.0 tensorflow==2.21.0 tensorflow-metadata==1.21.0 \
             'pyarrow>=15,<19' 'protobuf>=6,<7' 'pandas>=2.0,<3'

SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test test-fast bench venv lock clean-venv browser capabilities

run: $(STAMP)
	$(VENV)/bin/medtfx run $(ARGS)

# Modules run on TEST_WORKERS parallel workers (pytest-xdist; a module's tests stay on one
# worker, so they share its fixtures): much of a pipeline run is single-threaded Python.
# xdist starts the modules with the most tests first, so the fast tests share the cores
# with the end-to-end runs (measured: 30 min 45 s against 36 min 4 s with slow modules first).
# --durations: the 15 slowest tests at the end of every run, so that drift shows.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadscope --durations=15
test: $(STAMP) browser capabilities
	$(PYTEST) $(ARGS)

# Debian's Chromium and ChromeDriver: the report test renders the HTML report in them.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# util-linux's unshare and the mount command: the offline compile runs in `unshare -n`, the
# full-disk push fills a tmpfs the test mounts (both need root; under CI=true, where .ci/run
# runs as root, a test that cannot use them fails instead of skipping).
capabilities:
	@command -v unshare >/dev/null && command -v mount >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux mount; }

# The fast tests alone: everything but the end-to-end pipeline runs.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

# Each stage's speed and memory against its floor, as a table and work/bench.json
# (tests/benchmarks/bench.py; 6 minutes on 2 quiet cores; `ARGS=--quick` checks that it runs),
# then the tables of docs/performance.md rendered from it (tests/benchmarks/doc_tables.py;
# a --quick run leaves them as they are).
# `ARGS=--scale` [--per-shard N]: the siim-isic-512 pipeline on a release shaped like the
# 2020 one at two sizes, B6's Evaluator and estimates for the real releases (under an hour
# the first time; the releases stay in work/bench-data). A line per step; library output
# in work/bench/bench.log.
bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m tests.benchmarks.bench $(ARGS)
	$(PY) -m tests.benchmarks.doc_tables

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; medtfx needs Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --target $(VENV)/uv uv==$(UV_VERSION)
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -c "import pipeline.compat as c; print('wrote', c.write_pth())"
	@touch $@

# Regenerate requirements.lock from setup.py and the overrides above (needs the registry).
# uv keeps the versions already locked (it prefers those of the file it writes over), so
# only what setup.py or the overrides change moves; `make lock ARGS=--upgrade` moves all.
lock:
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --target $(VENV)/uv uv==$(UV_VERSION); }
	printf '%s\n' $(OVERRIDES) > $(VENV)/overrides.txt
	printf 'pip\n' > $(VENV)/extra.in
	cp requirements.lock $(VENV)/compiled.lock
	$(UV) pip compile setup.py $(VENV)/extra.in --extra test --extra dask --override $(VENV)/overrides.txt $(ARGS) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --no-header --annotation-style line -o $(VENV)/compiled.lock
	{ echo '# Exact environment of medtfx (Python 3.11, linux x86_64). Regenerate with `make lock`;'; \
	  echo '# `make venv` installs exactly this set with uv pip sync --require-hashes.'; \
	  sed -e '/^ml-metadata==/i # OVERRIDE: tfx 1.21.0 requires ml-metadata>=1.21, never published for cp311; 1.17.1 runs the pipeline (tests/test_data_validation.py).' \
	      -e '/^tensorflow-data-validation==/i # OVERRIDE: tfx 1.21.0 requires TFDV>=1.21, never published for cp311; 1.16.1 runs StatisticsGen, SchemaGen and ExampleValidator (tests/test_data_validation.py).' \
	      -e '/^tensorflow-hub==/i # OVERRIDE: tfx 1.21.0 pins tensorflow-hub<0.16, but 0.15 does not import on TF 2.21 (tf.compat.v1.estimator is gone).' \
	      $(VENV)/compiled.lock; } > requirements.lock

clean-venv:
	rm -rf $(VENV)
