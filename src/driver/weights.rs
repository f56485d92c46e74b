//! Loading weights files into an executor: whole models (PyTorch or Keras names) and the
//! partial loads of transfer learning.

use super::CliError;
use resnetc_runtime::checkpoint::load_model_tensors;
use resnetc_runtime::executor::Executor;
use resnetc_runtime::keras::{from_keras, WeightsFormat};
use resnetc_runtime::weights::check_weights;
use std::path::Path;

/// Loads the tensors of a weights file or training checkpoint that match the model by name
/// and shape; the others keep their initialization. Returns what happened to each tensor.
pub fn init_from(
    exec: &mut Executor,
    path: &Path,
    skip_mismatch: bool,
) -> Result<resnetc_runtime::weights::PartialLoad, CliError> {
    let tensors = load_model_tensors(path)?;
    let plan = resnetc_runtime::weights::plan_partial_load(
        path,
        &exec.program.weight_table(),
        &tensors,
        skip_mismatch,
    )?;
    for (name, _, status) in &plan.rows {
        if *status == resnetc_runtime::weights::LoadStatus::Loaded {
            exec.set_tensor(name, &tensors[name].data)?;
        }
    }
    Ok(plan)
}

/// Loads a safetensors file into an executor, checking names and shapes against the model.
/// Keras-named files (by `format`, or detected by `WeightsFormat::Auto`) are mapped onto the
/// model's parameters and transposed first ([`resnetc_runtime::keras`]).
pub fn load_weights(
    exec: &mut Executor,
    path: &Path,
    format: WeightsFormat,
) -> Result<(), CliError> {
    let mut tensors = load_model_tensors(path)?;
    if format.resolve(&tensors) == WeightsFormat::Keras {
        tensors = from_keras(path, &exec.program.weight_slots(), &tensors)?;
    }
    check_weights(path, &exec.program.weight_table(), &tensors)?;
    exec.load_weights(&tensors)?;
    Ok(())
}
