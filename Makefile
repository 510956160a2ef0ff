# The two commands of the quickstart are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run test lint bench clean control-plane-up control-plane-down

venv: $(VENV)/.installed

# A plain (non-editable) install: twistd finds plugins only in
# twisted/plugins directories on sys.path, which an editable install hides.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '.[test]'
	touch $@
