//! Test helpers shared by the reference-kernel tests (and usable by JIT-vs-reference tests):
//! a tiny deterministic RNG, central finite differences of a random projection loss, and a
//! tolerance check that reports the worst element.

/// SplitMix64: small, deterministic, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
    /// `len` uniform values in `[lo, hi)`.
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Numeric gradient of `L(x) = sum_i r_i * f(x)_i` by central differences with step `h`.
pub fn fd_grad(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], r: &[f64], h: f64) -> Vec<f64> {
    let loss = |xs: &[f64]| -> f64 {
        let y = f(xs);
        assert_eq!(
            y.len(),
            r.len(),
            "fd_grad: projection length != output length"
        );
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    };
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + h;
            let lp = loss(&xp);
            xp[i] = x0 - h;
            let lm = loss(&xp);
            xp[i] = x0;
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

/// Checks `|a_i - b_i| <= rtol * max(|a_i|, |b_i|) + atol` for every element; on failure the
/// error names the worst element.
pub fn check_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: length {} vs {}", a.len(), b.len()));
    }
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let tol = rtol * x.abs().max(y.abs()) + atol;
        let err = (x - y).abs();
        // NaN anywhere fails.
        if err.is_nan() || err > tol {
            let excess = if tol > 0.0 { err / tol } else { f64::INFINITY };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, e)) => Err(format!(
            "{what}: element {i}: {} vs {} (error {:.3e}, {e:.2}x tolerance rtol={rtol:e} atol={atol:e})",
            a[i],
            b[i],
            (a[i] - b[i]).abs()
        )),
    }
}

/// Panicking form of [`check_close`].
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) {
    if let Err(e) = check_close(what, a, b, rtol, atol) {
        panic!("{e}");
    }
}
