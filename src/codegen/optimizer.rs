//! Optimizer updates as JIT code: one f32x4 loop per optimizer specialization that reads a
//! parameter, its gradient and its state once and writes the parameter and state once.
//!
//! The hyperparameters that stay fixed for a run (momentum, betas, eps, weight decay) are
//! baked into the code; the learning rate and Adam's bias corrections change per step and
//! arrive as scalars. The first step, where PyTorch creates the state from the gradient, is a
//! specialization of its own. The plain-Rust twins are `sgd_step` and `adam_step` in the
//! runtime's reference kernels; the tail of a tensor that does not fill a vector runs there.

use super::conv::SendPtr;
use super::jit::CompiledTiles;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use rayon::prelude::*;
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::reference as k;
use resnetc_runtime::spec::{AdamSpec, SgdSpec};

/// An optimizer update specialization. Floats are kept as bits so specs can key a map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpdateSpec {
    Sgd {
        momentum: u32,
        weight_decay: u32,
        dampening: u32,
        nesterov: bool,
        first: bool,
    },
    Adam {
        beta1: u32,
        beta2: u32,
        eps: u32,
        weight_decay: u32,
        decoupled: bool,
    },
}

impl UpdateSpec {
    pub fn sgd(s: &SgdSpec, first: bool) -> Self {
        UpdateSpec::Sgd {
            momentum: s.momentum.to_bits(),
            weight_decay: s.weight_decay.to_bits(),
            dampening: s.dampening.to_bits(),
            nesterov: s.nesterov,
            first,
        }
    }

    pub fn adam(a: &AdamSpec) -> Self {
        UpdateSpec::Adam {
            beta1: a.beta1.to_bits(),
            beta2: a.beta2.to_bits(),
            eps: a.eps.to_bits(),
            weight_decay: a.weight_decay.to_bits(),
            decoupled: a.decoupled,
        }
    }

    /// A symbol naming the specialization.
    pub fn symbol(&self) -> String {
        match self {
            UpdateSpec::Sgd {
                momentum,
                weight_decay,
                dampening,
                nesterov,
                first,
            } => format!(
                "sgd_m{}_wd{}_d{}{}{}",
                f32::from_bits(*momentum),
                f32::from_bits(*weight_decay),
                f32::from_bits(*dampening),
                if *nesterov { "_nesterov" } else { "" },
                if *first { "_first" } else { "" }
            ),
            UpdateSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
            } => format!(
                "{}_b{}_{}_eps{}_wd{}",
                if *decoupled { "adamw" } else { "adam" },
                f32::from_bits(*beta1),
                f32::from_bits(*beta2),
                f32::from_bits(*eps),
                f32::from_bits(*weight_decay)
            ),
        }
    }
}

/// `(param, grad, state0, state1, vectors, scalars)`: updates `4 * vectors` elements in place.
/// Scalars: SGD `[lr]`; Adam `[lr, lr / (1 - b1^t), sqrt(1 - b2^t), 1 - lr * wd]`.
pub type UpdateFn = unsafe extern "C" fn(*mut f32, *const f32, *mut f32, *mut f32, i64, *const f32);

/// The Cranelift signature of [`UpdateFn`].
pub fn update_signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    super::microkernel::i64_args_signature(call_conv, 6)
}

