"""Synthetic, portable weights / inputs / labels for parity fixtures (Python twin of
`runtime/src/synthetic.rs`; the two must stay bit-exact).

Why: random ResNet-18/50 weights are 47/100 MB, too big to commit. Instead both languages
regenerate the same tensors from (seed, tensor name, shape), and only the small reference
outputs are committed under tests/fixtures/.

GENERATOR (version GENERATOR_VERSION below; bump it in both languages on any change):
  * state0 = seed XOR fnv1a64(utf-8 bytes of the tensor name)
      fnv1a64: h = 0xcbf29ce484222325; for each byte: h ^= byte; h *= 0x100000001b3 (wrapping u64)
  * draw i (0-based, C order of the tensor): splitmix64
      state += 0x9E3779B97F4A7C15; z = state
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
      z = (z ^ (z >> 27)) * 0x94D049BB133111EB
      z ^= z >> 31                                (all wrapping u64)
      u = (z >> 11) * 2^-53                        (f64 in [0, 1))
  * value = f32(lo + (hi - lo) * u), computed in f64 then rounded to nearest f32.
  * labels: floor(u * classes).

ROLES (name + shape + block kind -> [lo, hi)); see `role_for`:
  conv weight (".weight", 4-D)    U(-b, b), b = sqrt(3 / fan_in), fan_in = cin*kh*kw (var 1/fan_in)
  fc weight   (".weight", 2-D)    U(-b, b), b = sqrt(3 / fan_in), fan_in = in_features
  fc bias     (".bias" of a non-BN module)            U(-0.1, 0.1)
  BN weight   (".weight", 1-D)    U(0.5, 1.5), except the LAST BN of a residual branch
                                  (module "bn2" in basic blocks, "bn3" in bottleneck blocks,
                                  inside a "layerN.i" block): U(0.05, 0.35)
  BN bias     (".bias" of a BN module: last component "bn<digits>" or "downsample.1")
                                                      U(-0.2, 0.2)
  running_mean                                        U(-0.2, 0.2)
  running_var                                         U(0.5, 1.5)
  input       (name "input")                          U(-2, 2)
  labels      (name "labels")                         floor(u * classes)
These mirror the intent of the oracle's models.make_weights (small gamma on the last BN of
each branch keeps 50-block nets at a sane scale in eval and train mode).

Usage: `python scripts/synthetic.py` prints golden values used by the Rust unit tests.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np

GENERATOR_VERSION = "splitmix64-fnv1a-v1"

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TWO_M53 = 2.0 ** -53

INPUT_NAME = "input"
LABELS_NAME = "labels"
INPUT_RANGE = (-2.0, 2.0)
FC_BIAS_RANGE = (-0.1, 0.1)
BN_WEIGHT_RANGE = (0.5, 1.5)
BN_LAST_WEIGHT_RANGE = (0.05, 0.35)
BN_BIAS_RANGE = (-0.2, 0.2)
RUNNING_MEAN_RANGE = (-0.2, 0.2)
RUNNING_VAR_RANGE = (0.5, 1.5)


# ---------------------------------------------------------------------------------------
# Scalar reference implementation (slow, obviously correct)
# ---------------------------------------------------------------------------------------

def fnv1a64(data: bytes | str) -> int:
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & MASK64
    return h


class SplitMix64:
    def __init__(self, state: int):
        self.state = state & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + GAMMA) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * MIX1) & MASK64
        z = ((z ^ (z >> 27)) * MIX2) & MASK64
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * TWO_M53


def tensor_state(seed: int, name: str) -> int:
    return (seed & MASK64) ^ fnv1a64(name)


def uniform_scalar(seed: int, name: str, n: int, lo: float, hi: float) -> np.ndarray:
    """Scalar loop version of `uniform` (for cross-checking the vectorised one)."""
    g = SplitMix64(tensor_state(seed, name))
    return np.array([lo + (hi - lo) * g.next_f64() for _ in range(n)], dtype=np.float64).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Vectorised implementation (numpy uint64 arithmetic wraps modulo 2^64 for arrays)
# ---------------------------------------------------------------------------------------

def _u01(seed: int, name: str, n: int) -> np.ndarray:
    """The first n draws u in [0,1) (float64) of the stream for (seed, name)."""
    s0 = np.uint64(tensor_state(seed, name))
    out = np.empty(n, dtype=np.float64)
    chunk = 1 << 22
    with np.errstate(over="ignore"):
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            i = np.arange(start + 1, start + m + 1, dtype=np.uint64)
            z = s0 + i * np.uint64(GAMMA)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
            z = z ^ (z >> np.uint64(31))
            out[start:start + m] = (z >> np.uint64(11)).astype(np.float64) * TWO_M53
    return out


def uniform(seed: int, name: str, shape, lo: float, hi: float) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    u = _u01(seed, name, n)
    v = np.float64(lo) + (np.float64(hi) - np.float64(lo)) * u
    return v.astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------

_BN_MODULE = re.compile(r"(^|\.)(bn\d*|downsample\.1)$")
_IN_BLOCK = re.compile(r"(^|\.)layer\d+\.\d+\.")


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def is_bn_module(module: str) -> bool:
    return bool(_BN_MODULE.search(module))


def role_for(name: str, shape, bottleneck: bool) -> str:
    """One of: conv_weight, fc_weight, fc_bias, bn_weight, bn_weight_last, bn_bias,
    running_mean, running_var, input. Raises ValueError for names it does not know."""
    shape = tuple(shape)
    if name == INPUT_NAME:
        return "input"
    module = _module(name)
    suffix = name.rsplit(".", 1)[-1]
    if suffix == "weight":
        if len(shape) == 4:
            return "conv_weight"
        if len(shape) == 2:
            return "fc_weight"
        if len(shape) == 1:
            last = "bn3" if bottleneck else "bn2"
            if module.rsplit(".", 1)[-1] == last and _IN_BLOCK.search(module + "."):
                return "bn_weight_last"
            return "bn_weight"
    elif suffix == "bias" and len(shape) == 1:
        return "bn_bias" if is_bn_module(module) else "fc_bias"
    elif suffix == "running_mean" and len(shape) == 1:
        return "running_mean"
    elif suffix == "running_var" and len(shape) == 1:
        return "running_var"
    raise ValueError(f"no synthetic role for {name!r} with shape {shape}")


def role_range(role: str, shape) -> tuple[float, float]:
    if role in ("conv_weight", "fc_weight"):
        fan_in = int(np.prod(shape[1:], dtype=np.int64))
        b = math.sqrt(3.0 / fan_in)
        return (-b, b)
    return {
        "fc_bias": FC_BIAS_RANGE,
        "bn_weight": BN_WEIGHT_RANGE,
        "bn_weight_last": BN_LAST_WEIGHT_RANGE,
        "bn_bias": BN_BIAS_RANGE,
        "running_mean": RUNNING_MEAN_RANGE,
        "running_var": RUNNING_VAR_RANGE,
        "input": INPUT_RANGE,
    }[role]


def synthetic_tensor(seed: int, name: str, shape, bottleneck: bool) -> np.ndarray:
    lo, hi = role_range(role_for(name, shape, bottleneck), shape)
    return uniform(seed, name, shape, lo, hi)


def synthetic_input(seed: int, shape) -> np.ndarray:
    return uniform(seed, INPUT_NAME, shape, *INPUT_RANGE)


def synthetic_labels(seed: int, n: int, classes: int) -> np.ndarray:
    u = _u01(seed, LABELS_NAME, n)
    return np.floor(u * float(classes)).astype(np.int64)


def synthetic_weights(model: str, seed: int, template=None) -> "OrderedDict[str, np.ndarray]":
    """All weights of an oracle model (key names and shapes from models.make_weights)."""
    import models  # the oracle's models.py, on sys.path
    if template is None:
        template = models.make_weights(model, seed)
    bottleneck = model in models.IMAGENET and models.IMAGENET[model][0] == "bottleneck"
    return OrderedDict((k, synthetic_tensor(seed, k, v.shape, bottleneck)) for k, v in template.items())


# ---------------------------------------------------------------------------------------
# Golden values for the Rust unit tests
# ---------------------------------------------------------------------------------------

def _golden():
    def bits(a):
        return ", ".join(f"0x{int(x):08x}" for x in np.asarray(a, np.float32).view(np.uint32).ravel())

    print(f"generator {GENERATOR_VERSION}")
    print(f"fnv1a64('') = 0x{fnv1a64(''):016x}")
    print(f"fnv1a64('conv1.weight') = 0x{fnv1a64('conv1.weight'):016x}")
    g = SplitMix64(0)
    print("splitmix64(0) first 3:", ", ".join(f"0x{g.next_u64():016x}" for _ in range(3)))
    cases = [
        (0, "conv1.weight", (2, 3, 1, 1), False),
        (0, "layer1.0.bn2.weight", (4,), False),
        (0, "layer1.0.bn2.weight", (4,), True),
        (7, "layer2.0.downsample.1.bias", (3,), True),
        (0, "linear.bias", (3,), False),
        (1, "bn1.running_var", (3,), False),
        (0, "fc.weight", (2, 3), True),
    ]
    for seed, name, shape, bott in cases:
        v = synthetic_tensor(seed, name, shape, bott)
        chk = uniform_scalar(seed, name, v.size, *role_range(role_for(name, shape, bott), shape))
        assert np.array_equal(v.ravel().view(np.uint32), chk.view(np.uint32))
        print(f"{seed} {name} {shape} bottleneck={bott} role={role_for(name, shape, bott)}")
        print(f"   values {v.ravel().tolist()}")
        print(f"   bits   [{bits(v)}]")
    # Whole-tensor checks: fnv1a64 of the little-endian f32 bytes of big tensors.
    for seed, name, shape, bott in [(0, "layer4.2.conv3.weight", (2048, 512, 1, 1), True),
                                    (0, "fc.weight", (1000, 2048), True)]:
        v = synthetic_tensor(seed, name, shape, bott)
        print(f"fnv1a64(bytes) {seed} {name} {shape}: 0x{fnv1a64(v.astype('<f4').tobytes()):016x}")
    x = synthetic_input(0, (1, 3, 224, 224))
    print(f"fnv1a64(bytes) input seed 0 (1,3,224,224): 0x{fnv1a64(x.astype('<f4').tobytes()):016x}")
    x = synthetic_input(3, (1, 1, 2, 2))
    print(f"input seed 3 (1,1,2,2): {x.ravel().tolist()}\n   bits [{bits(x)}]")
    print(f"labels seed 0 n=8 classes=10: {synthetic_labels(0, 8, 10).tolist()}")
    print(f"labels seed 5 n=6 classes=1000: {synthetic_labels(5, 6, 1000).tolist()}")


if __name__ == "__main__":
    _golden()
