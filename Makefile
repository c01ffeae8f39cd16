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

bench: $(STAMP)
	$(BIN)/mega-rt bench-model --threads 2

clean:
	rm -rf $(VENV) build *.egg-info

# The README pictures: a synthetic 3-person clip through `mega-rt video` with the demo weights and the
# clip's ground-truth boxes, once deterministic (overlay.png) and once with Q=8 samples (uncertainty.png).
README_CLIP := out/readme/clip
.PHONY: readme-images
readme-images: $(STAMP)
	mkdir -p out/readme docs/images
	$(BIN)/mega-rt synth $(README_CLIP).mp4 --people 3 --frames 16 --size 960x540 --seed 0
	$(BIN)/mega-rt video $(README_CLIP).mp4 --boxes $(README_CLIP).npz --out out/readme/overlay.mp4 --no-progress
	$(BIN)/mega-rt video $(README_CLIP).mp4 --boxes $(README_CLIP).npz --out out/readme/uncertainty.mp4 --samples 8 --no-progress
	$(BIN)/python docs/frame_png.py out/readme/overlay.mp4 docs/images/overlay.png --frame 12 --width 960
	$(BIN)/python docs/frame_png.py out/readme/uncertainty.mp4 docs/images/uncertainty.png --frame 12 --width 960
