#!/usr/bin/env bash
# Trains the small MEGA + Mesh-VQ-VAE of the synthetic demo on a CPU and, at the end, copies them into
# train/demo_weights/. About three hours on 2 cores as it stands (measured in session 4: tokenizer cycle 1
# 2400 steps ~49 min, cycle 2 2000 steps ~29 min, backbone heatmaps 1500 steps ~17 min, pre-training
# ~6 min, HMR 5000 steps ~65 min in bf16 autocast, evaluation ~2 min).
# The COMMITTED demo weights are NOT this recipe's output: this recipe (cycle-2 tokenizer, backbone stage,
# people with faces/necklines) reached det PVE 338 mm in session 4, worse than the committed 305 mm on the
# same test crops, so they were kept. They are reproduced by the script as of commit e193dc3:
#   git checkout e193dc3 -- train realtime configs && train/train_demo_weights.sh
# (that commit's synthetic people have plain clothes; its data folders must be regenerated too).
# Stages run as one process with 2 threads (HMR in bf16 autocast, which this CPU's avx512_bf16 runs twice
# as fast as fp32); pre-training as two single-threaded DDP processes. Outputs go to runs/ (ignored by git).
# Data written before 2026-11-21 (plain clothes) should be deleted first: the folders are made only when absent.
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

# the shipped (float16) weights, measured again: only when they beat the committed ones
# (compare runs/synthetic/eval/hmr.json with train/demo_weights/manifest.json first)
[ "${EXPORT_DEMO_WEIGHTS:-0}" = 1 ] || { echo "not exported: set EXPORT_DEMO_WEIGHTS=1 to replace train/demo_weights/"; exit 0; }
$BIN/python -m train.demo runs/synthetic
$BIN/mega-rt eval tokenizer --weights train/demo_weights/tokenizer.pt --synthetic-meshes 500 --seed 12345 \
    --json runs/synthetic/eval/tokenizer_demo_fp16.json
$BIN/mega-rt eval hmr --weights train/demo_weights/mega.pt --tokenizer train/demo_weights/tokenizer.pt \
    --crops runs/data/synth_test --samples 1,5,10 --mean-mesh-from runs/data/synth_train --mean-mesh-from runs/data/synth_train2 --json runs/synthetic/eval/hmr_demo_fp16.json
$BIN/python -m train.demo runs/synthetic runs/synthetic/eval
