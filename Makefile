# `make test` and `make demo` do the whole set-up themselves (see scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastdiff-installed
PYTEST_ARGS ?=
# Two workers on the 2-core CI machine; each keeps torch to one thread.
PYTEST_WORKERS ?= 2

.PHONY: setup test test-slow demo bench lint clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h) scripts/setup_env.sh
	VENV=$(VENV) ./scripts/setup_env.sh
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m fastdiff demo

bench: $(STAMP)
	$(PY) -m fastdiff bench --quick

lint: $(STAMP)
	$(PY) -m ruff check $(wildcard fastdiff tests benchmarks)
	$(PY) -m ruff format --check $(wildcard fastdiff tests benchmarks)

clean:
	rm -rf build *.egg-info fastdiff/*.so $(VENV)
