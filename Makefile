# Two commands do all the set-up on a fresh machine:
#   make demo   -- the seed's comparison (zero/random/xavier/he), offline, on the bundled digits set
#   make test   -- the whole test suite
# TORCH pins the CPU wheel that this project's machines carry; override it elsewhere,
# e.g. `make test TORCH=torch` (the package itself only needs torch>=2.2).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/initlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

venv: $(BIN)/initlab

demo: venv
	$(BIN)/initlab compare --dataset digits --seeds 3 --out runs/demo --overwrite --report

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
