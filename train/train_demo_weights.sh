#!/usr/bin/env bash
# Reproduces train/demo_weights/ (the small MEGA + Mesh-VQ-VAE trained on synthetic data) on a CPU.
# About two hours on 2 cores (the committed run: tokenizer ~49 min, pre-training ~6 min, HMR ~70 min):
# synthetic crops, tokenizer, pre-training (most of it tokenizing the meshes once), HMR, evaluation.
# The tokenizer and HMR stages run as one process with 2 threads (HMR in bf16 autocast, which this
# CPU's avx512_bf16 runs twice as fast as fp32); pre-training as two single-threaded DDP processes.
# Outputs go to runs/ (ignored by git); the last step copies the weights into train/demo_weights/.
set -euo pipefail
cd "$(dirname "$0")/.."
export MEGA_RT_ASSETS="${MEGA_RT_ASSETS:-$(cd .. && pwd)/shared/assets}"
export OMP_NUM_THREADS=1
BIN=.venv/bin
TRAIN="$BIN/torchrun --standalone --nproc_per_node 2 -m realtime.cli train"

[ -f runs/data/synth_test/index.json ] || $BIN/mega-rt synth --dataset runs/data/synth_test --samples 300 --seed 2
[ -f runs/data/synth_train/index.json ] || $BIN/mega-rt synth --dataset runs/data/synth_train --samples 4000 --seed 1
[ -f runs/data/synth_train2/index.json ] || $BIN/mega-rt synth --dataset runs/data/synth_train2 --samples 4000 --seed 3

OMP_NUM_THREADS=2 $BIN/mega-rt train tokenizer --config configs/train_tokenizer_synthetic.yaml --no-progress
OMP_NUM_THREADS=2 $BIN/mega-rt train tokenizer --config configs/train_tokenizer_synthetic_cycle2.yaml --no-progress
OMP_NUM_THREADS=2 $BIN/mega-rt train backbone --config configs/train_backbone_synthetic.yaml --no-progress
$TRAIN pretrain --config configs/train_pretrain_synthetic.yaml --no-progress
OMP_NUM_THREADS=2 $BIN/mega-rt train hmr --config configs/train_hmr_synthetic.yaml --no-progress

mkdir -p runs/synthetic/eval
$BIN/mega-rt eval tokenizer --weights runs/synthetic/tokenizer/final.pt --synthetic-meshes 500 --seed 12345 \
    --mean-mesh-from runs/data/synth_train --mean-mesh-from runs/data/synth_train2 --json runs/synthetic/eval/tokenizer.json
$BIN/mega-rt eval hmr --weights runs/synthetic/hmr/final.pt --tokenizer runs/synthetic/tokenizer/final.pt \
    --crops runs/data/synth_test --samples 1,5,10 --mean-mesh-from runs/data/synth_train --mean-mesh-from runs/data/synth_train2 --json runs/synthetic/eval/hmr.json

# the shipped (float16) weights, measured again
$BIN/python -m train.demo runs/synthetic
$BIN/mega-rt eval tokenizer --weights train/demo_weights/tokenizer.pt --synthetic-meshes 500 --seed 12345 \
    --json runs/synthetic/eval/tokenizer_demo_fp16.json
$BIN/mega-rt eval hmr --weights train/demo_weights/mega.pt --tokenizer train/demo_weights/tokenizer.pt \
    --crops runs/data/synth_test --samples 1,5,10 --mean-mesh-from runs/data/synth_train --mean-mesh-from runs/data/synth_train2 --json runs/synthetic/eval/hmr_demo_fp16.json
$BIN/python -m train.demo runs/synthetic runs/synthetic/eval
