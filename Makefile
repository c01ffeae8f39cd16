# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs mega-rt, runs the main job
#   make test   -> creates .venv, installs mega-rt, runs the default (CPU) test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := render,onnx,detect,smpl,anim,view,ray,test,app
export MEGA_RT_ASSETS ?= $(abspath ../shared/assets)

.PHONY: setup demo test test-all test-blender lint format bench gpu-prep gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: a synthetic 2-person clip (with ground truth) through the whole pipeline. Runs on the
# demo weights in train/demo_weights/ when present, else on random weights (the meshes then mean nothing).
DEMO_WEIGHTS := $(if $(wildcard train/demo_weights/*.pt),--weights demo,--random-weights)
demo: $(STAMP)
	mkdir -p out
	test -f "$(MEGA_RT_ASSETS)/meshconv/_pool0.npy" || $(BIN)/mega-rt fetch   # first run without ../shared: the public assets into the cache
	$(BIN)/mega-rt info
	$(BIN)/mega-rt synth out/demo_clip.mp4 --people 2 --frames 40 --seed 0
	$(BIN)/mega-rt video out/demo_clip.mp4 --boxes out/demo_clip.npz --out out/demo_overlay.mp4 --results out/demo_results.npz --no-progress $(DEMO_WEIGHTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Blender proof of the animation files: bpy (Blender as a module, Python 3.11 only, its own numpy pin)
# lives in .venv-blender; the files are written with .venv, then imported with bpy and compared.
BPY := bpy==5.0.1 numpy==1.26.4 pytest==9.2.0
BLENDER_PY ?= python3.11
BLENDER_FILES := out/blender-files
.venv-blender/.installed:
	$(BLENDER_PY) -m venv .venv-blender
	.venv-blender/bin/python -m pip install -q $(BPY)
	touch $@
test-blender: $(STAMP) .venv-blender/.installed
	rm -rf $(BLENDER_FILES)
	$(BIN)/python -m tests.blender.make_files $(BLENDER_FILES)
	MEGA_RT_BLENDER_FILES=$(abspath $(BLENDER_FILES)) .venv-blender/bin/python -m pytest -q -s -p no:cacheprovider --noconftest -m blender tests/blender

# ruff (configured in pyproject.toml): lint and formatting are checked by CI; `make format` applies both
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The PyTorch model as the pipeline serves it; e.g. `make bench BENCH_ARGS="--config mega_tiny --batch 1 --repeats 1"`
BENCH_ARGS ?= --threads 2
bench: $(STAMP)
	$(BIN)/mega-rt bench model $(BENCH_ARGS)

# The GPU check (realtime/gpu_check.py) for a machine with one NVIDIA GPU, its own torch and no internet.
# Here, where the package registry and Debian's archive are reachable: put what that machine lacks beside
# the checkout (wheels for Python 3.10-3.13, the assets, the EGL/GL loader packages), then copy or carry
# the checkout with .gpu/ and .gl/ and run `make gpu-check` there (OUT=folder for the results).
GPU_WHEELS := moderngl==5.13.0 glcontext==3.1.0 click==8.5.1 PyYAML==6.0.3 tqdm==4.70.1
GPU_AV := av==18.1.0
gpu-prep: $(STAMP)
	mkdir -p .gpu/wheels .gpu/assets .gl /tmp/amd64/partial
	for v in 3.10 3.11 3.12 3.13; do $(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $$v \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/wheels $(GPU_WHEELS); done
	# PyAV (video I/O) bundles FFmpeg: one abi3 wheel (~36 MB, CPython 3.11+) keeps .gpu/ within one carry
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/wheels $(GPU_AV)
	cp -r $(MEGA_RT_ASSETS)/meshconv $(MEGA_RT_ASSETS)/segmentation .gpu/assets/
	o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'; apt-get $$o update -q && \
		cd .gl && apt-get $$o download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2
	du -sh .gpu .gl

gpu-check:
	if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$$f" /; done; ldconfig; fi
	PYTHONUNBUFFERED=1 $(PY) -m realtime.gpu_check --out "$${OUT:-runs/gpu-check}" --deadline "$${GPU_CHECK_DEADLINE:-540}"

clean:
	rm -rf $(VENV) build *.egg-info

# The README pictures: a synthetic 3-person clip through `mega-rt video` with the demo weights and the
# clip's ground-truth boxes, once deterministic (overlay.png) and once with Q=8 samples (uncertainty.png).
README_CLIP := out/readme/clip
.PHONY: readme-images
readme-images: $(STAMP)
	mkdir -p out/readme docs/images
	$(BIN)/mega-rt synth $(README_CLIP).mp4 --people 3 --frames 16 --size 960x540 --seed 0
	$(BIN)/mega-rt video $(README_CLIP).mp4 --boxes $(README_CLIP).npz --out out/readme/overlay.mp4 --weights demo --no-progress
	$(BIN)/mega-rt video $(README_CLIP).mp4 --boxes $(README_CLIP).npz --out out/readme/uncertainty.mp4 --weights demo --samples 8 --no-progress
	$(BIN)/python docs/frame_png.py out/readme/overlay.mp4 docs/images/overlay.png --frame 12 --width 960
	$(BIN)/python docs/frame_png.py out/readme/uncertainty.mp4 docs/images/uncertainty.png --frame 12 --width 960
