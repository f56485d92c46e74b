//! Synthetic, portable weights, inputs and labels for parity tests.
//!
//! Random ResNet-18/50 weights are 47/100 MB, too big to commit. Instead, weights and inputs
//! are regenerated from `(seed, tensor name, shape)` by a tiny generator that this module and
//! its Python twin `scripts/synthetic.py` implement bit-exactly; the committed fixtures under
//! `tests/fixtures/` are only the reference outputs (ONNX Runtime / PyTorch), a few KB.
//!
//! # Generator ([`GENERATOR_VERSION`])
//! * `state0 = seed ^ fnv1a64(name bytes)` (64-bit FNV-1a, see [`fnv1a64`]).
//! * Draws in C (row-major) order of the tensor, each a [`SplitMix64`] step; the `u64` becomes
//!   `u = (z >> 11) as f64 * 2^-53` in `[0, 1)`.
//! * A value is `(lo + (hi - lo) * u)` computed in `f64`, then rounded to the nearest `f32`.
//! * A label is `floor(u * classes)`.
//!
//! # Distributions by role ([`Role`], [`role_for`])
//! | role | rule | range |
//! |---|---|---|
//! | conv weight | `.weight`, 4-D | `U(-b, b)`, `b = sqrt(3 / fan_in)`, `fan_in = cin*kh*kw` |
//! | fc weight | `.weight`, 2-D | `U(-b, b)`, `b = sqrt(3 / in_features)` |
//! | fc bias | `.bias` of a non-BN module | `U(-0.1, 0.1)` |
//! | BN weight | `.weight`, 1-D | `U(0.5, 1.5)` |
//! | BN weight, last of a residual branch | `layerN.i.bn2` (basic) / `layerN.i.bn3` (bottleneck) | `U(0.05, 0.35)` |
//! | BN bias | `.bias` of `bn<digits>` or `downsample.1` | `U(-0.2, 0.2)` |
//! | running mean | `.running_mean` | `U(-0.2, 0.2)` |
//! | running var | `.running_var` | `U(0.5, 1.5)` |
//! | input | name `"input"` | `U(-2, 2)` |
//! | labels | name `"labels"` | `floor(u * classes)` |
//!
//! The variance `1/fan_in` weights plus the small gamma on the last BN of every residual branch
//! keep 50-block networks at a sane activation scale in eval and train mode (the intent of the
//! oracle's `models.make_weights`). Any change here must be mirrored in `scripts/synthetic.py`,
//! the version string bumped, and the fixtures regenerated (`scripts/make_fixtures.py`).

use rand_xoshiro::rand_core::{Rng as _, SeedableRng};

/// Identifies the generator and distribution rules; recorded in `tests/fixtures/manifest.json`.
pub const GENERATOR_VERSION: &str = "splitmix64-fnv1a-v1";

/// Name whose stream drives [`synthetic_input`].
pub const INPUT_NAME: &str = "input";
/// Name whose stream drives [`synthetic_labels`].
pub const LABELS_NAME: &str = "labels";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a hash of `bytes` (offset `0xcbf29ce484222325`, prime `0x100000001b3`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The splitmix64 generator (Steele, Lea, Flood 2014), as used by `java.util.SplittableRandom`:
/// `rand_xoshiro`'s, which is the reference algorithm bit for bit. The conversions to floats
/// and labels below stay here: they are the contract with the Python twin.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    inner: rand_xoshiro::SplitMix64,
}

impl SplitMix64 {
    /// A generator whose first draw is the splitmix64 output after `state + GAMMA`.
    pub fn new(state: u64) -> Self {
        Self {
            inner: rand_xoshiro::SplitMix64::seed_from_u64(state),
        }
    }

    /// The stream for one named tensor: `state0 = seed ^ fnv1a64(name)`.
    pub fn for_tensor(seed: u64, name: &str) -> Self {
        Self::new(seed ^ fnv1a64(name.as_bytes()))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Next uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Next value of `U(lo, hi)`: `lo + (hi - lo) * u` in `f64`, rounded to `f32`.
    pub fn next_uniform_f32(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.next_f64()) as f32
    }
}

