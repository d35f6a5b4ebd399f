# Two commands do all the set-up on a fresh machine:
#   make demo   -- the seed's comparison (zero/random/xavier/he), offline, on the bundled digits set
#   make test   -- the whole test suite
# TORCH pins the torch/torchvision pair that this project's machines carry (the test extras timm and
# transformers need torchvision, and a torchvision wheel only imports beside the torch it was built for);
# override it elsewhere, e.g. `make test TORCH="torch torchvision"` (the package itself only needs torch>=2.2).
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv browser clean

$(BIN)/initlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

venv: $(BIN)/initlab

demo: venv
	$(BIN)/initlab compare --dataset digits --seeds 3 --out runs/demo --overwrite --report

# The report browser test drives Debian's headless chromium; as root on a machine with apt, install it.
browser:
	@if ! { command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromedriver ]; } \
	    && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	    || echo "warning: could not install chromium and chromium-driver (the browser test will fail)"; fi

test: venv browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
