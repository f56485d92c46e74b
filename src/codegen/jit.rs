//! The JIT module: compiles a set of specializations (conv tiles and optimizer updates) into
//! one Cranelift JIT module and hands out native function pointers. Identical
//! specializations share one function.

use super::microkernel::{emit_tile, tile_signature, TileFn, TileSpec};
use super::optimizer::{emit_update, update_signature, UpdateFn, UpdateSpec};
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why the JIT cannot run on this CPU, if it cannot: Cranelift's x86-64 vector lowering needs
/// SSE4.1, and the tiles assume AVX's unaligned memory operands to run at speed.
pub fn cpu_unsupported() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let missing: Vec<&str> = [
            ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
        ]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "this CPU lacks {}; the JIT needs SSE4.1, AVX and FMA",
                missing.join(", ")
            ))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Some("the JIT targets x86-64 only".to_string())
    }
}

/// Finalized native code. The functions stay valid while this lives; kernels hold it in an
/// `Arc` so the code outlives every pointer into it.
pub struct JitCode {
    module: Option<JITModule>,
}

// SAFETY: after `finalize_definitions` the module is only kept alive, never mutated; the code
// pages are read-only and executable, and may be called from any thread.
unsafe impl Send for JitCode {}
unsafe impl Sync for JitCode {}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the last `Arc` is gone, so no kernel can call into the code any more.
            unsafe { m.free_memory() };
        }
    }
}

/// One function of the module.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FnSpec {
    Tile(TileSpec),
    Update(UpdateSpec),
}

impl FnSpec {
    fn symbol(&self) -> String {
        match self {
            FnSpec::Tile(t) => t.symbol(),
            FnSpec::Update(u) => u.symbol(),
        }
    }
}

/// Collects specializations, compiles them together, and resolves them to pointers.
#[derive(Default)]
pub struct TileSet {
    specs: BTreeMap<FnSpec, usize>,
}

/// The compiled functions of a [`TileSet`].
pub struct CompiledTiles {
    pub code: Arc<JitCode>,
    fns: BTreeMap<TileSpec, TileFn>,
    updates: BTreeMap<UpdateSpec, UpdateFn>,
    /// Cranelift IR text per symbol (kept only when asked).
    pub clif: BTreeMap<String, String>,
    pub compile_time: std::time::Duration,
}

impl CompiledTiles {
    pub fn get(&self, spec: &TileSpec) -> TileFn {
        *self
            .fns
            .get(spec)
            .unwrap_or_else(|| panic!("tile {} was not compiled", spec.symbol()))
    }
    pub fn get_update(&self, spec: &UpdateSpec) -> UpdateFn {
        *self
            .updates
            .get(spec)
            .unwrap_or_else(|| panic!("update {} was not compiled", spec.symbol()))
    }
    /// Distinct functions compiled.
    pub fn len(&self) -> usize {
        self.fns.len() + self.updates.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TileSet {
    pub fn add(&mut self, spec: TileSpec) {
        let n = self.specs.len();
        self.specs.entry(FnSpec::Tile(spec)).or_insert(n);
    }

    pub fn add_update(&mut self, spec: UpdateSpec) {
        let n = self.specs.len();
        self.specs.entry(FnSpec::Update(spec)).or_insert(n);
    }

    /// Compiles every tile into one module. `keep_clif` keeps the IR text for `--emit clif`.
    pub fn compile(&self, keep_clif: bool) -> Result<CompiledTiles, String> {
        let start = std::time::Instant::now();
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v).map_err(|e| format!("cranelift flag {k}: {e}"))
        };
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        // `speed` reorders the hand-placed loads of the tile and measured slower here.
        set(&mut flags, "opt_level", "none")?;
        let verify = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        set(&mut flags, "enable_verifier", verify)?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("host not supported by cranelift: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("cranelift ISA: {e}"))?;
        let call_conv = isa.default_call_conv();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        let mut ids: Vec<(FnSpec, FuncId)> = vec![];
        let mut clif = BTreeMap::new();
        for spec in self.specs.keys() {
            let sig = match spec {
                FnSpec::Tile(_) => tile_signature(call_conv),
                FnSpec::Update(_) => update_signature(call_conv),
            };
            let name = spec.symbol();
            let id = module
                .declare_function(&name, Linkage::Local, &sig)
                .map_err(|e| format!("declare {name}: {e}"))?;
            ctx.func.signature = sig;
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            match spec {
                FnSpec::Tile(t) => emit_tile(t, &mut ctx.func, &mut fctx, module.target_config()),
                FnSpec::Update(u) => {
                    emit_update(u, &mut ctx.func, &mut fctx, module.target_config())
                }
            }
            ctx.set_disasm(keep_clif);
            let ir = keep_clif.then(|| ctx.func.display().to_string());
            module
                .define_function(id, &mut ctx)
                .map_err(|e| format!("compile {name}: {e:?}"))?;
            if let Some(ir) = ir {
                // The IR, then the machine code Cranelift emitted for it.
                let asm = ctx
                    .compiled_code()
                    .and_then(|c| c.vcode.clone())
                    .unwrap_or_default();
                clif.insert(name.clone(), format!("{ir}\n; x86-64:\n{asm}"));
            }
            module.clear_context(&mut ctx);
            ids.push((spec.clone(), id));
        }
        module
            .finalize_definitions()
            .map_err(|e| format!("finalize: {e}"))?;
        let mut fns = BTreeMap::new();
        let mut updates = BTreeMap::new();
        for (spec, id) in ids {
            let p = module.get_finalized_function(id);
            match spec {
                // SAFETY: the function was emitted with `tile_signature`, which is `TileFn`'s
                // C ABI on this target.
                FnSpec::Tile(t) => {
                    fns.insert(t, unsafe { std::mem::transmute::<*const u8, TileFn>(p) });
                }
                // SAFETY: likewise `update_signature` and `UpdateFn`.
                FnSpec::Update(u) => {
                    updates.insert(u, unsafe { std::mem::transmute::<*const u8, UpdateFn>(p) });
                }
            }
        }
        Ok(CompiledTiles {
            code: Arc::new(JitCode {
                module: Some(module),
            }),
            fns,
            updates,
            clif,
            compile_time: start.elapsed(),
        })
    }
}