/// Residual block kind, needed to tell which BN closes a residual branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs; the branch ends in `bn2` (ResNet-18/34, CIFAR ResNets).
    Basic,
    /// 1x1, 3x3, 1x1 convs; the branch ends in `bn3` (ResNet-50/101/152).
    Bottleneck,
}

/// What a named tensor is, which decides its distribution ([`Role::range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// 4-D `.weight`, `(cout, cin, kh, kw)`.
    ConvWeight,
    /// 2-D `.weight`, `(out, in)`.
    FcWeight,
    /// `.bias` of a module that is not a BN.
    FcBias,
    /// 1-D `.weight` (BN gamma); `last_in_branch` for the BN closing a residual branch.
    BnWeight { last_in_branch: bool },
    /// `.bias` of a BN module (beta).
    BnBias,
    /// `.running_mean`.
    RunningMean,
    /// `.running_var`.
    RunningVar,
    /// The network input (name [`INPUT_NAME`]).
    Input,
}

impl Role {
    /// `[lo, hi)` of the uniform distribution for a tensor of this role and `shape`.
    pub fn range(self, shape: &[usize]) -> (f64, f64) {
        match self {
            Role::ConvWeight | Role::FcWeight => {
                let fan_in: usize = shape.iter().skip(1).product();
                let b = (3.0 / fan_in as f64).sqrt();
                (-b, b)
            }
            Role::FcBias => (-0.1, 0.1),
            Role::BnWeight {
                last_in_branch: false,
            } => (0.5, 1.5),
            Role::BnWeight {
                last_in_branch: true,
            } => (0.05, 0.35),
            Role::BnBias => (-0.2, 0.2),
            Role::RunningMean => (-0.2, 0.2),
            Role::RunningVar => (0.5, 1.5),
            Role::Input => (-2.0, 2.0),
        }
    }
}

/// True for a BN module path: last component `bn<digits>` (e.g. `bn1`, `layer1.0.bn2`) or
/// ending in `downsample.1` (the projection shortcut's BN).
fn is_bn_module(module: &str) -> bool {
    if module == "downsample.1" || module.ends_with(".downsample.1") {
        return true;
    }
    let last = module.rsplit('.').next().unwrap_or("");
    last.strip_prefix("bn")
        .is_some_and(|d| d.bytes().all(|c| c.is_ascii_digit()))
}

/// True if `module` is `[...].layer<digits>.<digits>.<last>` (a BN inside a residual block).
fn in_block(module: &str) -> bool {
    let parts: Vec<&str> = module.split('.').collect();
    let n = parts.len();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    n >= 3 && parts[n - 3].strip_prefix("layer").is_some_and(digits) && digits(parts[n - 2])
}

/// The role of tensor `name` with `shape` in a network of `kind` blocks (torchvision key names),
/// or `None` if the name/shape fits no rule.
pub fn role_for(name: &str, shape: &[usize], kind: BlockKind) -> Option<Role> {
    if name == INPUT_NAME {
        return Some(Role::Input);
    }
    let (module, suffix) = name.rsplit_once('.').unwrap_or(("", name));
    match (suffix, shape.len()) {
        ("weight", 4) => Some(Role::ConvWeight),
        ("weight", 2) => Some(Role::FcWeight),
        ("weight", 1) => {
            let last = match kind {
                BlockKind::Basic => "bn2",
                BlockKind::Bottleneck => "bn3",
            };
            let last_in_branch = module.rsplit('.').next() == Some(last) && in_block(module);
            Some(Role::BnWeight { last_in_branch })
        }
        ("bias", 1) if is_bn_module(module) => Some(Role::BnBias),
        ("bias", 1) => Some(Role::FcBias),
        ("running_mean", 1) => Some(Role::RunningMean),
        ("running_var", 1) => Some(Role::RunningVar),
        _ => None,
    }
}

/// `U(lo, hi)` values of the stream for `(seed, name)`, `len` draws in order.
pub fn uniform(seed: u64, name: &str, len: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut g = SplitMix64::for_tensor(seed, name);
    (0..len).map(|_| g.next_uniform_f32(lo, hi)).collect()
}

/// A tensor with an explicit role, in C order of `shape`.
pub fn synthetic_tensor_with_role(seed: u64, name: &str, shape: &[usize], role: Role) -> Vec<f32> {
    let (lo, hi) = role.range(shape);
    uniform(seed, name, shape.iter().product(), lo, hi)
}

