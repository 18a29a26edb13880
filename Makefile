# The README's two commands are `make demo` (set up, then run the main job) and
# `make test` (set up, then run the whole test suite; this is what .ci/run calls).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch first and pinned: 2.13.0 is the CPU build this machine installs from a local file;
# an unpinned torch would pull a CUDA build of several GB. The package itself asks torch>=2.2.
TORCH  ?= torch==2.13.0

.PHONY: setup data browser demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,bm3d]"
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST through Debian's package, unless it is already there (or AELAB_DATA points at it)
data:
	@if [ -n "$$AELAB_DATA" ] && [ -f "$$AELAB_DATA/train-images-idx3-ubyte.gz" ]; then \
	  echo "Fashion-MNIST: $$AELAB_DATA"; \
	elif [ -f $(DATA)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $(DATA)"; \
	else \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: setup data
	$(BIN)/aelab reproduce

# Debian's chromium for the report test (driven by Playwright; never a browser Playwright downloads)
browser:
	@if [ -x /usr/bin/chromium ]; then \
	  echo "chromium: /usr/bin/chromium"; \
	else \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; \
	fi

# everything, the slow real-data tests and the headless-browser report test included
test: setup data browser
	AELAB_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m "slow or not slow"

# the quick default suite (CPU, offline, synthetic data)
test-fast: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
