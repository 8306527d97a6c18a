# Everything a fresh machine needs: `make demo` runs the quickstart notebook, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint services bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/run_notebook.py examples/quickstart.ipynb

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# the real Slurm cluster and sshd the Slurm/SSH tests use (root only; without them those tests skip, or fail in CI)
services: $(VENV)/.installed
	@if [ "$$(id -u)" = 0 ]; then HETFLOW_PYTHON=$(PY) bash scripts/services.sh up; \
	else echo "not root: Slurm and SSH services not started, their tests will skip"; fi

test: lint services
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
