//! Weight packing: a conv's OIHW weights rearranged (and, for Winograd, transformed) into the
//! row panels that the JIT's register tiles read, as a buffer of the program
//! ([`crate::program::Layout::PackedWeights`]) written by a [`crate::program::Kernel::PackWeights`]
//! step. Plain Rust, shared by both engines: packing is a copy, not a hot loop.

use crate::spec::{ConvSpec, WeightPacking};
use rayon::prelude::*;

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
    assert!(
        packing.winograd.is_none() || packing.panel_rows <= MAX_PANEL_ROWS,
        "Winograd panels of at most {MAX_PANEL_ROWS} rows"
    );
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
/// packed as [`pack_panels`] packs it. Each value goes straight to its packed place, in
/// parallel over the row panels (training packs every step: ResNet-50's Winograd layers
/// are 33M floats).
fn pack_winograd<const A: usize>(
    g: &[[f32; 3]; A],
    w: &[f32],
    oc: usize,
    ic: usize,
    rows: usize,
    out: &mut [f32],
) {
    // Panel `t` of every position: disjoint slices of `out`, `[position][ic][mr]` each.
    let mut panels: Vec<Vec<&mut [f32]>> = (0..oc.div_ceil(rows))
        .map(|_| Vec::with_capacity(A * A))
        .collect();
    for position in out.chunks_mut(oc * ic) {
        let mut rest = position;
        for (t, panel) in panels.iter_mut().enumerate() {
            let mr = rows.min(oc - t * rows);
            let (head, tail) = rest.split_at_mut(mr * ic);
            panel.push(head);
            rest = tail;
        }
    }
    panels
        .into_par_iter()
        .enumerate()
        .for_each(|(t, mut positions)| {
            let r0 = t * rows;
            let mr = rows.min(oc - r0);
            // The panel's `mr` filters of one input channel side by side, as lanes: the
            // transform runs on vectors and each position's `mr` values are one store.
            let mut lanes = [[0.0f32; MAX_PANEL_ROWS]; 9];
            for c in 0..ic {
                for r in 0..mr {
                    let f = &w[((r0 + r) * ic + c) * 9..][..9];
                    for (k, &v) in f.iter().enumerate() {
                        lanes[k][r] = v;
                    }
                }
                let u = transform_weight_lanes(g, &lanes);
                for (slot, values) in positions.iter_mut().zip(u.iter().flatten()) {
                    slot[c * mr..(c + 1) * mr].copy_from_slice(&values[..mr]);
                }
            }
        });
}

/// Most rows of a packed panel (the JIT's tiles have at most 14).
const MAX_PANEL_ROWS: usize = 16;

/// [`transform_weight`] of up to [`MAX_PANEL_ROWS`] filters at once, lane by lane in the
/// same order of operations (so the same bits): `w[3 * i + j]` holds tap `(i, j)` of each.
fn transform_weight_lanes<const A: usize>(
    g: &[[f32; 3]; A],
    w: &[[f32; MAX_PANEL_ROWS]; 9],
) -> [[[f32; MAX_PANEL_ROWS]; A]; A] {
    let mut tmp = [[[0.0f32; MAX_PANEL_ROWS]; 3]; A];
    for i in 0..A {
        for j in 0..3 {
            for l in 0..MAX_PANEL_ROWS {
                tmp[i][j][l] = g[i][0] * w[j][l] + g[i][1] * w[3 + j][l] + g[i][2] * w[6 + j][l];
            }
        }
    }
    let mut u = [[[0.0f32; MAX_PANEL_ROWS]; A]; A];
    for i in 0..A {
        for j in 0..A {
            for l in 0..MAX_PANEL_ROWS {
                u[i][j][l] =
                    tmp[i][0][l] * g[j][0] + tmp[i][1][l] * g[j][1] + tmp[i][2][l] * g[j][2];
            }
        }
    }
    u
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

    /// Each transformed value sits where [`pack_panels`] would put it, with the bits of
    /// [`transform_weight`] (the packing transforms a panel's filters as vector lanes).
    #[test]
    fn winograd_packing_is_per_position_panels() {
        for (oc, ic, rows, m) in [(3, 2, 2, 4), (17, 3, 14, 4), (8, 5, 8, 2)] {
            let spec = ConvSpec::square(ic, oc, 3, 1);
            let packing = WeightPacking {
                winograd: Some(m),
                panel_rows: rows,
            };
            let w: Vec<f32> = (0..oc * ic * 9).map(|v| (v as f32 * 0.37).sin()).collect();
            let mut out = vec![f32::NAN; packing.packed_len(&spec)];
            pack_conv_weights(&spec, &packing, &w, &mut out);
            let a = m + 2;
            assert_eq!(out.len(), a * a * oc * ic);
            for pos in 0..a * a {
                // Position `pos` unpacked: `[oc][ic]`.
                let mut u = vec![0.0f32; oc * ic];
                for o in 0..oc {
                    for c in 0..ic {
                        let f = &w[(o * ic + c) * 9..][..9];
                        let filt = [[f[0], f[1], f[2]], [f[3], f[4], f[5]], [f[6], f[7], f[8]]];
                        let t: Vec<f32> = if m == 4 {
                            transform_weight(&G4, &filt)
                                .iter()
                                .flatten()
                                .copied()
                                .collect()
                        } else {
                            transform_weight(&G2, &filt)
                                .iter()
                                .flatten()
                                .copied()
                                .collect()
                        };
                        u[o * ic + c] = t[pos];
                    }
                }
                let mut want = vec![0.0f32; oc * ic];
                pack_panels(&u, oc, ic, rows, &mut want);
                let got = &out[pos * oc * ic..(pos + 1) * oc * ic];
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_bits() == w.to_bits()),
                    "F({m}) oc {oc} ic {ic} rows {rows} position {pos}"
                );
            }
        }
    }
}