/// Emits the update loop of `spec` into `func` (whose signature is [`update_signature`]).
pub fn emit_update(
    spec: &UpdateSpec,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let mut b = FunctionBuilder::new(func, fctx);
    // Tensors need not be 16-byte aligned; the driver owns the bounds.
    let mem = MemFlagsData::new().with_notrap();
    let (f32x4, i64t) = (types::F32X4, types::I64);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let a = b.block_params(entry).to_vec();
    let (pp, pg, ps0, ps1, n, scalars) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    let splat_const = |b: &mut FunctionBuilder, x: f32| {
        let c = b.ins().f32const(x);
        b.ins().splat(f32x4, c)
    };
    let splat_scalar = |b: &mut FunctionBuilder, i: usize| {
        let s = b.ins().load(types::F32, mem, scalars, (i * 4) as i32);
        b.ins().splat(f32x4, s)
    };
    let lr = splat_scalar(&mut b, 0);
    // Per-specialization constants and per-step scalars, splatted once before the loop.
    let consts: Vec<Value> = match *spec {
        UpdateSpec::Sgd {
            momentum,
            weight_decay,
            dampening,
            ..
        } => vec![
            splat_const(&mut b, f32::from_bits(momentum)),
            splat_const(&mut b, f32::from_bits(weight_decay)),
            splat_const(&mut b, 1.0 - f32::from_bits(dampening)),
        ],
        UpdateSpec::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } => vec![
            splat_const(&mut b, 1.0 - f32::from_bits(beta1)),
            splat_const(&mut b, f32::from_bits(beta2)),
            splat_const(&mut b, 1.0 - f32::from_bits(beta2)),
            splat_const(&mut b, f32::from_bits(eps)),
            splat_const(&mut b, f32::from_bits(weight_decay)),
            splat_scalar(&mut b, 1),
            splat_scalar(&mut b, 2),
            splat_scalar(&mut b, 3),
        ],
    };
    let var_i = b.declare_var(i64t);
    let zero = b.ins().iconst(i64t, 0);
    b.def_var(var_i, zero);
    b.ins().jump(header, &[]);

    b.switch_to_block(header);
    let i = b.use_var(var_i);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, n);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let off = b.ins().ishl_imm_u(i, 4);
    let at = |b: &mut FunctionBuilder, base: Value| b.ins().iadd(base, off);
    let (ap, ag, a0, a1) = (
        at(&mut b, pp),
        at(&mut b, pg),
        at(&mut b, ps0),
        at(&mut b, ps1),
    );
    let p = b.ins().load(f32x4, mem, ap, 0);
    let g = b.ins().load(f32x4, mem, ag, 0);
    match *spec {
        UpdateSpec::Sgd {
            nesterov, first, ..
        } => {
            let (mom, wd, damp) = (consts[0], consts[1], consts[2]);
            // g = grad + wd * p; v = g (first) or mom * v + (1 - dampening) * g
            let wp = b.ins().fmul(wd, p);
            let g = b.ins().fadd(g, wp);
            let v = if first {
                g
            } else {
                let v0 = b.ins().load(f32x4, mem, a0, 0);
                let mv = b.ins().fmul(mom, v0);
                let dg = b.ins().fmul(damp, g);
                b.ins().fadd(mv, dg)
            };
            b.ins().store(mem, v, a0, 0);
            let d = if nesterov {
                let mv = b.ins().fmul(mom, v);
                b.ins().fadd(g, mv)
            } else {
                v
            };
            let step = b.ins().fmul(lr, d);
            let p2 = b.ins().fsub(p, step);
            b.ins().store(mem, p2, ap, 0);
        }
        UpdateSpec::Adam { decoupled, .. } => {
            let (one_b1, b2, one_b2, eps, wd) =
                (consts[0], consts[1], consts[2], consts[3], consts[4]);
            let (step_size, bc2_sqrt, decay) = (consts[5], consts[6], consts[7]);
            let (p, g) = if decoupled {
                (b.ins().fmul(p, decay), g)
            } else {
                let wp = b.ins().fmul(wd, p);
                (p, b.ins().fadd(g, wp))
            };
            // PyTorch's order of operations: m + (1 - b1) (g - m); v b2 + (1 - b2) g g.
            let m0 = b.ins().load(f32x4, mem, a0, 0);
            let v0 = b.ins().load(f32x4, mem, a1, 0);
            let gm = b.ins().fsub(g, m0);
            let dm = b.ins().fmul(one_b1, gm);
            let m = b.ins().fadd(m0, dm);
            let vb = b.ins().fmul(v0, b2);
            let gg0 = b.ins().fmul(one_b2, g);
            let gg = b.ins().fmul(gg0, g);
            let v = b.ins().fadd(vb, gg);
            b.ins().store(mem, m, a0, 0);
            b.ins().store(mem, v, a1, 0);
            let root = b.ins().sqrt(v);
            let scaled = b.ins().fdiv(root, bc2_sqrt);
            let denom = b.ins().fadd(scaled, eps);
            let ratio = b.ins().fdiv(m, denom);
            let step = b.ins().fmul(step_size, ratio);
            let p2 = b.ins().fsub(p, step);
            b.ins().store(mem, p2, ap, 0);
        }
    }
    let i2 = b.ins().iadd_imm_u(i, 1);
    b.def_var(var_i, i2);
    b.ins().jump(header, &[]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
}

/// The optimizer kinds the JIT compiles, per program kernel: SGD needs its first-step
/// specialization too.
pub fn update_specs(kernel: &resnetc_runtime::program::Kernel) -> Vec<UpdateSpec> {
    use resnetc_runtime::program::Kernel;
    match kernel {
        Kernel::SgdUpdate { spec } => {
            vec![UpdateSpec::sgd(spec, true), UpdateSpec::sgd(spec, false)]
        }
        Kernel::AdamUpdate { spec } => vec![UpdateSpec::adam(spec)],
        _ => vec![],
    }
}

/// Elements per parallel chunk: large enough that a chunk's work dwarfs rayon's overhead.
const CHUNK: usize = 1 << 15;

/// The JIT kernel of one optimizer step (`SgdUpdate` or `AdamUpdate`).
pub struct JitUpdate {
    kind: Optimizer,
    /// SGD: (first step, later steps); Adam: the same function twice.
    fns: (UpdateFn, UpdateFn),
    symbols: (String, String),
    // Keeps the code alive while `fns` point into it.
    _code: std::sync::Arc<super::jit::JitCode>,
}

enum Optimizer {
    Sgd(SgdSpec),
    Adam(AdamSpec),
}

