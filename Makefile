# RestoreKit developer tasks. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.restorekit-installed

.PHONY: setup demo test test-fast wheel-check lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-reference.txt requirements-reference-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q -r requirements-reference-deps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -r requirements-reference.txt
	touch $(STAMP)

demo: setup
	$(VENV)/bin/restorekit demo

test: setup  # what CI runs: lint, every test, then the wheel built and used from a clean venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile
	DEV_PYTHON=$(PY) bash .ci/check-wheel

test-fast: setup  # the quick loop: lint and every test not marked slow, on both cores
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

wheel-check: setup
	DEV_PYTHON=$(PY) bash .ci/check-wheel

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup  # short runs of every benchmark; each script's --help shows the full runs
	$(PY) bench/bench_upscale.py --quick
	$(PY) bench/bench_faces.py --skip-e2e
	$(PY) bench/bench_degrade.py --batches 2
	$(PY) bench/interpolate_speed.py --repeat 2
	$(PY) bench/bench_zssr.py --quick
	$(PY) bench/bench_video.py --frames 8 --scales 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
