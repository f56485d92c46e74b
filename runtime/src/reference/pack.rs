//! Weight packing: a conv's OIHW weights rearranged (and, for Winograd, transformed) into the
//! row panels that the JIT's register tiles read, as a buffer of the program
//! ([`crate::program::Layout::PackedWeights`]) written by a [`crate::program::Kernel::PackWeights`]
//! step. Plain Rust, shared by both engines: packing is a copy, not a hot loop.

use crate::spec::{ConvSpec, WeightPacking};

/// `G` of Winograd F(2x2, 3x3) (Lavin & Gray, 2016).
pub const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of Winograd F(4x4, 3x3), with the interpolation points 0, ±1, ±2 and infinity.
pub const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `G g G^T` for one 3x3 filter `w`.
pub fn transform_weight<const A: usize>(g: &[[f32; 3]; A], w: &[[f32; 3]; 3]) -> [[f32; A]; A] {
    let mut tmp = [[0.0f32; 3]; A];
    for i in 0..A {
        for j in 0..3 {
            tmp[i][j] = (0..3).map(|k| g[i][k] * w[k][j]).sum();
        }
    }
    let mut u = [[0.0f32; A]; A];
    for i in 0..A {
        for j in 0..A {
            u[i][j] = (0..3).map(|k| tmp[i][k] * g[j][k]).sum();
        }
    }
    u
}

/// Packs a row-major `oc x k` matrix `w` into row panels of `rows`: panel `t` holds rows
/// `t*rows..` (the last one may be shorter), `k`-major, so that a tile reads `rows`
/// consecutive floats per reduction index. `out` has exactly `oc * k` floats.
pub fn pack_panels(w: &[f32], oc: usize, k: usize, rows: usize, out: &mut [f32]) {
    assert!(rows > 0, "panels of zero rows");
    assert_eq!(w.len(), oc * k, "matrix of {oc} x {k}");
    assert_eq!(out.len(), oc * k, "packed matrix of {oc} x {k}");
    let mut at = 0;
    let mut r0 = 0;
    while r0 < oc {
        let mr = rows.min(oc - r0);
        for kk in 0..k {
            for r in 0..mr {
                out[at + kk * mr + r] = w[(r0 + r) * k + kk];
            }
        }
        at += mr * k;
        r0 += mr;
    }
}

/// Packs the OIHW weights `w` of `spec` as `packing` says into `out`
/// ([`WeightPacking::packed_len`] floats).
pub fn pack_conv_weights(spec: &ConvSpec, packing: &WeightPacking, w: &[f32], out: &mut [f32]) {
    let (oc, ic) = (spec.out_channels, spec.in_channels / spec.groups.max(1));
    let k = ic * spec.kernel[0] * spec.kernel[1];
    assert_eq!(w.len(), oc * k, "weights of {:?}", spec.weight_shape());
    assert_eq!(
        out.len(),
        packing.packed_len(spec),
        "packed weights of {spec:?}"
    );
    match packing.winograd {
        None => pack_panels(w, oc, k, packing.panel_rows, out),
        Some(2) => pack_winograd(&G2, w, oc, ic, packing.panel_rows, out),
        Some(4) => pack_winograd(&G4, w, oc, ic, packing.panel_rows, out),
        Some(m) => panic!("no Winograd F({m}x{m}, 3x3) transform"),
    }
}

/// `U = G g G^T` of every 3x3 filter, stored per position as an `oc x ic` matrix, each
/// packed by [`pack_panels`].
fn pack_winograd<const A: usize>(
    g: &[[f32; 3]; A],
    w: &[f32],
    oc: usize,
    ic: usize,
    rows: usize,
    out: &mut [f32],
) {
    let mut u = vec![0.0f32; A * A * oc * ic];
    for o in 0..oc {
        for c in 0..ic {
            let f = &w[(o * ic + c) * 9..(o * ic + c + 1) * 9];
            let filt = [[f[0], f[1], f[2]], [f[3], f[4], f[5]], [f[6], f[7], f[8]]];
            let t = transform_weight(g, &filt);
            for (pos, v) in t.iter().flatten().enumerate() {
                u[(pos * oc + o) * ic + c] = *v;
            }
        }
    }
    for (u, out) in u.chunks(oc * ic).zip(out.chunks_mut(oc * ic)) {
        pack_panels(u, oc, ic, rows, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_hold_each_row_block_reduction_major() {
        // 5 rows of 3 in panels of 2: [r0 r1] x k, [r2 r3] x k, [r4] x k.
        let w: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let mut out = vec![0.0; 15];
        pack_panels(&w, 5, 3, 2, &mut out);
        assert_eq!(
            out,
            [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11., 12., 13., 14.]
        );
    }

    /// The transformed filter of a 3x3 `w` reproduces the direct correlation through
    /// `A^T [U .* (B^T d B)] A` on one patch (F(2x2): `A` and `B` written out here).
    #[test]
    fn winograd_f2_weights_reproduce_direct_correlation() {
        const BT: [[f32; 4]; 4] = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let w = [[0.3f32, -0.2, 0.5], [0.1, 0.7, -0.4], [-0.6, 0.2, 0.9]];
        let d: [[f32; 4]; 4] =
            std::array::from_fn(|i| std::array::from_fn(|j| (i * 4 + j) as f32 * 0.1 - 0.7));
        let u = transform_weight(&G2, &w);
        let bd: [[f32; 4]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| (0..4).map(|k| BT[i][k] * d[k][j]).sum())
        });
        let v: [[f32; 4]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| (0..4).map(|k| bd[i][k] * BT[j][k]).sum())
        });
        let m: [[f32; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| u[i][j] * v[i][j]));
        for oy in 0..2 {
            for ox in 0..2 {
                let y: f32 = (0..4)
                    .flat_map(|i| (0..4).map(move |j| (i, j)))
                    .map(|(i, j)| AT[oy][i] * m[i][j] * AT[ox][j])
                    .sum();
                let direct: f32 = (0..3)
                    .flat_map(|i| (0..3).map(move |j| (i, j)))
                    .map(|(i, j)| w[i][j] * d[oy + i][ox + j])
                    .sum();
                assert!((y - direct).abs() < 1e-5, "{y} vs {direct}");
            }
        }
    }

    #[test]
    fn winograd_packing_is_per_position_panels() {
        let spec = ConvSpec::square(2, 3, 3, 1);
        let packing = WeightPacking {
            winograd: Some(4),
            panel_rows: 2,
        };
        let w: Vec<f32> = (0..54).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0; packing.packed_len(&spec)];
        pack_conv_weights(&spec, &packing, &w, &mut out);
        assert_eq!(out.len(), 36 * 6);
        for o in 0..3 {
            for c in 0..2 {
                let f = &w[(o * 2 + c) * 9..][..9];
                let u = transform_weight(
                    &G4,
                    &[[f[0], f[1], f[2]], [f[3], f[4], f[5]], [f[6], f[7], f[8]]],
                );
                for (pos, &v) in u.iter().flatten().enumerate() {
                    // Panel of rows 0..2 then row 2, each `ic`-major.
                    let (panel_at, mr, r) = if o < 2 { (0, 2, o) } else { (4, 1, 0) };
                    assert_eq!(out[pos * 6 + panel_at + c * mr + r], v);
                }
            }
        }
    }
}
