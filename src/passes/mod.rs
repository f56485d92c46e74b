//! Graph-to-graph passes and the pipeline that runs them.
//!
//! Like Cranelift's `Context::optimize`, the order is spelled out in one place
//! ([`Pipeline::for_level`]) and the verifier runs after every pass.

pub mod dead_code;
pub mod fold_batch_norm;
pub mod freeze;
pub mod fuse_epilogue;
pub mod fuse_residual_add;
mod util;

use crate::ir::{verify, Graph, IrError, IrErrorKind, Mode};

/// A named pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    FoldBatchNorm,
    FuseEpilogue,
    FuseResidualAdd,
    DeadCode,
}

impl Pass {
    pub const ALL: [Pass; 4] = [
        Pass::FoldBatchNorm,
        Pass::FuseEpilogue,
        Pass::FuseResidualAdd,
        Pass::DeadCode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pass::FoldBatchNorm => "fold_batch_norm",
            Pass::FuseEpilogue => "fuse_epilogue",
            Pass::FuseResidualAdd => "fuse_residual_add",
            Pass::DeadCode => "dead_code",
        }
    }

    pub fn from_name(name: &str) -> Option<Pass> {
        Pass::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Runs the pass; returns whether it changed the graph.
    pub fn run(self, g: &mut Graph) -> Result<bool, IrError> {
        match self {
            Pass::FoldBatchNorm => fold_batch_norm::fold_batch_norm(g),
            Pass::FuseEpilogue => fuse_epilogue::fuse_epilogue(g),
            Pass::FuseResidualAdd => fuse_residual_add::fuse_residual_add(g),
            Pass::DeadCode => dead_code::remove_dead_code(g),
        }
    }
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--passes fuse_epilogue,dead_code` parses each name (clap splits the list).
impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(name: &str) -> Result<Pass, String> {
        let name = name.trim();
        Pass::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Pass::ALL.iter().map(|p| p.name()).collect();
            format!(
                "unknown pass `{name}`; the passes are: {}",
                known.join(", ")
            )
        })
    }
}

/// An ordered list of passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub passes: Vec<Pass>,
}

impl Pipeline {
    /// `-O0`: nothing. `-O1` (default): BN folding (inference only), conv epilogue fusion,
    /// residual-add fusion, dead-code removal.
    pub fn for_level(level: u8, mode: Mode) -> Pipeline {
        let passes = match (level, mode) {
            (0, _) => vec![],
            (_, Mode::Inference) => Pass::ALL.to_vec(),
            (_, Mode::Training) => vec![Pass::FuseEpilogue, Pass::FuseResidualAdd, Pass::DeadCode],
        };
        Pipeline { passes }
    }

    /// Runs every pass in order, verifying the graph after each.
    pub fn run(&self, g: &mut Graph) -> Result<(), IrError> {
        self.run_traced(g, |_, _| {})
    }

    /// Like [`Pipeline::run`], calling `after(pass, graph)` after each pass (for snapshots).
    pub fn run_traced(
        &self,
        g: &mut Graph,
        mut after: impl FnMut(Pass, &Graph),
    ) -> Result<(), IrError> {
        verify(g)?;
        for &p in &self.passes {
            p.run(g)?;
            verify(g).map_err(|e| IrError {
                kind: Box::new(IrErrorKind::AfterPass {
                    pass: p.name(),
                    error: e.kind,
                }),
                ..e
            })?;
            after(p, g);
        }
        Ok(())
    }
}
