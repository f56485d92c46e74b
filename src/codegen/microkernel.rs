//! The one building block of the JIT: a register-tiled f32x4 GEMM micro-kernel with a fused
//! epilogue, emitted as Cranelift IR and specialized on every size it touches.
//!
//! A tile computes `C[MR x NR] = epilogue(sum_k A[k, :]^T · B[k, :])` where the reduction
//! index `k` runs over `cin` channels times a fixed list of taps:
//! - `A` is a packed panel, `cin * taps` rows of `MR` contiguous floats (weights packed once
//!   per parameter version);
//! - the `B` row of channel `ci` and tap `t` is the `NR = 4 * nv` floats at
//!   `b + ci * cstride + taps[t]`: for a direct convolution the taps are the kernel window's
//!   offsets in the (padded, phase-split) input, so no im2col matrix is ever built; a plain
//!   GEMM is the case of one tap at offset 0 and `cstride = ldb`;
//! - `C` row `r` is at `c + r * ldc`; with `accumulate` the tile adds to what `C` holds.
//!
//! The epilogue is a list of [`TileOp`]s applied to each accumulator while it is still in a
//! register: per-row shift (bias), per-row scale and shift (batch norm), a residual tile with
//! `C`'s strides, and ReLU. So every output value is written exactly once.
//!
//! ABI: `extern "C" fn(a: *const f32, b: *const f32, c: *mut f32, ops: *const *const f32)`,
//! where `ops` holds one pointer per operand of the epilogue, in order, each already offset
//! to the tile's first row (per-row operands) or first element (residual tiles).
//!
//! [`tile_reference`] is the plain-Rust twin that property tests compare against.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

/// One fused step of a tile's epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileOp {
    /// `v += shift[row]`; one operand.
    Shift,
    /// `v = v * scale[row] + shift[row]`; two operands (scale, shift).
    ScaleShift,
    /// `v += residual[row, col]`, residual laid out like `C`; one operand.
    Add,
    /// `v = max(v, 0)` (NaN becomes 0, as `f32::max`).
    Relu,
}

impl TileOp {
    pub fn operands(self) -> usize {
        match self {
            TileOp::Shift | TileOp::Add => 1,
            TileOp::ScaleShift => 2,
            TileOp::Relu => 0,
        }
    }
}

/// Everything a micro-kernel is specialized on; the kernel cache's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileSpec {
    /// Rows of the tile (output channels), each broadcast from `A`.
    pub mr: usize,
    /// f32x4 vectors per row: `NR = 4 * nv` columns.
    pub nv: usize,
    /// Trips of the reduction loop (input channels).
    pub cin: usize,
    /// Offsets in floats of each tap's `B` row from the channel's base; unrolled in the loop.
    pub taps: Vec<usize>,
    /// Floats between consecutive channels' `B` bases.
    pub cstride: usize,
    /// Row stride of `C` (and of residual operands), in floats.
    pub ldc: usize,
    /// Add to `C` instead of overwriting it.
    pub accumulate: bool,
    pub epilogue: Vec<TileOp>,
}

impl TileSpec {
    pub fn nr(&self) -> usize {
        4 * self.nv
    }
    /// Reduction length: channels times taps.
    pub fn k(&self) -> usize {
        self.cin * self.taps.len()
    }
    /// A plain GEMM tile: `B` rows `ldb` apart.
    pub fn gemm(mr: usize, nv: usize, k: usize, ldb: usize, ldc: usize) -> TileSpec {
        TileSpec {
            mr,
            nv,
            cin: k,
            taps: vec![0],
            cstride: ldb,
            ldc,
            accumulate: false,
            epilogue: vec![],
        }
    }
    /// A stable symbol name for the specialization.
    pub fn symbol(&self) -> String {
        let ep: String = self
            .epilogue
            .iter()
            .map(|op| match op {
                TileOp::Shift => 'b',
                TileOp::ScaleShift => 's',
                TileOp::Add => 'a',
                TileOp::Relu => 'r',
            })
            .collect();
        // Taps are named by a short hash: the list can be long, the symbol must stay unique.
        let taps = self.taps.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
            (h ^ t as u64).wrapping_mul(0x100_0000_01b3)
        });
        format!(
            "tile_{}x{}_c{}_t{}_{:06x}_cs{}_ldc{}{}{}{}",
            self.mr,
            self.nr(),
            self.cin,
            self.taps.len(),
            taps & 0xff_ffff,
            self.cstride,
            self.ldc,
            if self.accumulate { "_acc" } else { "" },
            if ep.is_empty() { "" } else { "_" },
            ep
        )
    }
    pub fn epilogue_operands(&self) -> usize {
        self.epilogue.iter().map(|op| op.operands()).sum()
    }
}

