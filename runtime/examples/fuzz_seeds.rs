//! Writes the fuzzers' small seed inputs with the project's own writers (and `npyz` and
//! `safetensors` for the dtypes the project reads but never writes):
//!
//! `cargo run -p resnetc-runtime --example fuzz_seeds -- fuzz/seeds`
//!
//! The output is committed under `fuzz/seeds/`; the front end's seeds are the zoo itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use resnetc_runtime::atomic::write_atomic;
use resnetc_runtime::npy::encode_npy_f32;
use resnetc_runtime::weights::{encode_safetensors, Tensor};
use safetensors::tensor::{Dtype, TensorView};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds OUT_DIR")?);
    npy_seeds(&out.join("npy"))?;
    safetensors_seeds(&out.join("safetensors"))?;
    cifar_seeds(&out.join("cifar"))?;
    println!("seeds written under {}", out.display());
    Ok(())
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    write_atomic(dir.join(name), bytes)?;
    Ok(())
}

/// An array of `T` in the given dtype and shape, written by npyz.
fn npyz_bytes<T: npyz::Serialize + Copy>(
    descr: &str,
    shape: &[u64],
    data: &[T],
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let dtype = npyz::DType::new_scalar(descr.parse()?);
    let mut out = vec![];
    let mut w = npyz::WriteOptions::<T>::new()
        .dtype(dtype)
        .shape(shape)
        .writer(&mut out)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(out)
}

fn npy_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let f: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 2.0).collect();
    put(dir, "f4_2x3x4.npy", &encode_npy_f32(&[2, 3, 4], &f)?)?;
    put(dir, "f4_scalar.npy", &encode_npy_f32(&[], &[1.5])?)?;
    put(dir, "f4_empty.npy", &encode_npy_f32(&[0, 3], &[])?)?;
    put(
        dir,
        "f4_input_1x3x4x4.npy",
        &encode_npy_f32(&[1, 3, 4, 4], &[0.5; 48])?,
    )?;
    put(
        dir,
        "f8_be.npy",
        &npyz_bytes(">f8", &[3], &[1.0f64, -2.5, 1e300])?,
    )?;
    put(
        dir,
        "i8_labels.npy",
        &npyz_bytes("<i8", &[4], &[3i64, 0, 9, 1])?,
    )?;
    put(
        dir,
        "i4_2x2.npy",
        &npyz_bytes("<i4", &[2, 2], &[1i32, -1, 2, 7])?,
    )?;
    put(dir, "i2.npy", &npyz_bytes("<i2", &[2], &[-3i16, 300])?)?;
    put(dir, "i1.npy", &npyz_bytes("|i1", &[3], &[-1i8, 0, 5])?)?;
    put(dir, "u4.npy", &npyz_bytes("<u4", &[2], &[7u32, u32::MAX])?)?;
    put(dir, "u2.npy", &npyz_bytes(">u2", &[2], &[7u16, 9])?)?;
    put(
        dir,
        "u1_labels.npy",
        &npyz_bytes("|u1", &[5], &[0u8, 9, 3, 255, 1])?,
    )?;
    put(
        dir,
        "b1.npy",
        &npyz_bytes("|b1", &[3], &[true, false, true])?,
    )?;
    Ok(())
}

fn safetensors_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut weights = BTreeMap::new();
    weights.insert(
        "conv1.weight".to_string(),
        Tensor::new(vec![2, 1, 1, 2], vec![0.5, -0.5, 1.0, 2.0])?,
    );
    weights.insert(
        "fc.bias".to_string(),
        Tensor::new(vec![3], vec![1.0, 2.0, 3.0])?,
    );
    put(
        dir,
        "weights.safetensors",
        &encode_safetensors(&weights, None)?,
    )?;
    // A checkpoint: parameters, optimizer state and the metadata `Checkpoint::load` reads.
    let mut ckpt = weights.clone();
    ckpt.insert(
        "optimizer.momentum.fc.bias".to_string(),
        Tensor::new(vec![3], vec![0.0; 3])?,
    );
    let meta: HashMap<String, String> = [
        ("format", "resnetc-checkpoint"),
        ("version", "1"),
        ("epoch", "2"),
        ("step", "40"),
        ("rng_state", "[1,2,3,4]"),
        ("extra", "{}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    put(
        dir,
        "checkpoint.safetensors",
        &encode_safetensors(&ckpt, Some(meta))?,
    )?;
    // Half precision, as exported by `model.half()`.
    let half: Vec<u8> = [0x3C00u16, 0xC000, 0x7BFF, 0x0001]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let double = 2.5f64.to_le_bytes();
    let tensors = [
        ("a.weight", TensorView::new(Dtype::F16, vec![2, 2], &half)?),
        ("b.weight", TensorView::new(Dtype::BF16, vec![4], &half)?),
        ("c.weight", TensorView::new(Dtype::F64, vec![1], &double)?),
    ];
    put(
        dir,
        "half.safetensors",
        &safetensors::serialize(tensors.iter().map(|(n, v)| (*n, v)), None)?,
    )?;
    put(
        dir,
        "empty.safetensors",
        &encode_safetensors(&BTreeMap::new(), None)?,
    )?;
    Ok(())
}

fn cifar_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // Two records: a label byte (0-9) and 3,072 pixel bytes each.
    let batch: Vec<u8> = (0..2 * 3073)
        .map(|i| {
            if i % 3073 == 0 {
                (i / 3073 * 7) as u8
            } else {
                (i % 251) as u8
            }
        })
        .collect();
    put(dir, "two_records.bin", &batch)?;
    put(dir, "one_record.bin", &batch[..3073])?;
    Ok(())
}
