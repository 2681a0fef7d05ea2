# tengri: two commands on a fresh machine.
#   make demo   create .venv, install, fit the bundled mock catalog, write results + plots
#   make test   create .venv, install, run the test suite

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# First interpreter >= 3.12 that actually runs (pyenv shims may exist but fail).
PYTHON_BOOT := $(shell \
  for c in python3.13 python3.12 python3 \
           $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV) \
           $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV); do \
    if $$c -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then \
      echo $$c; break; fi; done)

.PHONY: demo test test-full venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON_BOOT)" ]; then \
	  echo "error: tengri needs Python >= 3.12 (none found on PATH or under pyenv)"; exit 1; fi
	@echo "using $(PYTHON_BOOT) ($$($(PYTHON_BOOT) --version))"
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tengri.demo --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q

# also the full-size end-to-end tests (marked full) that exceed the CI budget
test-full: $(STAMP)
	TENGRI_FULL_TESTS=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) demo_output
