# The two commands a new user runs: `make demo` (the whole study on synthetic data) and
# `make test`. Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/synth-demo
DEMO_OUT ?= studies/demo

.PHONY: setup test demo bench calibrate clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# pytest-xdist: one worker per core; --dist loadfile keeps a test file on one worker, so that
# its module fixtures (a trained study, a torchrun launch) are built once.
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadfile

demo: setup
	$(BIN)/resnorm study --synthetic $(DEMO_DATA) --plan configs/demo.yaml --out $(DEMO_OUT) --jobs 2

bench: setup
	$(BIN)/python benchmarks/norm_speed.py

# The calibration table of the verdicts (benchmarks/RESULTS.md, issue 39): 5,000 simulated
# studies per scenario (about 10 minutes on one core), then the suite's own checks at 2,000.
calibrate: setup
	$(BIN)/python benchmarks/calibration.py --studies 5000
	RESNORM_SUITE_STUDIES=2000 $(BIN)/python -m pytest -q -s tests/test_calibration.py

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DATA)
