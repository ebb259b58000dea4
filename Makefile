# Two entry points: `make demo` (install + end-to-end demo) and `make test` (install + pytest).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export nnUNet_def_n_proc ?= 1

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q ".[test]"
	touch $@

# Re-installs our package (not its dependencies) so the venv runs the checkout's code.
install: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --force-reinstall .

# Two pytest-xdist workers (one per core of the 2-core machines), whole files per worker, slowest first.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/pytest -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

demo: install
	PATH=$(abspath $(VENV))/bin:$$PATH bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo_output
