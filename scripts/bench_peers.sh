#!/usr/bin/env bash
# Peer baselines on this machine, 2 threads: ONNX Runtime and PyTorch eager inference on
# resnet20:128, resnet20:1, resnet50:1, resnet50:16 and a PyTorch training step on resnet20:128,
# using the oracle's bench_ort.py / bench_torch.py (weights from models.make_weights; timing
# only, so the weight values do not matter). Prints every row, then a table of medians with the
# `others=` load (cores used by other processes meanwhile; above 0.15 the figure is polluted).
#
#   scripts/oracle_env.sh && scripts/bench_peers.sh
#   BENCH_RETRIES=2 BENCH_WAIT_IDLE=30 scripts/bench_peers.sh   # retry while the machine is busy
#   MIN_TIME=2 scripts/bench_peers.sh                            # quicker, noisier
set -euo pipefail
VENV=${VENV:-$HOME/.cache/resnetc-oracle}
ORACLE_DIR=${ORACLE_DIR:-/work/shared/oracle}
PY="$VENV/bin/python"
CASES=${CASES:-resnet20:128,resnet20:1,resnet50:1,resnet50:16}
TRAIN_CASES=${TRAIN_CASES:-resnet20:128}
MIN_TIME=${MIN_TIME:-4}
# PEERS_JSON=file keeps the rows (one JSON object per line) for scripts/bench_side_by_side.sh.
if [ -n "${PEERS_JSON:-}" ]; then
  JSON=$PEERS_JSON
  : > "$JSON"
else
  JSON=$(mktemp /tmp/bench_peers.XXXXXX.jsonl)
  trap 'rm -f "$JSON"' EXIT
fi
cd "$ORACLE_DIR"   # the bench scripts import models/benchutil from their own folder
echo "== onnxruntime inference"
"$PY" bench_ort.py --cases "$CASES" --threads 2 --min-time "$MIN_TIME" --json "$JSON"
echo "== torch inference (eager, nchw and channels-last)"
"$PY" bench_torch.py --only infer --infer-cases "$CASES" --threads 2 --min-time "$MIN_TIME" --json "$JSON"
echo "== torch training step (eager, nchw and channels-last)"
"$PY" bench_torch.py --only train --train-cases "$TRAIN_CASES" --threads 2 --min-time "$MIN_TIME" --json "$JSON"
echo "== medians, 2 threads"
"$PY" - "$JSON" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'tool':22s} {'model':9s} {'batch':>5s} {'mode':14s} {'median ms':>10s} {'img/s':>8s} {'others':>6s}")
for r in rows:
    ms = r["median"] * 1e3
    flag = "  busy" if r["others"] > 0.15 else ""
    print(f"{r['tool'] + '-' + r['version']:22s} {r['model']:9s} {r['batch']:5d} {r['mode']:14s} "
          f"{ms:10.2f} {r['batch'] / r['median']:8.1f} {r['others']:6.2f}{flag}")
PY