impl JitUpdate {
    pub fn new(kernel: &resnetc_runtime::program::Kernel, tiles: &CompiledTiles) -> Option<Self> {
        use resnetc_runtime::program::Kernel;
        let (kind, first, later) = match kernel {
            Kernel::SgdUpdate { spec } => (
                Optimizer::Sgd(*spec),
                UpdateSpec::sgd(spec, true),
                UpdateSpec::sgd(spec, false),
            ),
            Kernel::AdamUpdate { spec } => {
                let s = UpdateSpec::adam(spec);
                (Optimizer::Adam(*spec), s.clone(), s)
            }
            _ => return None,
        };
        Some(JitUpdate {
            kind,
            fns: (tiles.get_update(&first), tiles.get_update(&later)),
            symbols: (first.symbol(), later.symbol()),
            _code: tiles.code.clone(),
        })
    }
}

impl StepKernel for JitUpdate {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        _outs: &mut [&mut [f32]],
    ) {
        let grad = ins[0];
        let first = ctx.optimizer_steps == 0;
        let t = ctx.optimizer_steps + 1;
        let (p, state) = inouts.split_at_mut(1);
        let p = &mut p[0];
        let len = p.len();
        assert_eq!(grad.len(), len, "optimizer update: gradient length");
        let (s0, s1): (&mut [f32], &mut [f32]) = match state {
            [s0] => (s0, &mut []),
            [s0, s1, ..] => (s0, s1),
            [] => panic!("optimizer update: no state buffer"),
        };
        let scalars: [f32; 4] = match &self.kind {
            Optimizer::Sgd(_) => [ctx.lr, 0.0, 0.0, 0.0],
            Optimizer::Adam(a) => {
                // Bias corrections in f64, as the reference and PyTorch compute them.
                let tt = t.min(i32::MAX as u64) as i32;
                let bc1 = 1.0 - (a.beta1 as f64).powi(tt);
                let bc2 = 1.0 - (a.beta2 as f64).powi(tt);
                [
                    ctx.lr,
                    (ctx.lr as f64 / bc1) as f32,
                    bc2.sqrt() as f32,
                    1.0 - ctx.lr * a.weight_decay,
                ]
            }
        };
        if let Optimizer::Adam(_) = self.kind {
            assert!(s0.len() == len && s1.len() == len, "adam: state lengths");
            if first {
                // PyTorch creates the moments at zero on the first step.
                s0.fill(0.0);
                s1.fill(0.0);
            }
        } else {
            assert_eq!(s0.len(), len, "sgd: momentum length");
        }
        let f = if first { self.fns.0 } else { self.fns.1 };
        let vec_len = len / 4 * 4;
        let (pp, pg, p0) = (
            SendPtr(p.as_mut_ptr()),
            SendPtr(grad.as_ptr() as *mut f32),
            SendPtr(s0.as_mut_ptr()),
        );
        let p1 = SendPtr(if s1.is_empty() {
            std::ptr::null_mut()
        } else {
            s1.as_mut_ptr()
        });
        let chunks = vec_len.div_ceil(CHUNK);
        let run_chunk = |c: usize| {
            let start = c * CHUNK;
            let end = (start + CHUNK).min(vec_len);
            let at = |q: SendPtr| {
                if q.0.is_null() {
                    q.0
                } else {
                    // SAFETY: start < vec_len <= the length of every buffer.
                    unsafe { q.0.add(start) }
                }
            };
            // SAFETY: the chunks are disjoint ranges of buffers of `len` elements (checked
            // above), and `f` touches exactly `end - start` elements of each from its
            // pointers (the second state only for Adam, whose buffers are non-empty).
            unsafe {
                f(
                    at(pp),
                    at(pg),
                    at(p0),
                    at(p1),
                    ((end - start) / 4) as i64,
                    scalars.as_ptr(),
                )
            };
        };
        // Most tensors (BN vectors, CIFAR convs) fit one chunk: no thread pool round trip.
        if chunks <= 1 {
            (0..chunks).for_each(run_chunk);
        } else {
            (0..chunks).into_par_iter().for_each(run_chunk);
        }
        // The tail that does not fill a vector runs on the reference twin.
        if vec_len < len {
            let r = vec_len..len;
            match &self.kind {
                Optimizer::Sgd(s) => k::sgd_step(
                    &mut p[r.clone()],
                    &grad[r.clone()],
                    &mut s0[r],
                    ctx.lr,
                    s,
                    first,
                ),
                Optimizer::Adam(a) => {
                    k::adam_step(
                        &mut p[r.clone()],
                        &grad[r.clone()],
                        &mut s0[r.clone()],
                        &mut s1[r],
                        ctx.lr,
                        a,
                        t,
                    );
                }
            }
        }
    }

    fn engine(&self) -> &'static str {
        "jit"
    }

    fn describe(&self) -> String {
        if self.symbols.0 == self.symbols.1 {
            self.symbols.0.clone()
        } else {
            format!("{} / {}", self.symbols.0, self.symbols.1)
        }
    }
}
