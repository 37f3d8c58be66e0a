# emorl set-up. `make demo` runs the main job on the embedded demo corpus; `make test` runs the tests.
# Both create the virtual environment .venv on first use (and again when pyproject.toml changes).
#
#   make demo                     # render the demo corpus, train, test, print UA / WA / F1, write reports/demo
#   make test                     # the whole test suite (what CI runs)
#   make TORCH="torch==2.9.1" test  # another torch version
#   make TORCH_INDEX= test        # torch from the default index (PyPI: the CUDA build) instead of the CPU wheels
#   make test-extras              # the s3prl / reference tests, in a second env .venv-extras (torch 2.8)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# PyTorch's CPU wheels (README: a CPU build by default); e.g. .../whl/cu128 for CUDA 12.8; empty, or
# unreachable: the default package index (PyPI: the CUDA build, a few GB).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The second environment: the s3prl and reference extras. s3prl 0.4.18 only imports with
# torch / torchaudio <= 2.8, so it gets an env of its own. torch comes from EXTRAS_TORCH_INDEX
# (PyTorch's CPU wheels; e.g. .../whl/cu128 for CUDA 12.8) or, where that index cannot be
# reached, from the default package index (PyPI: the CUDA build, a few GB).
EXTRAS_VENV        ?= .venv-extras
EXTRAS_TORCH       ?= torch==2.8.0 torchaudio==2.8.0 torchvision==0.23.0
EXTRAS_TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS_PY          := $(EXTRAS_VENV)/bin/python
EXTRAS_STAMP       := $(EXTRAS_VENV)/.installed

.PHONY: demo test test-extras install install-extras system-deps clean

demo: $(STAMP) system-deps
	$(VENV)/bin/emorl demo

test: $(STAMP) system-deps
	$(PY) -m pytest

# Only the tests marked s3prl, reference or torchvision run here (the whole suite is collected, the rest
# deselected). EMORL_EXTRAS=1: a missing or broken extra fails these tests instead of skipping them.
test-extras: $(EXTRAS_STAMP)
	EMORL_EXTRAS=1 $(EXTRAS_PY) -m pytest -m "s3prl or reference or torchvision"

install: $(STAMP)

install-extras: $(EXTRAS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH_INDEX)" ] && $(PY) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)/', timeout=15)" 2>/dev/null; then \
	  $(PY) -m pip install --quiet "$(TORCH)" --index-url $(TORCH_INDEX); \
	else \
	  echo "torch from the default index ($(if $(TORCH_INDEX),$(TORCH_INDEX) unreachable,TORCH_INDEX empty))"; \
	  $(PY) -m pip install --quiet "$(TORCH)"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(EXTRAS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(EXTRAS_VENV)
	$(EXTRAS_PY) -m pip install --quiet --upgrade pip
	if $(EXTRAS_PY) -c "import urllib.request as r; r.urlopen('$(EXTRAS_TORCH_INDEX)/', timeout=15)" 2>/dev/null; then \
	  $(EXTRAS_PY) -m pip install --quiet $(EXTRAS_TORCH) --index-url $(EXTRAS_TORCH_INDEX); \
	else \
	  echo "$(EXTRAS_TORCH_INDEX) unreachable: $(EXTRAS_TORCH) from the default index"; \
	  $(EXTRAS_PY) -m pip install --quiet $(EXTRAS_TORCH); \
	fi
	$(EXTRAS_PY) -m pip install --quiet -e ".[dev,s3prl,reference]"
	touch $(EXTRAS_STAMP)

# espeak-ng renders the demo corpus; pocketsphinx-testdata (LibriVox read speech, 16 kHz) and
# codec2-examples (female and male speech, 8 and 16 kHz) are the real recordings the tests marked
# real_speech read (tests/real_speech.py). Debian/Ubuntu packages; root or sudo needed once.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	[ -f /usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav ] || missing="$$missing pocketsphinx-testdata"; \
	[ -f /usr/share/codec2/raw/forig.raw ] || missing="$$missing codec2-examples"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (demo corpus rendering, real speech for the tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) $(EXTRAS_VENV) runs reports data/demo
