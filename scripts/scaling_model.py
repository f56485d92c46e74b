#!/usr/bin/env python3
"""The step-time model of docs/scaling.md, evaluated for ResNet-20 and ResNet-50.

    T(N) = compute + allreduce(N) + sync_bn(N)
    compute      = images per rank x seconds per image on one rank
    allreduce(N) = 2 (N-1)/N x bytes / bandwidth + 2 (N-1) x latency     (ring, one flat bucket)
    sync_bn(N)   = 2 x BN layers x ceil(log2 N) x latency                 (--sync-bn only: two
                   small allreduces per BN layer and step, recursive doubling)

resnetc sums the gradients after the whole backward pass (no overlap), so the terms add.
Parameter counts come from `resnetc build MODEL --json`, BN layer counts from the IR
(`resnetc build MODEL --emit ir`). Prints Markdown tables.

Usage: scripts/scaling_model.py [--resnetc target/release/resnetc]
       [--seconds-per-image resnet20=0.0057,resnet50=0.40]
"""

import argparse
import json
import math
import subprocess

MODELS = {
    # name: (model file, images per rank per step)
    "resnet20": ("models/resnet20.resnet", 128),
    "resnet50": ("models/resnet50.resnet", 32),
}
# Network: (name, bandwidth in bytes/s, per-message latency in s). 10 GbE over TCP and a
# 100 Gbit/s RDMA fabric (InfiniBand EDR / RoCE); the latencies are typical MPI ping-pong
# figures for such networks, not measured here.
NETWORKS = [("10 Gbit/s", 10e9 / 8, 20e-6), ("100 Gbit/s", 100e9 / 8, 2e-6)]
RANKS = [1, 2, 4, 8, 16, 32, 64]


def resnetc_json(resnetc, model):
    out = subprocess.run([resnetc, "build", model, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def bn_layers(resnetc, model):
    out = subprocess.run([resnetc, "build", model, "--emit", "ir", "--stage", "lowered"], check=True,
                         capture_output=True, text=True)
    return sum(1 for line in out.stdout.splitlines() if "batch_norm" in line)


def step_terms(params, bns, compute, ranks, bandwidth, latency):
    nbytes = 4 * params
    if ranks == 1:
        return compute, 0.0, 0.0
    ring = 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency
    sync = 2 * bns * math.ceil(math.log2(ranks)) * latency
    return compute, ring, sync


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnetc", default="target/release/resnetc")
    ap.add_argument("--seconds-per-image", default="resnet20=0.0057,resnet50=0.40",
                    help="training time per image on one rank (one thread), e.g. from "
                         "`resnetc bench MODEL --train --threads 1 --batch 32`")
    args = ap.parse_args()
    per_image = dict((k, float(v)) for k, v in (kv.split("=") for kv in args.seconds_per_image.split(",")))
    for name, (model, images) in MODELS.items():
        info = resnetc_json(args.resnetc, model)
        params, bns = info["params"], bn_layers(args.resnetc, model)
        compute = images * per_image[name]
        print(f"\n### {name}: {params:,} parameters ({4 * params / 1e6:.1f} MB of f32 gradients), "
              f"{bns} BN layers, {images} images per rank, compute {compute * 1e3:.0f} ms per step\n")
        print("| ranks | " + " | ".join(f"allreduce {n} (ms) | efficiency {n} | +sync-BN {n}" for n, _, _ in NETWORKS) + " |")
        print("|---:|" + "---:|---:|---:|" * len(NETWORKS))
        for n in RANKS:
            cells = []
            for _, bw, lat in NETWORKS:
                c, ring, sync = step_terms(params, bns, compute, n, bw, lat)
                cells += [f"{ring * 1e3:.2f}", f"{100 * c / (c + ring):.1f} %", f"{100 * c / (c + ring + sync):.1f} %"]
            print(f"| {n} | " + " | ".join(cells) + " |")
        # Strong scaling: the paper's global batch of 128 split over the ranks.
        if name == "resnet20":
            print(f"\nStrong scaling, global batch 128 (the paper's CIFAR recipe), 10 Gbit/s:\n")
            print("| ranks | images per rank | compute (ms) | allreduce (ms) | speed-up | efficiency |")
            print("|---:|---:|---:|---:|---:|---:|")
            _, bw, lat = NETWORKS[0]
            t1 = 128 * per_image[name]
            for n in RANKS:
                c = 128 / n * per_image[name]
                _, ring, sync = step_terms(params, bns, c, n, bw, lat)
                t = c + ring
                print(f"| {n} | {128 // n} | {c * 1e3:.1f} | {ring * 1e3:.2f} | {t1 / t:.1f} | {100 * t1 / t / n:.0f} % |")


if __name__ == "__main__":
    main()
