# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs mega-rt, runs the main job
#   make test   -> creates .venv, installs mega-rt, runs the default (CPU) test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := render,onnx,detect,smpl,test
export MEGA_RT_ASSETS ?= $(abspath ../shared/assets)

.PHONY: setup demo test test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/mega-rt info

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/mega-rt bench-model --threads 2

clean:
	rm -rf $(VENV) build *.egg-info
