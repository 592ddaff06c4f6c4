#!/usr/bin/env bash
# The GPU measurements of issue 6 in one run, on a machine with an NVIDIA GPU and neither a Rust
# toolchain nor a network: build here with `cargo xtask build-cuda`, carry this repository with
# target/cuda/release/{accnn,xtask} or their gzipped copies in target/cuda/carry, then run
# `bash xtask/gpu-check.sh` there. Everything it measures goes to $OUT (default /tmp/gpu-check):
# logs, bench JSON, configs.
#
# VGG-16 (seed 42, 3x224x224): the original tool's vgg16-config.json ranks, then `--cost latency
# --ratio 2` on the GPU in bf16 at batch 32, then `--align 32` by MACs at the same ratio; each timed
# against the original in bf16 at batch 1, 32 and 128, and in f32 at batch 32.
set -euo pipefail
BIN=${BIN:-target/cuda/release}
if [ ! -x "$BIN/accnn" ] && [ -f target/cuda/carry/accnn.gz ]; then
  BIN=$(mktemp -d)
  for b in accnn xtask; do gunzip -c "target/cuda/carry/$b.gz" > "$BIN/$b"; chmod +x "$BIN/$b"; done
fi
OUT=${OUT:-/tmp/gpu-check}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT/models"
M=$OUT/models
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

"$BIN/xtask" gen-vgg --out "$M/vgg16" > "$OUT/gen.log"
"$BIN/accnn" -m "$M/vgg16" --config fixtures/vgg16-config.json --save-model "$M/cfg" \
  | tee "$OUT/accelerate-config.log"
"$BIN/accnn" -m "$M/vgg16" --ratio 2 --cost latency --device cuda --dtype bf16 --batch 32 \
  --latency-cache "$OUT/latency.json" --config-out "$OUT/latency-x2.json" --save-model "$M/lat2" \
  | tee "$OUT/accelerate-latency.log"
"$BIN/accnn" -m "$M/vgg16" --ratio 2 --align 32 --config-out "$OUT/align32-x2.json" --save-model "$M/al2" \
  | tee "$OUT/accelerate-align.log"

for v in cfg lat2 al2; do
  "$BIN/accnn" bench -m "$M/vgg16" --vs "$M/$v" --device cuda --dtype bf16 --batch 1,32,128 --rounds 20 \
    --json "$OUT/bench-$v-bf16.json" | tee "$OUT/bench-$v-bf16.log"
done
"$BIN/accnn" bench -m "$M/vgg16" --vs "$M/cfg" --device cuda --dtype f32 --batch 32 --rounds 20 \
  --json "$OUT/bench-cfg-f32.json" | tee "$OUT/bench-cfg-f32.log"
echo "done: $OUT"
