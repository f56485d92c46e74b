"""Generate the parity fixtures in tests/fixtures/ from ONNX Runtime and PyTorch.

    scripts/oracle_env.sh                                  # once: venv with onnxruntime + torch
    ~/.cache/resnetc-oracle/bin/python scripts/make_fixtures.py            # (re)write fixtures
    ~/.cache/resnetc-oracle/bin/python scripts/make_fixtures.py --check    # regenerate into a temp
                                                           # dir and compare byte for byte

Weights and inputs are NOT stored: they come from the portable generator in
scripts/synthetic.py / runtime/src/synthetic.rs (seed, tensor name, shape -> values, bit-exact in
both languages). Architecture, key names and shapes come from the oracle's models.py
(/work/shared/oracle, or --oracle DIR / $ORACLE_DIR). Only outputs are written:

  <model>_eval_logits.npy      float32 (N, classes), ONNX Runtime 1 thread, BN eval mode
  <model>_eval_logits_f64.npy  float64, same network in torch float64 (if torch is installed)
  resnet20_sgd_step.safetensors  one PyTorch SGD step, resnet20 batch 8, train-mode BN:
        train_logits (8,10) f32, loss () f32, labels (8,) i64, and the after-step values of all
        BN tensors (weight, bias, running_mean, running_var), conv1.weight,
        layer1.0.conv1.weight, layer3.2.conv2.weight, linear.weight, linear.bias
  resnet20_sgd_grads.safetensors  d loss / d w of the trainable tensors of that subset
  resnet20_adam_steps.safetensors / resnet20_adamw_steps.safetensors  three torch.optim.Adam /
        AdamW steps, resnet20 batch 8, train-mode BN, batch k from seed k (k = 0, 1, 2):
        losses (3,) f32, the after-step values of the same subset, and the optimizer state
        `<key>.exp_avg` / `<key>.exp_avg_sq` of its trainable tensors under 10,000 elements
  manifest.json                seeds, shapes, generator version, versions, tolerances, command
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import synthetic as S  # noqa: E402

SEED = 0
EVAL_CASES = [("resnet20", 2), ("resnet56", 2), ("resnet18", 1), ("resnet50", 1)]
TRAIN_MODEL, TRAIN_BATCH = "resnet20", 8
SGD = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
# Weight decay on for both, so Adam's coupled and AdamW's decoupled decay are both exercised.
# eps 1e-3, not the default 1e-8: a step moves a weight by lr * m / (sqrt(v) + eps), whose slope
# in the gradient is up to 1/eps near a zero gradient. With eps 1e-8 any two f32
# implementations disagree by up to 2 lr on the weights whose gradient is as small as its
# rounding error (measured: 5e-4 after three steps); with eps 1e-3 the same rounding moves
# weights by under 1e-6, so the SGD test's 1e-5 tolerance stays meaningful.
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-3, weight_decay=1e-4)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-3, weight_decay=1e-2)
ADAM_STEPS = 3
TRAIN_EXTRA_KEYS = ["conv1.weight", "layer1.0.conv1.weight", "layer3.2.conv2.weight",
                    "linear.weight", "linear.bias"]
BN_SUFFIXES = (".weight", ".bias", ".running_mean", ".running_var")

TOLERANCES = {
    "eval_logits_vs_ort_f32": "f32 implementations: max|y - ort| <= 1e-4 * max|ort| + 1e-5 "
                              "(both f32, different summation orders)",
    "eval_logits_vs_torch_f64": "the exact-ish reference: an f32 implementation should reach "
                                "max|y - y64| <= 1e-4 * max|y64|; the ORT f32 error against it "
                                "is recorded per model as max_abs_ort_f32_vs_torch_f64",
    "train_loss": "rel 1e-5",
    "train_logits": "max abs <= 1e-4 * max|logits|",
    "grads": "per tensor: max|g - g_ref| <= 1e-3 * max|g_ref| + 1e-7 (f32 backward, batch stats)",
    "after_step": "per tensor: max abs <= 1e-5 (step is lr*(g + wd*w); differences come from grads)",
    "running_stats": "max abs <= 1e-5",
    "adam_after_3_steps": "per tensor: max|y - torch_f32| <= 1e-5 + 3 * f64_gap (weights, as "
                          "after_step plus PyTorch's own f32 noise after three steps); moments "
                          "<= 1e-3 * max + 3 * f64_gap",
}


def load_models(oracle_dir):
    sys.path.insert(0, oracle_dir)
    import models
    return models


def bn_modules(W):
    return [k[: -len(".running_mean")] for k in W if k.endswith(".running_mean")]


def train_subset_keys(W):
    keys = [m + s for m in bn_modules(W) for s in BN_SUFFIXES] + TRAIN_EXTRA_KEYS
    assert all(k in W for k in keys), [k for k in keys if k not in W]
    return keys


def eval_fixtures(models, out, torch, info):
    for name, batch in EVAL_CASES:
        W = S.synthetic_weights(name, SEED)
        shape = (batch,) + models.input_shape(name)
        x = S.synthetic_input(SEED, shape)
        y = models.ort_session(models.build_onnx(name, W), threads=1).run(None, {"input": x})[0]
        y = np.ascontiguousarray(y, dtype=np.float32)
        np.save(os.path.join(out, f"{name}_eval_logits.npy"), y)
        rec = dict(model=name, seed=SEED, batch=batch, input_shape=list(shape),
                   input="synthetic_input(seed, input_shape): U(-2,2) stream of name 'input'",
                   weights="synthetic_tensor(seed, key, shape, block kind) for every key of the "
                           "torchvision-style state dict (no num_batches_tracked)",
                   block_kind="Bottleneck" if models.IMAGENET.get(name, ("basic",))[0] == "bottleneck"
                   else "Basic",
                   output_shape=list(y.shape), files={"ort_f32": f"{name}_eval_logits.npy"},
                   ort_threads=1, ort_opt_level="all",
                   logits_std=float(y.std()), logits_max_abs=float(np.abs(y).max()),
                   n_weight_tensors=len(W))
        # Diagnostic (not saved): how much the logits depend on the input. Two synthetic
        # images (the first is the same image as batch 1's); mean|y0 - y1| / std(y).
        x2 = S.synthetic_input(SEED, (2,) + models.input_shape(name))
        y2 = models.ort_session(models.build_onnx(name, W), threads=1).run(None, {"input": x2})[0]
        rec["input_sensitivity"] = float(np.abs(y2[0] - y2[1]).mean() / y2.std())
        if torch is not None:
            m64 = models.torch_model(name, W).double().eval()
            with torch.no_grad():
                y64 = m64(torch.from_numpy(x).double()).numpy()
            np.save(os.path.join(out, f"{name}_eval_logits_f64.npy"), np.ascontiguousarray(y64))
            rec["files"]["torch_f64"] = f"{name}_eval_logits_f64.npy"
            rec["max_abs_ort_f32_vs_torch_f64"] = float(np.abs(y - y64).max())
            rec["rel_ort_f32_vs_torch_f64"] = float(np.abs(y - y64).max() / np.abs(y64).max())
        info.append(rec)


def train_fixture(models, out, torch, info):
    import torch.nn.functional as F
    from safetensors.numpy import save_file
    name, batch = TRAIN_MODEL, TRAIN_BATCH
    W = S.synthetic_weights(name, SEED)
    shape = (batch,) + models.input_shape(name)
    x = S.synthetic_input(SEED, shape)
    labels = S.synthetic_labels(SEED, batch, models.num_classes(name))
    m = models.torch_model(name, W).train()
    opt = torch.optim.SGD(m.parameters(), **SGD)
    logits = m(torch.from_numpy(x))
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    opt.zero_grad()
    loss.backward()
    params = dict(m.named_parameters())
    keys = train_subset_keys(W)
    grads = {k: params[k].grad.detach().numpy().copy() for k in keys if k in params}
    opt.step()
    sd = m.state_dict()
    after = {k: sd[k].detach().numpy().copy() for k in keys}
    after["train_logits"] = logits.detach().numpy().copy()
    after["loss"] = np.array(loss.item(), np.float32)
    after["labels"] = labels.astype(np.int64)
    step_file, grad_file = f"{name}_sgd_step.safetensors", f"{name}_sgd_grads.safetensors"
    # One key only: safetensors writes __metadata__ from a hash map, so several keys would
    # come out in a random order and break byte-for-byte reproducibility.
    meta = {"info": f"{name} seed {SEED} generator {S.GENERATOR_VERSION}; see manifest.json"}
    save_file({k: np.ascontiguousarray(v) for k, v in after.items()}, os.path.join(out, step_file), meta)
    save_file({k: np.ascontiguousarray(v) for k, v in grads.items()}, os.path.join(out, grad_file), meta)
    info.append(dict(
        model=name, seed=SEED, batch=batch, input_shape=list(shape), block_kind="Basic",
        labels="synthetic_labels(seed, batch, 10): floor(u*10) of the stream of name 'labels'",
        labels_values=labels.tolist(), loss=float(loss.item()),
        procedure="model.train() (BN batch stats, biased var to normalise; running stats updated "
                  "with momentum 0.1 and unbiased var), logits = model(x), loss = mean "
                  "cross_entropy(logits, labels), zero_grad, backward, "
                  "torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-4).step() from zero "
                  "momentum (so w' = w - lr*(g + wd*w))",
        sgd=SGD, bn_momentum=0.1, bn_eps=1e-5,
        files={"step": step_file, "grads": grad_file},
        step_tensors="after-step values of " + ", ".join(
            ["all BN weight/bias/running_mean/running_var"] + TRAIN_EXTRA_KEYS)
        + "; plus train_logits (f32), loss (f32 scalar), labels (i64)",
        grad_tensors=sorted(grads), n_step_tensors=len(after), n_grad_tensors=len(grads),
        train_logits_std=float(logits.detach().numpy().std())))


def adam_run(models, torch, decoupled, dtype):
    """Three Adam (or AdamW) steps from zero state on three different batches, in `dtype`:
    the losses, and the after-step values and optimizer moments of the training subset."""
    import torch.nn.functional as F
    name, batch = TRAIN_MODEL, TRAIN_BATCH
    W = S.synthetic_weights(name, SEED)
    m = models.torch_model(name, W).train().to(dtype)
    settings = ADAMW if decoupled else ADAM
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)(m.parameters(), **settings)
    losses = []
    for k in range(ADAM_STEPS):
        shape = (batch,) + models.input_shape(name)
        x = S.synthetic_input(SEED + k, shape)
        labels = S.synthetic_labels(SEED + k, batch, models.num_classes(name))
        loss = F.cross_entropy(m(torch.from_numpy(x).to(dtype)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    keys = train_subset_keys(W)
    sd = m.state_dict()
    after = {k: sd[k].detach().double().numpy().copy() for k in keys}
    params = dict(m.named_parameters())
    # The state of every tensor of the subset but the largest (layer3's 36,864-weight conv,
    # whose after-step values are compared anyway), to keep the fixture small.
    for k in keys:
        if k in params and params[k].numel() < 10000:
            st = opt.state[params[k]]
            after[f"{k}.exp_avg"] = st["exp_avg"].double().numpy().copy()
            after[f"{k}.exp_avg_sq"] = st["exp_avg_sq"].double().numpy().copy()
    return losses, after, settings


def adam_fixture(models, out, torch, info, decoupled):
    """PyTorch's float32 result, and per tensor its own distance to the float64 result: three
    steps of a batch-8 network in training mode amplify rounding, so that distance (PyTorch's
    own f32 noise) sets the test's tolerance next to the SGD test's 1e-5."""
    from safetensors.numpy import save_file
    losses, after, settings = adam_run(models, torch, decoupled, torch.float32)
    _, after64, _ = adam_run(models, torch, decoupled, torch.float64)
    tensors = {k: v.astype(np.float32) for k, v in after.items()}
    for k in after:
        tensors[f"{k}.f64_gap"] = np.array(np.abs(after[k] - after64[k]).max(), np.float32)
    tensors["losses"] = np.array(losses, np.float32)
    name = TRAIN_MODEL
    kind = "adamw" if decoupled else "adam"
    fname = f"{name}_{kind}_steps.safetensors"
    meta = {"info": f"{name} seed {SEED} generator {S.GENERATOR_VERSION}; see manifest.json"}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(out, fname), meta)
    gaps = {k: float(tensors[f"{k}.f64_gap"]) for k in after}
    info.append(dict(
        model=name, optimizer=kind, seed=SEED, batch=TRAIN_BATCH, steps=ADAM_STEPS,
        settings={k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        procedure=f"model.train(); for k in 0..{ADAM_STEPS}: x = synthetic_input(seed + k), "
                  "labels = synthetic_labels(seed + k, batch, 10), loss = mean cross_entropy, "
                  f"zero_grad, backward, torch.optim.{'AdamW' if decoupled else 'Adam'}.step(); "
                  "run in float32 (stored) and float64 (stored only as <key>.f64_gap = "
                  "max|f32 - f64| per tensor)",
        losses=losses, files={"steps": fname}, n_tensors=len(after),
        max_weight_f64_gap=max(v for k, v in gaps.items() if not k.endswith(("exp_avg", "exp_avg_sq"))),
        max_exp_avg_f64_gap=max(v for k, v in gaps.items() if k.endswith("exp_avg"))))


def generate(out, oracle_dir):
    models = load_models(oracle_dir)
    import onnxruntime as ort
    try:
        import torch
        torch.set_num_threads(1)
        torch.manual_seed(0)
    except ImportError:
        torch = None
    os.makedirs(out, exist_ok=True)
    evals, trains, adams = [], [], []
    eval_fixtures(models, out, torch, evals)
    if torch is not None:
        train_fixture(models, out, torch, trains)
        adam_fixture(models, out, torch, adams, decoupled=False)
        adam_fixture(models, out, torch, adams, decoupled=True)
    else:
        print("torch not installed: skipping f64 logits and the SGD step", file=sys.stderr)
    manifest = dict(
        generator=S.GENERATOR_VERSION,
        generator_impl=["scripts/synthetic.py", "runtime/src/synthetic.rs"],
        generator_rules="see runtime/src/synthetic.rs module docs (seed ^ fnv1a64(name) -> "
                        "splitmix64 -> f32(lo + (hi-lo)*u)); conv/fc weight U(+-sqrt(3/fan_in)), "
                        "fc bias U(+-0.1), BN gamma U(0.5,1.5) (last BN of a residual branch "
                        "U(0.05,0.35)), BN beta U(+-0.2), running_mean U(+-0.2), running_var "
                        "U(0.5,1.5), input U(+-2), labels floor(u*classes)",
        seed=SEED, layout="NCHW float32", bn_eps=1e-5,
        architecture="oracle models.py (torchvision ResNet v1.5 / CIFAR option-A ResNets), "
                     "torchvision key names, CIFAR classifier 'linear'",
        versions=dict(onnxruntime=ort.__version__, numpy=np.__version__,
                      torch=torch.__version__ if torch is not None else None,
                      python=sys.version.split()[0]),
        command="scripts/oracle_env.sh && ~/.cache/resnetc-oracle/bin/python scripts/make_fixtures.py",
        tolerance_intent=TOLERANCES,
        eval=evals, train=trains, adam=adams)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    return manifest


def summary(manifest, out):
    for r in manifest["eval"]:
        d = r.get("max_abs_ort_f32_vs_torch_f64")
        print(f"{r['model']:9s} b={r['batch']}  logits std {r['logits_std']:.4f}  max|y| "
              f"{r['logits_max_abs']:.4f}  input sens {r['input_sensitivity']:.3f}  max|ort_f32 - torch_f64| "
              f"{'n/a' if d is None else f'{d:.3e}'}")
    for r in manifest["train"]:
        print(f"{r['model']:9s} train b={r['batch']}  loss {r['loss']:.6f}  labels {r['labels_values']}"
              f"  train logits std {r['train_logits_std']:.4f}")
    total = 0
    for fn in sorted(os.listdir(out)):
        sz = os.path.getsize(os.path.join(out, fn))
        total += sz
        print(f"  {sz:8d}  {fn}")
    print(f"  {total:8d}  total bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--oracle", default=os.environ.get("ORACLE_DIR", "/work/shared/oracle"))
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare byte for byte with --out")
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(tmp, a.oracle)
            names = sorted(os.listdir(tmp))
            _, mismatch, errors = filecmp.cmpfiles(a.out, tmp, names, shallow=False)
            # Generated-type files in --out that this script no longer writes are stale.
            errors += [n for n in os.listdir(a.out) if n not in names
                       and (n.endswith((".npy", ".safetensors")) or n == "manifest.json")]
            for n in mismatch + errors:
                print(f"DIFFERS: {n}")
            print("identical" if not (mismatch or errors) else "MISMATCH")
            return 1 if (mismatch or errors) else 0
    manifest = generate(a.out, a.oracle)
    summary(manifest, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
