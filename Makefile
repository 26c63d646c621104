# Two entry points for a fresh machine with Python >= 3.11 and make:
#   make demo   -> .venv with flipguard, then `flipguard demo`
#   make test   -> .venv with flipguard[test], then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# compileall: an editable install writes no bytecode, and where PYTHONDONTWRITEBYTECODE is set
# (as on these machines) every process would compile flipguard's sources again (0.2 s per
# process and per Ray worker); a wheel install compiles them once, and so does this.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q src/flipguard
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m compileall -q src/flipguard
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/flipguard demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python -m compileall -q src/flipguard
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) flipguard-demo build *.egg-info src/*.egg-info