/// The native function type of every tile.
pub type TileFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const *const f32);

/// A signature of `n` 64-bit arguments (pointers and lengths) and no result: the shape of
/// every JIT function.
pub fn i64_args_signature(call_conv: cranelift_codegen::isa::CallConv, n: usize) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params
        .extend(std::iter::repeat_n(AbiParam::new(types::I64), n));
    sig
}

/// The Cranelift signature of [`TileFn`].
pub fn tile_signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    i64_args_signature(call_conv, 4)
}

/// Emits the body of a tile into `func` (whose signature is [`tile_signature`]).
pub fn emit_tile(
    spec: &TileSpec,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let (mr, nv) = (spec.mr, spec.nv);
    let mut b = FunctionBuilder::new(func, fctx);
    // Loads of operands may be unaligned; none of them traps (the driver owns the bounds).
    let mem = MemFlagsData::new().with_notrap();
    let f32x4 = types::F32X4;
    let i64t = types::I64;

    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (pa, pb, pc, pops) = (params[0], params[1], params[2], params[3]);

    let var_a = b.declare_var(i64t);
    let var_b = b.declare_var(i64t);
    let var_k = b.declare_var(i64t);
    let acc: Vec<Variable> = (0..mr * nv).map(|_| b.declare_var(f32x4)).collect();
    let row_bytes = |r: usize| (r * spec.ldc * 4) as i32;
    for r in 0..mr {
        for j in 0..nv {
            let init = if spec.accumulate {
                b.ins().load(f32x4, mem, pc, row_bytes(r) + (j * 16) as i32)
            } else {
                let z = b.ins().f32const(0.0);
                b.ins().splat(f32x4, z)
            };
            b.def_var(acc[r * nv + j], init);
        }
    }
    b.def_var(var_a, pa);
    b.def_var(var_b, pb);
    let zero = b.ins().iconst(i64t, 0);
    b.def_var(var_k, zero);
    b.ins().jump(header, &[]);

    // The loop condition is tested at the top, so the body is one straight run of loads that
    // fold into the multiplies.
    b.switch_to_block(header);
    let k = b.use_var(var_k);
    let more = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedLessThan, k, spec.cin as i64);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let a = b.use_var(var_a);
    let bp = b.use_var(var_b);
    for (t, &tap) in spec.taps.iter().enumerate() {
        let bvec: Vec<Value> = (0..nv)
            .map(|j| b.ins().load(f32x4, mem, bp, ((tap + j * 4) * 4) as i32))
            .collect();
        for r in 0..mr {
            let s = b.ins().load(types::F32, mem, a, ((t * mr + r) * 4) as i32);
            let sv = b.ins().splat(f32x4, s);
            for (j, &bv) in bvec.iter().enumerate() {
                let v = b.use_var(acc[r * nv + j]);
                let prod = b.ins().fmul(sv, bv);
                let sum = b.ins().fadd(v, prod);
                b.def_var(acc[r * nv + j], sum);
            }
        }
    }
    let a2 = b.ins().iadd_imm_u(a, (spec.taps.len() * mr * 4) as i64);
    let b2 = b.ins().iadd_imm_u(bp, (spec.cstride * 4) as i64);
    let k2 = b.ins().iadd_imm_u(k, 1);
    b.def_var(var_a, a2);
    b.def_var(var_b, b2);
    b.def_var(var_k, k2);
    b.ins().jump(header, &[]);

    b.switch_to_block(exit);
    // Operand pointers, in epilogue order.
    let n_ops = spec.epilogue_operands();
    let op_ptrs: Vec<Value> = (0..n_ops)
        .map(|i| b.ins().load(i64t, mem, pops, (i * 8) as i32))
        .collect();
    let zf = b.ins().f32const(0.0);
    let zero_v = b.ins().splat(f32x4, zf);
    for r in 0..mr {
        // Per-row operands, broadcast once per row.
        let mut at = 0;
        let mut row_vals: Vec<(Option<Value>, Option<Value>)> = vec![];
        for op in &spec.epilogue {
            match op {
                TileOp::Shift => {
                    let s = b.ins().load(types::F32, mem, op_ptrs[at], (r * 4) as i32);
                    row_vals.push((None, Some(b.ins().splat(f32x4, s))));
                }
                TileOp::ScaleShift => {
                    let s = b.ins().load(types::F32, mem, op_ptrs[at], (r * 4) as i32);
                    let t = b
                        .ins()
                        .load(types::F32, mem, op_ptrs[at + 1], (r * 4) as i32);
                    let sv = b.ins().splat(f32x4, s);
                    let tv = b.ins().splat(f32x4, t);
                    row_vals.push((Some(sv), Some(tv)));
                }
                TileOp::Add | TileOp::Relu => row_vals.push((None, None)),
            }
            at += op.operands();
        }
        for j in 0..nv {
            let mut v = b.use_var(acc[r * nv + j]);
            let mut at = 0;
            for (op, &(scale, shift)) in spec.epilogue.iter().zip(&row_vals) {
                v = match op {
                    TileOp::Shift => b.ins().fadd(v, shift.expect("shift")),
                    TileOp::ScaleShift => {
                        let m = b.ins().fmul(v, scale.expect("scale"));
                        b.ins().fadd(m, shift.expect("shift"))
                    }
                    TileOp::Add => {
                        let res =
                            b.ins()
                                .load(f32x4, mem, op_ptrs[at], row_bytes(r) + (j * 16) as i32);
                        b.ins().fadd(v, res)
                    }
                    TileOp::Relu => {
                        let positive = b.ins().fcmp(FloatCC::GreaterThan, v, zero_v);
                        let mask = b.ins().bitcast(f32x4, MemFlagsData::new(), positive);
                        b.ins().bitselect(mask, v, zero_v)
                    }
                };
                at += op.operands();
            }
            b.ins().store(mem, v, pc, row_bytes(r) + (j * 16) as i32);
        }
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
}

