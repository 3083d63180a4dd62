PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: demo test install clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdpose demo --output demo_output

test: $(STAMP)
	# --max-worker-restart 0: a worker killed by a native crash ends the run with a clear error
	# (xdist's restart after a crash was seen to hang the run until CI's time limit)
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --max-worker-restart 0 -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/model_zoo.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) demo_output build *.egg-info
