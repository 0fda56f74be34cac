# The two set-up commands of README.md:  make serve  and  make test.
# Needs only Python 3.11, make and apt-get; everything else is installed here.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1
SAMPLE ?= data/sample
SERVER_DATA ?= data/server
SYNTHETIC ?= 20
PIP    := $(BIN)/python -m pip --disable-pip-version-check
APT_TEST_PACKAGES := postgresql orthanc orthanc-dicomweb chromium nginx

.PHONY: serve test venv sample-data test-deps lint typecheck imports pytest bench clean web ohif

$(BIN)/.installed: pyproject.toml requirements/constraints.txt
	@echo "==> [1/4] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar off -q --upgrade pip setuptools wheel
	@echo "==> [2/4] installing torch 2.13.0 (CPU build)"
	$(PIP) install --progress-bar off -c requirements/constraints.txt torch==2.13.0
	@echo "==> [3/4] installing labelloop and its dependencies (the longest step: about a minute)"
	$(PIP) install --progress-bar off -c requirements/constraints.txt -e '.[dev,ray]'
	@echo "==> [4/4] installing the MONAI Label Python client (the tests drive it)"
	# The MONAI Label Python client (what 3D Slicer uses) drives the tests; its server
	# dependencies are not needed.
	$(PIP) install --progress-bar off -q --no-deps monailabel==0.8.5
	$(BIN)/python -c "import labelloop, torch" && touch $@

venv: $(BIN)/.installed

# .layout-2: the real cases live in $(SAMPLE)/other/ (sample-data moves them out of an older folder).
$(SAMPLE)/.layout-2: | $(BIN)/.installed
	$(BIN)/labelloop sample-data --out $(SAMPLE) --real --synthetic $(SYNTHETIC) \
	  || $(BIN)/labelloop sample-data --out $(SAMPLE) --synthetic $(SYNTHETIC)
	touch $@

sample-data: $(SAMPLE)/.layout-2

## The dashboard: web/ built by npm (npm ci, type check, esbuild) into the package; the server needs no npm.
WEB_BUILT := server/labelloop/web/static/index.html
WEB_SOURCES := $(wildcard web/src/*.* web/src/*/*.*) web/build.mjs web/tsconfig.json web/package.json web/package-lock.json

web: $(WEB_BUILT)

NEED_NPM = @command -v npm >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q nodejs npm; }

$(WEB_BUILT): $(WEB_SOURCES)
	$(NEED_NPM)
	cd web && npm ci --no-audit --no-fund --loglevel=error
	cd web && npm run --silent build

## OHIF's prebuilt viewer (the version pinned in web/ohif/ohif.json), rebased to /ohif/ in the package.
OHIF_BUILT := server/labelloop/web/ohif/.labelloop-ohif.json

ohif: $(OHIF_BUILT)

$(OHIF_BUILT): web/ohif/ohif.json web/ohif/install.py
	$(NEED_NPM)
	$(PYTHON) web/ohif/install.py server/labelloop/web/ohif

## Serve the sample data on http://$(HOST):$(PORT)
serve: venv sample-data web ohif
	@echo "==> serving $(SAMPLE) on http://$(HOST):$(PORT)/ (the API explorer: http://$(HOST):$(PORT)/docs)"
	$(BIN)/labelloop serve --app apps/radiology --studies $(SAMPLE) --data-dir $(SERVER_DATA) \
	  --host $(HOST) --port $(PORT)

## Debian packages the tests start for real (PostgreSQL, Orthanc, Chromium).
test-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

LINT_PATHS := $(wildcard server apps tests bench)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: venv
	$(BIN)/mypy server/labelloop apps/radiology

imports: venv
	$(BIN)/lint-imports

pytest: venv test-deps web ohif
	$(BIN)/python -m pytest

## Everything CI runs: lint, types, layer contracts, the whole test suite.
test: venv test-deps lint typecheck imports pytest

bench: venv sample-data
	$(BIN)/python bench/datastore.py
	$(BIN)/python bench/infer.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/active_learning.py
	$(BIN)/python bench/contention.py
	$(BIN)/python bench/small_requests.py --postgres

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