/// The synthetic value of weight tensor `name` (torchvision key, e.g. `layer1.0.bn2.weight`)
/// with `shape`, in C order. Panics if [`role_for`] knows no rule for it.
pub fn synthetic_tensor(seed: u64, name: &str, shape: &[usize], kind: BlockKind) -> Vec<f32> {
    let role = role_for(name, shape, kind)
        .unwrap_or_else(|| panic!("no synthetic role for {name:?} with shape {shape:?}"));
    synthetic_tensor_with_role(seed, name, shape, role)
}

/// The synthetic input batch, `U(-2, 2)`, NCHW in C order.
pub fn synthetic_input(seed: u64, shape: &[usize]) -> Vec<f32> {
    synthetic_tensor_with_role(seed, INPUT_NAME, shape, Role::Input)
}

/// `n` synthetic class labels in `0..classes`: `floor(u * classes)`.
pub fn synthetic_labels(seed: u64, n: usize, classes: usize) -> Vec<usize> {
    let mut g = SplitMix64::for_tensor(seed, LABELS_NAME);
    (0..n)
        .map(|_| (g.next_f64() * classes as f64) as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values below come from the Python twin:
    //   ~/.cache/resnetc-oracle/bin/python scripts/synthetic.py
    // (it also checks its vectorised numpy path against its scalar loop). They are compared
    // as f32 bit patterns, so any divergence between the two implementations fails here.

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c); // published FNV-1a 64 test vector
        assert_eq!(fnv1a64(b"conv1.weight"), 0x69a29a2cee47d254);
    }

    #[test]
    fn splitmix64_reference_sequence() {
        // Seed 0: the reference splitmix64 sequence (also printed by the Python twin).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(g.next_u64(), 0x6e789e6aa1b965f4);
        assert_eq!(g.next_u64(), 0x06c45d188009454f);
    }

    #[test]
    fn roles_from_names() {
        use BlockKind::*;
        let last = Role::BnWeight {
            last_in_branch: true,
        };
        let bn = Role::BnWeight {
            last_in_branch: false,
        };
        assert_eq!(
            role_for("conv1.weight", &[16, 3, 3, 3], Basic),
            Some(Role::ConvWeight)
        );
        assert_eq!(
            role_for("linear.weight", &[10, 64], Basic),
            Some(Role::FcWeight)
        );
        assert_eq!(role_for("fc.bias", &[1000], Bottleneck), Some(Role::FcBias));
        assert_eq!(role_for("bn1.weight", &[16], Basic), Some(bn));
        assert_eq!(role_for("bn1.bias", &[16], Basic), Some(Role::BnBias));
        assert_eq!(role_for("layer1.0.bn2.weight", &[16], Basic), Some(last));
        assert_eq!(role_for("layer1.0.bn2.weight", &[64], Bottleneck), Some(bn));
        assert_eq!(
            role_for("layer4.2.bn3.weight", &[2048], Bottleneck),
            Some(last)
        );
        assert_eq!(
            role_for("layer2.0.downsample.1.weight", &[512], Bottleneck),
            Some(bn)
        );
        assert_eq!(
            role_for("layer2.0.downsample.1.bias", &[512], Bottleneck),
            Some(Role::BnBias)
        );
        assert_eq!(
            role_for(
                "layer2.0.downsample.0.weight",
                &[512, 256, 1, 1],
                Bottleneck
            ),
            Some(Role::ConvWeight)
        );
        assert_eq!(
            role_for("layer3.1.bn1.running_mean", &[64], Basic),
            Some(Role::RunningMean)
        );
        assert_eq!(
            role_for("layer3.1.bn1.running_var", &[64], Basic),
            Some(Role::RunningVar)
        );
        assert_eq!(role_for("input", &[1, 3, 32, 32], Basic), Some(Role::Input));
        assert_eq!(role_for("layer1.0.num_batches_tracked", &[], Basic), None);
        assert_eq!(role_for("conv1.weight", &[16, 3, 3], Basic), None);
    }

    #[test]
    fn tensors_match_python_twin() {
        use BlockKind::*;
        type Case = (
            u64,
            &'static str,
            &'static [usize],
            BlockKind,
            &'static [u32],
        );
        let cases: &[Case] = &[
            (
                0,
                "conv1.weight",
                &[2, 3, 1, 1],
                Basic,
                &[
                    0x3db8a08b, 0x3efb0baf, 0xbf74439a, 0x3ef1ddd8, 0xbe85c911, 0x3f6db532,
                ],
            ),
            (
                0,
                "layer1.0.bn2.weight",
                &[4],
                Basic,
                &[0x3e57e431, 0x3e6b112c, 0x3d669113, 0x3e81d94e],
            ),
            (
                0,
                "layer1.0.bn2.weight",
                &[4],
                Bottleneck,
                &[0x3f849f14, 0x3f8c9c7d, 0x3f055e39, 0x3f96dfc1],
            ),
            (
                7,
                "layer2.0.downsample.1.bias",
                &[3],
                Bottleneck,
                &[0xbdb7f823, 0xbda5f633, 0x3d9e8587],
            ),
            (
                0,
                "linear.bias",
                &[3],
                Basic,
                &[0x3cd00d43, 0x3d1f7dc2, 0xbad96e9b],
            ),
            (
                1,
                "bn1.running_var",
                &[3],
                Basic,
                &[0x3fab169a, 0x3f33e4bc, 0x3f87575b],
            ),
            (
                0,
                "fc.weight",
                &[2, 3],
                Bottleneck,
                &[
                    0xbcfb9020, 0x3f3e9a22, 0x3ef95e9e, 0x3ecd5181, 0xbf17b392, 0x3f1c7051,
                ],
            ),
        ];
        for &(seed, name, shape, kind, want) in cases {
            let got = synthetic_tensor(seed, name, shape, kind);
            assert_eq!(bits(&got), want, "{name} seed {seed} {kind:?}");
        }
        // Same values in decimal, as printed by Python, for readability.
        let v = synthetic_tensor(0, "linear.bias", &[3], Basic);
        assert_eq!(v, [0.025396949_f32, 0.03893829, -0.0016588749]);
    }

    #[test]
    fn input_and_labels_match_python_twin() {
        let x = synthetic_input(3, &[1, 1, 2, 2]);
        assert_eq!(bits(&x), [0x3fc58128, 0xbe06c8c5, 0x3e9dc353, 0x3f605476]);
        assert_eq!(synthetic_labels(0, 8, 10), [0, 4, 2, 8, 7, 6, 7, 1]);
        assert_eq!(synthetic_labels(5, 6, 1000), [983, 186, 88, 249, 832, 287]);
    }

    #[test]
    fn large_tensors_match_python_twin() {
        // fnv1a64 of the little-endian f32 bytes, as printed by `scripts/synthetic.py`
        // ("fnv1a64(bytes) ..." lines): every one of the ~3.2M values must match bit for bit.
        fn hash(v: &[f32]) -> u64 {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            fnv1a64(&bytes)
        }
        let k = BlockKind::Bottleneck;
        let w = synthetic_tensor(0, "layer4.2.conv3.weight", &[2048, 512, 1, 1], k);
        assert_eq!(hash(&w), 0xc344c6fb0f9978bf);
        assert_eq!(
            hash(&synthetic_tensor(0, "fc.weight", &[1000, 2048], k)),
            0xffad229bae46a1da
        );
        assert_eq!(
            hash(&synthetic_input(0, &[1, 3, 224, 224])),
            0xf5598f479971f554
        );
    }

    #[test]
    fn ranges_hold_on_a_large_tensor() {
        let shape = [64, 64, 3, 3];
        let v = synthetic_tensor(0, "layer3.0.conv2.weight", &shape, BlockKind::Basic);
        let b = (3.0f64 / 576.0).sqrt() as f32;
        assert_eq!(v.len(), 36864);
        assert!(v.iter().all(|&x| (-b..=b).contains(&x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!(
            (var * 576.0 - 1.0).abs() < 0.03,
            "var*fan_in {}",
            var * 576.0
        );
        // Different names and seeds give different streams.
        assert_ne!(
            v[..4],
            synthetic_tensor(1, "layer3.0.conv2.weight", &shape, BlockKind::Basic)[..4]
        );
        assert_ne!(
            v[..4],
            synthetic_tensor(0, "layer3.0.conv1.weight", &shape, BlockKind::Basic)[..4]
        );
    }
}
