# emorl set-up. `make demo` runs the main job on the embedded demo corpus; `make test` runs the tests.
# Both create the virtual environment .venv on first use (and again when pyproject.toml changes).
#
#   make demo                     # render the demo corpus, train, test, print UA / WA / F1
#   make test                     # the whole test suite (what CI runs)
#   make TORCH="torch==2.9.1" test  # another torch build (CUDA users: the one matching the driver)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install system-deps clean

demo: $(STAMP) system-deps
	$(VENV)/bin/emorl demo

test: $(STAMP) system-deps
	$(PY) -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# espeak-ng renders the demo corpus (Debian/Ubuntu package; root or sudo needed once).
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (needed to render the demo corpus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng >/dev/null; }

clean:
	rm -rf $(VENV) runs data/demo
