#!/usr/bin/env bash
# Reproduces train/demo_weights/ (the small MEGA + Mesh-VQ-VAE trained on synthetic data) on a CPU.
# About an hour on 2 cores: synthetic crops ~5 min, tokenizer ~18 min, pre-training ~15 min (most of it
# tokenizing the meshes once), HMR ~25 min, evaluation ~3 min. The mesh stages run as two single-threaded
# DDP processes (gloo), which on a shared 2-core machine is faster and steadier than one process with two
# threads; the image stage runs as one single-threaded process (its CPU DDP steps were erratic there).
# Outputs go to runs/ (ignored by git); the last step copies the weights into train/demo_weights/.
set -euo pipefail
cd "$(dirname "$0")/.."
export MEGA_RT_ASSETS="${MEGA_RT_ASSETS:-$(cd .. && pwd)/shared/assets}"
export OMP_NUM_THREADS=1
BIN=.venv/bin
TRAIN="$BIN/torchrun --standalone --nproc_per_node 2 -m realtime.cli train"

[ -f runs/data/synth_test/index.json ] || $BIN/mega-rt synth --dataset runs/data/synth_test --samples 300 --seed 2
[ -f runs/data/synth_train/index.json ] || $BIN/mega-rt synth --dataset runs/data/synth_train --samples 4000 --seed 1

$TRAIN tokenizer --config configs/train_tokenizer_synthetic.yaml --no-progress
$TRAIN pretrain --config configs/train_pretrain_synthetic.yaml --no-progress
$BIN/mega-rt train hmr --config configs/train_hmr_synthetic.yaml --no-progress

mkdir -p runs/synthetic/eval
$BIN/mega-rt eval tokenizer --weights runs/synthetic/tokenizer/final.pt --synthetic-meshes 500 --seed 12345 \
    --mean-mesh-from runs/data/synth_train --json runs/synthetic/eval/tokenizer.json
$BIN/mega-rt eval hmr --weights runs/synthetic/hmr/final.pt --tokenizer runs/synthetic/tokenizer/final.pt \
    --crops runs/data/synth_test --samples 1,5,10 --mean-mesh-from runs/data/synth_train --json runs/synthetic/eval/hmr.json

# the shipped (float16) weights, measured again
$BIN/python -m train.demo runs/synthetic
$BIN/mega-rt eval tokenizer --weights train/demo_weights/tokenizer.pt --synthetic-meshes 500 --seed 12345 \
    --json runs/synthetic/eval/tokenizer_demo_fp16.json
$BIN/mega-rt eval hmr --weights train/demo_weights/mega.pt --tokenizer train/demo_weights/tokenizer.pt \
    --crops runs/data/synth_test --samples 1,5,10 --mean-mesh-from runs/data/synth_train --json runs/synthetic/eval/hmr_demo_fp16.json
$BIN/python -m train.demo runs/synthetic runs/synthetic/eval
