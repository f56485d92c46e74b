//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), C order only, read and written by
//! the `npyz` crate.
//!
//! Reads `f4` and `f8` (f64 is narrowed to f32), `i8`, `i4`, `i2`, `i1`, `u4`, `u2`, `u1` and
//! `b1`, in either byte order; writes f32 (`<f4`) arrays atomically, in the smallest format
//! version that holds the header.
//!
//! Hand-written here, and why: npyz trusts the file more than a reader of untrusted input may.
//! Before it reads, it allocates the header length the file claims (up to 4 GiB), it computes
//! the element count with an unchecked product (a panic in debug builds and a wrong count in
//! release for a shape such as `(2**32, 2**32)`), and its errors name neither the byte offset
//! nor the fix. So [`parse_npy`] first checks the fixed preamble, the header's nesting (the
//! literal parser recurses) and the header dict (with `py_literal`, the parser npyz itself
//! uses), and the data's length, and only then lets npyz decode the elements.

use std::path::Path;

use npyz::{TypeChar, TypeStr, WriterBuilder};
use py_literal::Value;

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element data of an `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `f4` and `f8` (f64 is narrowed to f32 when read).
    F32(Vec<f32>),
    /// `i8`, `i4`, `i2`, `i1`, `u4` and `u2`.
    I64(Vec<i64>),
    /// `u1` and `b1`.
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

/// How deep brackets may nest in a header. numpy's own headers nest two levels (three for
/// structured dtypes); the literal parser recurses once per level, so a header of a million
/// `(` would overflow the stack.
const MAX_HEADER_NESTING: usize = 16;

/// The element types this module returns, by npyz type character and byte size.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Element {
    F4,
    F8,
    I8,
    I4,
    I2,
    I1,
    U4,
    U2,
    U1,
    B1,
}

impl Element {
    fn of(ty: &TypeStr) -> Option<Element> {
        Some(match (ty.type_char(), ty.size_field()) {
            (TypeChar::Float, 4) => Element::F4,
            (TypeChar::Float, 8) => Element::F8,
            (TypeChar::Int, 8) => Element::I8,
            (TypeChar::Int, 4) => Element::I4,
            (TypeChar::Int, 2) => Element::I2,
            (TypeChar::Int, 1) => Element::I1,
            (TypeChar::Uint, 4) => Element::U4,
            (TypeChar::Uint, 2) => Element::U2,
            (TypeChar::Uint, 1) => Element::U1,
            (TypeChar::Bool, 1) => Element::B1,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Element::F8 | Element::I8 => 8,
            Element::F4 | Element::I4 | Element::U4 => 4,
            Element::I2 | Element::U2 => 2,
            Element::I1 | Element::U1 | Element::B1 => 1,
        }
    }
}

const SUPPORTED: &str = "f4, f8, i8, i4, i2, i1, u4, u2, u1 and b1 (either byte order)";

/// The header dict's three keys, checked.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Checks the header dict, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn check_header(text: &str) -> std::result::Result<Header, String> {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_HEADER_NESTING {
                    return Err(format!(
                        "brackets nest more than {MAX_HEADER_NESTING} levels deep; a numpy \
                         header is a flat dict"
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let value: Value = text.trim().parse().map_err(|e| {
        format!(
            "header is not a Python dict literal: {}",
            syntax_error(text.trim(), &e)
        )
    })?;
    let Value::Dict(entries) = value else {
        return Err(format!(
            "header is not a Python dict literal: found {}",
            describe(&value)
        ));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        match key.as_string().map(String::as_str) {
            Some("descr") => match value {
                Value::String(s) => descr = Some(s),
                other => {
                    return Err(format!(
                        "'descr' is {}; only simple dtypes (a string such as '<f4') are \
                         supported, not structured ones",
                        describe(&other)
                    ))
                }
            },
            Some("fortran_order") => match value {
                Value::Boolean(b) => fortran = Some(b),
                other => {
                    return Err(format!(
                        "'fortran_order' must be True or False, found {}",
                        describe(&other)
                    ))
                }
            },
            Some("shape") => {
                let (Value::Tuple(dims) | Value::List(dims)) = value else {
                    return Err(format!(
                        "'shape' is {}; expected a tuple such as (2, 3)",
                        describe(&value)
                    ));
                };
                let dims = dims
                    .iter()
                    .map(|d| match d {
                        Value::Integer(i) => usize::try_from(i).map_err(|_| {
                            format!("shape entry {i} is not a non-negative integer below 2^64")
                        }),
                        other => Err(format!(
                            "shape entry {} is not a non-negative integer",
                            describe(other)
                        )),
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                shape = Some(dims);
            }
            Some(other) => return Err(format!("unknown header key '{other}'")),
            None => return Err(format!("header key {} is not a string", describe(&key))),
        }
    }
    Ok(Header {
        descr: descr.ok_or("header has no 'descr' key")?,
        fortran_order: fortran.ok_or("header has no 'fortran_order' key")?,
        shape: shape.ok_or("header has no 'shape' key")?,
    })
}

/// A literal parser's error in one line: pest's multi-line report (`--> 1:52`, the source line,
/// a caret, `= expected value`) becomes "at column 52 of the header, after "...'shape': (":
/// expected value".
fn syntax_error(header: &str, e: &py_literal::ParseError) -> String {
    let text = e.to_string();
    let at = text
        .lines()
        .find_map(|l| l.split_once("--> ").map(|(_, pos)| pos.trim()))
        .map(|pos| match pos.split_once(':') {
            Some(("1", col)) => {
                let col: usize = col.parse().unwrap_or(1);
                let before: String = header.chars().take(col.saturating_sub(1)).collect();
                let tail: String = before.chars().rev().take(24).collect();
                let tail: String = tail.chars().rev().collect();
                format!("at column {col} of the header, after {tail:?}")
            }
            _ => format!("at line:column {pos} of the header"),
        });
    let what = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("= "))
        .map(str::to_string);
    match (at, what) {
        (Some(at), Some(what)) => format!("{at}: {what}"),
        _ => text.lines().map(str::trim).collect::<Vec<_>>().join(" "),
    }
}

/// A short description of a header value for errors. (`Value`'s `Display` is avoided: it
/// panics inside `format!` on the values it cannot print as ASCII literals.)
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Bytes(_) => "a bytes literal".into(),
        Value::Integer(i) if i.bits() <= 64 => format!("the integer {i}"),
        Value::Integer(_) => "an integer of more than 64 bits".into(),
        Value::Float(f) => format!("the float {f}"),
        Value::Complex(_) => "a complex number".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::List(_) => "a list".into(),
        Value::Dict(_) => "a dict".into(),
        Value::Set(_) => "a set".into(),
        Value::Boolean(b) => if *b { "True" } else { "False" }.into(),
        Value::None => "None".into(),
    }
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
    let (header_len, header_start) = match (major, minor) {
        (1, 0) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        (2, 0) | (3, 0) => {
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
        check_header(text).map_err(|m| err(format!("bad header at offset {header_start}: {m}")))?;
    if header.fortran_order {
        return Err(err(
            "array is stored in Fortran (column-major) order; only C order is supported. \
             Re-save it with `np.save(path, np.ascontiguousarray(a))`"
                .into(),
        ));
    }
    let unsupported = || {
        err(format!(
            "unsupported dtype '{}'; supported: {SUPPORTED}. Convert the array first, e.g. \
             `np.save(path, a.astype('<f4'))`",
            header.descr
        ))
    };
    let ty: TypeStr = header.descr.parse().map_err(|_| unsupported())?;
    let element = Element::of(&ty).ok_or_else(unsupported)?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("shape {:?} overflows", header.shape)))?;
    let need = count
        .checked_mul(element.size())
        .ok_or_else(|| err(format!("shape {:?} overflows", header.shape)))?;
    // npyz multiplies the dims in order without a check, past a zero too: `(0, 2**40, 2**40)`
    // holds no element but would overflow there.
    if header
        .shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none()
    {
        return Err(err(format!(
            "shape {:?} overflows: its non-zero dims multiply past 2^64",
            header.shape
        )));
    }
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
    // Safe for npyz now: the header fits the file, its literal is shallow and valid, the
    // element count fits and the data has exactly the length the header implies.
    let file = npyz::NpyFile::new(bytes)
        .map_err(|e| err(format!("bad header at offset {header_start}: {e}")))?;
    let decode_err = |e: std::io::Error| err(format!("bad data after offset {data_start}: {e}"));
    let widen = NpyData::I64;
    let data = match element {
        Element::F4 => NpyData::F32(file.into_vec::<f32>().map_err(decode_err)?),
        Element::F8 => NpyData::F32(narrow(file.into_vec::<f64>().map_err(decode_err)?)),
        Element::I8 => widen(file.into_vec::<i64>().map_err(decode_err)?),
        Element::I4 => widen(to_i64(file.into_vec::<i32>().map_err(decode_err)?)),
        Element::I2 => widen(to_i64(file.into_vec::<i16>().map_err(decode_err)?)),
        Element::I1 => widen(to_i64(file.into_vec::<i8>().map_err(decode_err)?)),
        Element::U4 => widen(to_i64(file.into_vec::<u32>().map_err(decode_err)?)),
        Element::U2 => widen(to_i64(file.into_vec::<u16>().map_err(decode_err)?)),
        Element::U1 => NpyData::U8(file.into_vec::<u8>().map_err(decode_err)?),
        Element::B1 => NpyData::U8(
            file.into_vec::<bool>()
                .map_err(decode_err)?
                .into_iter()
                .map(u8::from)
                .collect(),
        ),
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

fn narrow(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

fn to_i64<T: Into<i64>>(v: Vec<T>) -> Vec<i64> {
    v.into_iter().map(Into::into).collect()
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

/// Encodes an f32 array as `.npy` bytes (format 1.0 unless the header needs a later one).
pub fn encode_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(RuntimeError::Shape(format!(
            "cannot write .npy: shape {shape:?} has {} elements but {} values were given",
            count.map_or("too many".to_string(), |c| c.to_string()),
            data.len()
        )));
    }
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    let write = |out: &mut Vec<u8>| -> std::io::Result<()> {
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&dims)
            .writer(out)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()
    };
    write(&mut out).map_err(|e| RuntimeError::Other(format!("cannot encode .npy: {e}")))?;
    Ok(out)
}

/// Writes an f32 array as `.npy`, atomically.
pub fn write_npy_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = encode_npy_f32(shape, data)?;
    write_atomic(path, &bytes)
}
