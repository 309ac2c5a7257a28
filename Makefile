# firebox: `make demo` runs the whole system on the embedded default; `make test` runs every test.
# Both create .venv and install what is missing first (Python packages; Debian tools when root).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)
ARGS   ?=

.PHONY: demo test setup system-tools node-assets bench clean

setup: $(STAMP) system-tools node-assets

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "firebox needs Python 3.11+"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

system-tools:
	@bash scripts/system-tools.sh

# The console's map library (Leaflet, pinned in package-lock.json), served from node_modules.
node-assets:
	@if ! command -v npm >/dev/null 2>&1; then echo "npm not found: the console's map needs it (apt-get install -y npm; then make setup)"; \
	elif [ ! node_modules/.package-lock.json -nt package-lock.json ]; then npm ci --no-audit --no-fund --silent; fi

demo: setup
	$(VENV)/bin/firebox demo $(ARGS)

test: setup
	$(VENV)/bin/pytest -q $(ARGS)

bench: setup
	$(PY) bench/ecrf.py
	$(PY) bench/esrp.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache var
