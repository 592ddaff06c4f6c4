#!/usr/bin/env bash
# The GPU measurements of issue 6 in one run, on a machine with an NVIDIA GPU and neither a Rust
# toolchain nor a network: build here with `cargo xtask build-cuda`, carry this repository with
# target/cuda/release/{accnn,xtask} or their gzipped copies in target/cuda/carry, then run
# `bash xtask/gpu-check.sh` there. Everything it measures goes to $OUT (default /tmp/gpu-check):
# logs, bench JSON, configs, the latency table.
#
# VGG-16 (seed 42, 3x224x224): the original tool's vgg16-config.json ranks, then `--cost latency
# --ratio 2` on the device at batch 32, then `--align 32` by MACs at the same ratio; each timed
# against the original at batch 1, 32 and 128, and the config in f32 at batch 32.
# DEVICE, DTYPE, BATCHES, LATENCY_BATCH and F32_BATCH change what is run; with BIN=target/release
# DEVICE=cpu DTYPE=f32 BATCHES=1 LATENCY_BATCH=1 F32_BATCH=1 it rehearses on a CPU (about 5 minutes).
set -euo pipefail
BIN=${BIN:-target/cuda/release}
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
BATCHES=${BATCHES:-1,32,128}
LATENCY_BATCH=${LATENCY_BATCH:-32}
F32_BATCH=${F32_BATCH:-32}
if [ ! -x "$BIN/accnn" ] && [ -f target/cuda/carry/accnn.gz ]; then
  BIN=$(mktemp -d)
  for b in accnn xtask; do gunzip -c "target/cuda/carry/$b.gz" > "$BIN/$b"; chmod +x "$BIN/$b"; done
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# The models (2 GB) stay outside $OUT, which holds only what is worth bringing back.
M=${MODELS:-/tmp/gpu-check-models}
mkdir -p "$OUT" "$M"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
fi

"$BIN/xtask" gen-vgg --out "$M/vgg16" > "$OUT/gen.log"
"$BIN/accnn" -m "$M/vgg16" --config fixtures/vgg16-config.json --save-model "$M/cfg" \
  | tee "$OUT/accelerate-config.log"
"$BIN/accnn" -m "$M/vgg16" --ratio 2 --cost latency --device "$DEVICE" --dtype "$DTYPE" --batch "$LATENCY_BATCH" \
  --latency-cache "$OUT/latency.json" --config-out "$OUT/latency-x2.json" --save-model "$M/lat2" \
  | tee "$OUT/accelerate-latency.log"
"$BIN/accnn" -m "$M/vgg16" --ratio 2 --align 32 --config-out "$OUT/align32-x2.json" --save-model "$M/al2" \
  | tee "$OUT/accelerate-align.log"

for v in cfg lat2 al2; do
  "$BIN/accnn" bench -m "$M/vgg16" --vs "$M/$v" --device "$DEVICE" --dtype "$DTYPE" --batch "$BATCHES" \
    --rounds 20 --json "$OUT/bench-$v-$DTYPE.json" | tee "$OUT/bench-$v-$DTYPE.log"
done
"$BIN/accnn" bench -m "$M/vgg16" --vs "$M/cfg" --device "$DEVICE" --dtype f32 --batch "$F32_BATCH" --rounds 20 \
  --json "$OUT/bench-cfg-f32.json" | tee "$OUT/bench-cfg-f32.log"
echo "done: $OUT"