/// Plain-Rust twin of a tile: the same contract over slices. `ops` holds the epilogue's
/// operands as slices starting at the tile's origin (per-row operands at its first row).
///
/// # Panics
/// When a slice is too short for the spec.
pub fn tile_reference(spec: &TileSpec, a: &[f32], b: &[f32], c: &mut [f32], ops: &[&[f32]]) {
    let nr = spec.nr();
    for r in 0..spec.mr {
        for j in 0..nr {
            let mut v = if spec.accumulate {
                c[r * spec.ldc + j]
            } else {
                0.0
            };
            let ntaps = spec.taps.len();
            for ci in 0..spec.cin {
                for (t, &tap) in spec.taps.iter().enumerate() {
                    v += a[(ci * ntaps + t) * spec.mr + r] * b[ci * spec.cstride + tap + j];
                }
            }
            c[r * spec.ldc + j] = v;
        }
    }
    apply_tile_ops(&spec.epilogue, spec.mr, nr, c, spec.ldc, ops, spec.ldc);
}

/// The epilogue's plain-Rust twin over an `rows x cols` block of `c` (row stride `ldc`);
/// residual operands have row stride `ld_res`. The JIT applies the same ops in registers.
pub fn apply_tile_ops(
    epilogue: &[TileOp],
    rows: usize,
    cols: usize,
    c: &mut [f32],
    ldc: usize,
    ops: &[&[f32]],
    ld_res: usize,
) {
    for r in 0..rows {
        for j in 0..cols {
            let mut v = c[r * ldc + j];
            let mut at = 0;
            for op in epilogue {
                v = match op {
                    TileOp::Shift => v + ops[at][r],
                    TileOp::ScaleShift => v * ops[at][r] + ops[at + 1][r],
                    TileOp::Add => v + ops[at][r * ld_res + j],
                    TileOp::Relu => v.max(0.0),
                };
                at += op.operands();
            }
            c[r * ldc + j] = v;
        }
    }
}
