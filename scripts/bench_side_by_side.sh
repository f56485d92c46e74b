#!/usr/bin/env bash
# resnetc beside ONNX Runtime and PyTorch in one run, 2 threads, on issue 6's cases:
# inference resnet20 b=128 and b=1, resnet50 b=1 and b=16; training steps resnet20 b=128 and
# resnet50 b=16; resnetc on both engines. Prints each tool's own rows, then one table of
# medians with the targets: resnetc's JIT against ORT (inference) and PyTorch's best layout.
#   scripts/oracle_env.sh && scripts/bench_side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
BIN=target/release/resnetc
ITERS=${ITERS:-10}
OURS=$(mktemp /tmp/bench_ours.XXXXXX.jsonl)
PEERS=$(mktemp /tmp/bench_peers.XXXXXX.jsonl)
trap 'rm -f "$OURS" "$PEERS"' EXIT
for ENGINE in ${ENGINES:-reference jit}; do   # ENGINES="reference jit jit-all" for every JIT family
    echo "== resnetc ($ENGINE engine), 2 threads"
    for args in "resnet20 --batch 128,1 --iters $ITERS" "resnet50 --batch 1,16 --iters $ITERS" \
        "resnet20 --batch 128 --train --iters $ITERS" "resnet50 --batch 16 --train --iters 3"; do
        set -- $args
        model=$1
        shift
        # The human table on the terminal, the JSON rows for the summary.
        $BIN bench "models/$model.resnet" "$@" --threads 2 --engine "$ENGINE"
        $BIN bench "models/$model.resnet" "$@" --threads 2 --engine "$ENGINE" --json |
            python3 -c 'import json,sys
mode = "train" if "--train" in sys.argv[3:] else "infer"
last = [l for l in sys.stdin if l.startswith("{")][-1]
for r in json.loads(last)["bench"]:
    r.update(model=sys.argv[1], mode=mode, engine=sys.argv[2])
    print(json.dumps(r))' "$model" "$ENGINE" "$@" >> "$OURS"
    done
done
echo "== the JIT's 3x3 conv micro-kernel alone"
MICRO=$($BIN bench models/resnet20.resnet --iters 1 --microkernel --json | grep '^{"microkernel"')
echo "$MICRO"
PEERS_JSON=$PEERS TRAIN_CASES=${TRAIN_CASES:-resnet20:128,resnet50:16} scripts/bench_peers.sh
echo "== one table: medians in ms, 2 threads (resnetc measured twice above: the table uses the --json run)"
python3 - "$OURS" "$PEERS" "$MICRO" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
peers = [json.loads(l) for l in open(sys.argv[2])]
CASES = [("resnet20", 128, "infer"), ("resnet20", 1, "infer"), ("resnet50", 1, "infer"),
         ("resnet50", 16, "infer"), ("resnet20", 128, "train"), ("resnet50", 16, "train")]
# Issue 6's targets: (peer, the largest ratio resnetc JIT / peer that meets it).
TARGETS = {("resnet20", 128, "infer"): ("ORT", 0.83), ("resnet20", 1, "infer"): ("ORT", 1.0),
           ("resnet50", 1, "infer"): ("torch best", 1.0), ("resnet50", 16, "infer"): ("ORT", 1.0),
           ("resnet20", 128, "train"): ("torch best", 0.67), ("resnet50", 16, "train"): ("torch best", 1.0)}
def ours_ms(model, batch, mode, engine):
    m = [r["median_ms"] for r in ours
         if (r["model"], r["batch"], r["mode"], r["engine"]) == (model, batch, mode, engine)]
    return m[0] if m else None
def peer_ms(model, batch, mode, tool, layout=None):
    m = [r["median"] * 1e3 for r in peers
         if (r["model"], r["batch"], r["tool"]) == (model, batch, tool)
         and r["mode"].startswith(mode) and (layout is None or layout in r["mode"])]
    return min(m) if m else None
fmt = lambda v: f"{v:9.1f}" if v is not None else f"{'-':>9s}"
print(f"| {'model':8s} | {'batch':>5s} | {'mode':5s} | {'reference':>9s} | {'jit':>9s} | {'ORT':>9s} | "
      f"{'torch nchw':>10s} | {'torch nhwc':>9s} | target | jit ratio | met |")
print("|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|")
for model, batch, mode in CASES:
    ref, jit = (ours_ms(model, batch, mode, e) for e in ("reference", "jit"))
    ort = peer_ms(model, batch, mode, "onnxruntime")
    nchw = peer_ms(model, batch, mode, "torch", "nchw")
    cl = peer_ms(model, batch, mode, "torch", "nhwc")
    peer, limit = TARGETS[(model, batch, mode)]
    base = ort if peer == "ORT" else min(v for v in (nchw, cl) if v is not None) if (nchw or cl) else None
    ratio = jit / base if jit and base else None
    met = "-" if ratio is None else ("yes" if ratio <= limit else "no")
    print(f"| {model:8s} | {batch:5d} | {mode:5s} | {fmt(ref)} | {fmt(jit)} | {fmt(ort)} | {fmt(nchw):>10s} | "
          f"{fmt(cl)} | <= {limit:.2f}x {peer} | {ratio:8.2f}x | {met} |" if ratio is not None else
          f"| {model:8s} | {batch:5d} | {mode:5s} | {fmt(ref)} | {fmt(jit)} | {fmt(ort)} | {fmt(nchw):>10s} | "
          f"{fmt(cl)} | <= {limit:.2f}x {peer} | - | - |")
for r in ours:
    if r["engine"] == "jit" and r.get("compile_ms") is not None:
        met = "" if r["mode"] != "train" or r["model"] != "resnet50" else \
            f"  (target under 1000 ms: {'yes' if r['compile_ms'] < 1000 else 'no'})"
        print(f"JIT compile, {r['model']} {r['mode']} batch {r['batch']}: {r['compile_ms']:.0f} ms{met}")
micro = json.loads(sys.argv[3])["microkernel"]
pct = micro["percent_of_128_bit_peak"]
print(f"3x3 conv micro-kernel, one thread: {micro['gflops']:.1f} GFLOP/s, {pct:.0f} % of the 128-bit peak "
      f"(target at least 85 %: {'yes' if pct >= 85 else 'no'})")
PY
