//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), C order only.
//!
//! Reads little-endian `<f4`, `<f8` (converted to f32), `<i8`, `<i4`, `|u1`/`|i1` and `|b1`;
//! writes f32 (`<f4`) arrays atomically in format 1.0 (2.0 when the header needs it).

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element data of an `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4` and `<f8` (f64 is narrowed to f32 when read).
    F32(Vec<f32>),
    /// `<i8` and `<i4`.
    I64(Vec<i64>),
    /// `|u1` and `|b1` (`|i1` is read as `I64`).
    U8(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    pub fn len(&self) -> usize {
        match &self.data {
            NpyData::F32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers are converted).
    pub fn into_f32(self) -> Vec<f32> {
        match self.data {
            NpyData::F32(v) => v,
            NpyData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            NpyData::U8(v) => v.into_iter().map(f32::from).collect(),
        }
    }

    /// The values as class labels. `path` is only used in the error message: float arrays and
    /// negative values are rejected.
    pub fn into_labels(self, path: impl AsRef<Path>) -> Result<Vec<usize>> {
        let path = path.as_ref();
        match self.data {
            NpyData::U8(v) => Ok(v.into_iter().map(usize::from).collect()),
            NpyData::I64(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, x)| {
                    usize::try_from(x).map_err(|_| {
                        RuntimeError::format(
                            path,
                            format!("label at index {i} is {x}; labels must be class indices >= 0"),
                        )
                    })
                })
                .collect(),
            NpyData::F32(_) => Err(RuntimeError::format(
                path,
                "labels must be an integer array (<i8, <i4 or |u1), found a float array; \
                 save them with `np.save(path, labels.astype(np.int64))`",
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F4,
    F8,
    I8,
    I4,
    U1,
    I1,
    B1,
}

impl Dtype {
    fn parse(descr: &str) -> Option<(Dtype, usize)> {
        Some(match descr {
            "<f4" => (Dtype::F4, 4),
            "<f8" => (Dtype::F8, 8),
            "<i8" => (Dtype::I8, 8),
            "<i4" => (Dtype::I4, 4),
            "|u1" | "<u1" => (Dtype::U1, 1),
            "|i1" | "<i1" => (Dtype::I1, 1),
            "|b1" => (Dtype::B1, 1),
            _ => return None,
        })
    }
}

/// Parsed header dictionary.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A tiny parser for the Python-literal header dict, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("header is not a Python dict literal: {t:?}"))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    let mut rest = inner.trim();
    while !rest.is_empty() {
        // key
        let q = rest.chars().next().unwrap();
        if q != '\'' && q != '"' {
            return Err(format!("expected a quoted key at {rest:?}"));
        }
        let end = rest[1..].find(q).ok_or("unterminated key string")? + 1;
        let key = &rest[1..end];
        rest = rest[end + 1..].trim_start();
        rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("expected ':' after key '{key}'"))?
            .trim_start();
        // value
        let value_end;
        if rest.starts_with('\'') || rest.starts_with('"') {
            let q = rest.chars().next().unwrap();
            let e = rest[1..].find(q).ok_or("unterminated value string")? + 1;
            value_end = e + 1;
        } else if rest.starts_with('(') || rest.starts_with('[') {
            let close = if rest.starts_with('(') { ')' } else { ']' };
            value_end = rest.find(close).ok_or("unterminated shape tuple")? + 1;
        } else {
            value_end = rest.find(',').unwrap_or(rest.len());
        }
        let value = rest[..value_end].trim();
        rest = rest[value_end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        match key {
            "descr" => {
                if !(value.starts_with('\'') || value.starts_with('"')) {
                    return Err(format!(
                        "'descr' is {value}; only simple dtypes are supported, not structured ones"
                    ));
                }
                // The quoted-value branch above guarantees a closing quote, so len >= 2.
                descr = Some(value[1..value.len() - 1].to_string());
            }
            "fortran_order" => {
                fortran = Some(match value {
                    "True" => true,
                    "False" => false,
                    v => return Err(format!("'fortran_order' must be True or False, found {v}")),
                })
            }
            "shape" => {
                let body = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .or_else(|| value.strip_prefix('[').and_then(|v| v.strip_suffix(']')))
                    .ok_or_else(|| {
                        format!("'shape' is {value}; expected a tuple such as (2, 3)")
                    })?;
                let dims = body
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.trim_end_matches('L')
                            .parse::<usize>()
                            .map_err(|_| format!("shape entry {s:?} is not a non-negative integer"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                shape = Some(dims);
            }
            other => return Err(format!("unknown header key '{other}'")),
        }
    }
    Ok(Header {
        descr: descr.ok_or("header has no 'descr' key")?,
        fortran_order: fortran.ok_or("header has no 'fortran_order' key")?,
        shape: shape.ok_or("header has no 'shape' key")?,
    })
}

/// Parses `.npy` bytes; `path` names the file in errors.
pub fn parse_npy(path: &Path, bytes: &[u8]) -> Result<NpyArray> {
    let err = |msg: String| RuntimeError::format(path, msg);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err(format!(
            "not a NumPy .npy file: expected the magic bytes \\x93NUMPY at offset 0 \
             (file is {} bytes); write it with numpy.save",
            bytes.len()
        )));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err(format!(
                    "truncated: format {major}.{minor} needs a 4-byte header length at offset 8, \
                     the file has {} bytes",
                    bytes.len()
                )));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => {
            return Err(err(format!(
                "unsupported .npy format version {major}.{minor} at offset 6; \
                 supported versions are 1.0, 2.0 and 3.0"
            )))
        }
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(err(format!(
            "truncated header: the header says it is {header_len} bytes (ending at offset \
             {data_start}) but the file has only {} bytes",
            bytes.len()
        )));
    }
    let raw = &bytes[header_start..data_start];
    let text = if major == 3 {
        std::str::from_utf8(raw).map_err(|e| err(format!("header is not UTF-8: {e}")))?
    } else {
        if let Some(p) = raw.iter().position(|b| !b.is_ascii()) {
            return Err(err(format!(
                "header byte at offset {} is not ASCII (format {major}.{minor} headers are \
                 latin-1 dict literals)",
                header_start + p
            )));
        }
        std::str::from_utf8(raw).expect("ascii")
    };
    let header =
        parse_header(text).map_err(|m| err(format!("bad header at offset {header_start}: {m}")))?;
    if header.fortran_order {
        return Err(err(
            "array is stored in Fortran (column-major) order; only C order is supported. \
             Re-save it with `np.save(path, np.ascontiguousarray(a))`"
                .into(),
        ));
    }
    let (dtype, size) = Dtype::parse(&header.descr).ok_or_else(|| {
        err(format!(
            "unsupported dtype '{}'; supported: <f4, <f8, <i8, <i4, |u1, |i1, |b1 \
             (big-endian data must be converted with `a.astype('<f4')`)",
            header.descr
        ))
    })?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("shape {:?} overflows", header.shape)))?;
    let need = count
        .checked_mul(size)
        .ok_or_else(|| err(format!("shape {:?} overflows", header.shape)))?;
    let body = &bytes[data_start..];
    if body.len() < need {
        return Err(err(format!(
            "truncated data: shape {:?} of '{}' needs {need} bytes after the header (offset \
             {data_start}) but only {} are present; the file was cut off, re-save it",
            header.shape,
            header.descr,
            body.len()
        )));
    }
    if body.len() > need {
        return Err(err(format!(
            "{} unexpected trailing bytes after the data at offset {}; shape {:?} of '{}' \
             needs exactly {need} bytes",
            body.len() - need,
            data_start + need,
            header.shape,
            header.descr
        )));
    }
    let data = match dtype {
        Dtype::F4 => NpyData::F32(
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::F8 => NpyData::F32(
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        ),
        Dtype::I8 => NpyData::I64(
            body.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I4 => NpyData::I64(
            body.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        Dtype::U1 | Dtype::B1 => NpyData::U8(body.to_vec()),
        Dtype::I1 => NpyData::I64(body.iter().map(|&b| b as i8 as i64).collect()),
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// Reads an `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
    parse_npy(path, &bytes)
}

/// Reads an `.npy` file as f32 values with its shape.
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    let a = read_npy(path)?;
    let shape = a.shape.clone();
    Ok((shape, a.into_f32()))
}

/// Encodes an f32 array as `.npy` bytes (format 1.0, or 2.0 when the header exceeds 65535 bytes).
pub fn encode_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(RuntimeError::Shape(format!(
            "cannot write .npy: shape {shape:?} has {count} elements but {} values were given",
            data.len()
        )));
    }
    let shape_str = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Total of magic + version + length + header is a multiple of 64, header ends with '\n'.
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    let (prefix, version) = if dict.len() + 1 + 10 <= 65535 {
        (10, 1u8)
    } else {
        (12, 2u8)
    };
    let total = (prefix + dict.len() + 1).next_multiple_of(64);
    let header_len = total - prefix;
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes an f32 array as `.npy`, atomically.
pub fn write_npy_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = encode_npy_f32(shape, data)?;
    write_atomic(path, &bytes)
}
