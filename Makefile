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

# The main job: a synthetic 2-person clip (with ground truth) through the whole pipeline. Runs on the
# demo weights in train/demo_weights/ when present, else on random weights (the meshes then mean nothing).
DEMO_WEIGHTS := $(if $(wildcard train/demo_weights/*.pt),,--random-weights)
demo: $(STAMP)
	mkdir -p out
	$(BIN)/mega-rt info
	$(BIN)/mega-rt synth out/demo_clip.mp4 --people 2 --frames 40 --seed 0
	$(BIN)/mega-rt video out/demo_clip.mp4 --boxes out/demo_clip.npz --out out/demo_overlay.mp4 --results out/demo_results.npz --no-progress $(DEMO_WEIGHTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The PyTorch model as the pipeline serves it; e.g. `make bench BENCH_ARGS="--config mega_tiny --batch 1 --repeats 1"`
BENCH_ARGS ?= --threads 2
bench: $(STAMP)
	$(BIN)/mega-rt bench model $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
