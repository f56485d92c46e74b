#!/usr/bin/env bash
# resnetc beside ONNX Runtime and PyTorch in one run, 2 threads, on the same cases:
# inference resnet20 b=128 and b=1, resnet50 b=1 and b=16; training steps resnet20 b=128 and
# resnet50 b=16; resnetc on both engines.
#   scripts/oracle_env.sh && scripts/bench_side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
BIN=target/release/resnetc
ITERS=${ITERS:-10}
for ENGINE in ${ENGINES:-reference jit}; do   # ENGINES="reference jit jit-all" for every JIT family
    echo "== resnetc ($ENGINE engine), 2 threads"
    $BIN bench models/resnet20.resnet --batch 128,1 --iters "$ITERS" --threads 2 --engine $ENGINE
    $BIN bench models/resnet50.resnet --batch 1,16 --iters "$ITERS" --threads 2 --engine $ENGINE
    $BIN bench models/resnet20.resnet --batch 128 --train --iters "$ITERS" --threads 2 --engine $ENGINE
    $BIN bench models/resnet50.resnet --batch 16 --train --iters 3 --threads 2 --engine $ENGINE
done
TRAIN_CASES=${TRAIN_CASES:-resnet20:128,resnet50:16} scripts/bench_peers.sh
