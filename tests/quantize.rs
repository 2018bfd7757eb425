//! QLoRA-style frozen bases: NF4 (bitsandbytes' layout, bit-exact in `crates/kernels`)
//! and int8 weights packed at rest and dequantised per forward, on every model's linears.

mod common;

use burn::tensor::{Distribution, Tensor, TensorData};
use burn_lora::Error;
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling};
use burn_lora::data::EncodedSet;
use burn_lora::lora::{
    FrozenBase, FrozenWeight, LoraConfig, LoraLinear, PackedBase, PackedWeight, Quantization,
    inject_adapters, quantize_frozen,
};
use burn_lora::models::{Backbone, EncoderInput};
use burn_lora::train::{TrainConfig, Trainer, TrainingLoop};
use burn_lora_kernels::nf4;
use common::{fixture, fixture_options, load_llama, load_llama_with, max_abs_diff, values};

fn device() -> burn::tensor::Device {
    burn_lora::device::parse_device("flex").unwrap()
}

/// `dense` packed as `how`, and a dense linear (same bias) holding the packed weight's
/// dequantised values, which are returned too.
fn packed_and_dequantised(
    dense: &LoraLinear,
    bias: &Tensor<1>,
    how: Quantization,
) -> (LoraLinear, LoraLinear, Vec<f32>) {
    let FrozenWeight::Dense(d) = &dense.base else {
        unreachable!("a dense layer")
    };
    let [out, inp] = d.weight_out_in().dims();
    let packed = PackedBase::from_dense(d, how).unwrap();
    let restored = packed.packed().dequantize();
    let reference = LoraLinear::from_out_in(
        Tensor::from_data(
            TensorData::new(restored.clone(), [out, inp]),
            &bias.device(),
        ),
        Some(bias.clone()),
    )
    .unwrap();
    (
        LoraLinear::new(FrozenWeight::Packed(packed)),
        reference,
        restored,
    )
}

/// A packed linear computes exactly what a dense linear with the dequantised weight
/// computes (the packing is the only approximation), for 2-D and 3-D inputs.
#[test]
fn packed_forward_is_the_dense_forward_of_the_dequantised_weight() {
    let device = device();
    let (out, inp) = (24, 80); // 1,920 values: 30 NF4 blocks of 64
    let w = Tensor::<2>::random([out, inp], Distribution::Normal(0.0, 0.05), &device);
    let b = Tensor::<1>::random([out], Distribution::Default, &device);
    let dense = LoraLinear::from_out_in(w.clone(), Some(b.clone())).unwrap();
    let x = Tensor::<3>::random([2, 5, inp], Distribution::Default, &device);
    for how in [
        Quantization::Nf4,
        Quantization::Nf4Double,
        Quantization::Int8,
    ] {
        let (layer, reference, restored) = packed_and_dequantised(&dense, &b, how);
        // The same codecs bitsandbytes' fixtures check, on this weight.
        let codec = nf4::quantize(&values(w.clone()), 64);
        match how {
            Quantization::Nf4 => assert_eq!(restored, codec.dequantize()),
            Quantization::Nf4Double => {
                assert_eq!(restored, codec.compress_statistics().dequantize())
            }
            _ => {}
        }
        let diff = max_abs_diff(
            &values(layer.forward(x.clone())),
            &values(reference.forward(x.clone())),
        );
        assert!(diff <= 1e-6, "{how}: off by {diff}");
        // Quantisation error itself: small next to the weights' scale.
        let err = max_abs_diff(&values(layer.base.weight_out_in()), &values(w.clone()));
        let bound = if how == Quantization::Int8 {
            0.002
        } else {
            0.05
        };
        assert!(err <= bound, "{how}: weight error {err}");
    }
}

/// In training the packed linear's backward dequantises the layer again: the gradient it
/// passes to its input must be the dense linear's for the dequantised weight.
#[test]
fn packed_backward_is_the_dense_backward_of_the_dequantised_weight() {
    let device = device().autodiff();
    let (out, inp) = (24, 80);
    let w = Tensor::<2>::random([out, inp], Distribution::Normal(0.0, 0.05), &device);
    let b = Tensor::<1>::random([out], Distribution::Default, &device);
    let dense = LoraLinear::from_out_in(w, Some(b.clone())).unwrap();
    let x = Tensor::<3>::random([2, 5, inp], Distribution::Default, &device);
    let upstream = Tensor::<3>::random([2, 5, out], Distribution::Default, &device);
    let input_grad = |layer: &LoraLinear| {
        let x = x.clone().require_grad();
        let grads = (layer.forward(x.clone()) * upstream.clone())
            .sum()
            .backward();
        values(x.grad(&grads).expect("x is tracked"))
    };
    for how in [
        Quantization::Nf4,
        Quantization::Nf4Double,
        Quantization::Int8,
    ] {
        let (layer, reference, _) = packed_and_dequantised(&dense, &b, how);
        let diff = max_abs_diff(&input_grad(&layer), &input_grad(&reference));
        assert!(diff <= 1e-5, "{how}: input gradients differ by {diff}");
    }
}

/// The whole Llama-family base packed: 4.5 bits per weight for NF4 (QLoRA's ≤ 4.6 with
/// f32 scales), hidden states near the float model's, int8 nearer than NF4.
#[test]
fn a_packed_decoder_stays_close_to_the_float_one() {
    let device = device();
    let float = load_llama(fixture("tiny-llama"), &device).unwrap();
    let ids: Vec<u32> = (0..16).map(|i| 3 + (i * 7) % 90).collect();
    let input = EncoderInput::new(&ids, &[1; 16], None, 2, 8, &device).unwrap();
    let reference = values(float.forward(&input));
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut errors = Vec::new();
    for how in [
        Quantization::Nf4,
        Quantization::Nf4Double,
        Quantization::Int8,
    ] {
        let mut model = float.clone();
        let report = quantize_frozen(&mut model, how).unwrap();
        assert_eq!(report.layers, 14); // 7 linears × 2 layers
        if how == Quantization::Nf4 {
            assert!(
                report.bits_per_param() <= 4.6,
                "{}",
                report.bits_per_param()
            );
        } else if how == Quantization::Nf4Double {
            // 4 + 8/64 bits, plus one f32 per 256 scales and an f32 offset per weight
            // (1,024-value tensors here).
            assert!(
                report.bits_per_param() <= 4.25,
                "{}",
                report.bits_per_param()
            );
        } else {
            // 8 bits plus one f32 scale per row: 32 bits over rows of 16 or 32 values here,
            // over rows of hundreds in a real model (8.06 bits for SmolLM2).
            assert!(
                report.bits_per_param() <= 10.0,
                "{}",
                report.bits_per_param()
            );
        }
        let err = max_abs_diff(&values(model.forward(&input)), &reference) / scale;
        eprintln!(
            "{how}: {:.2} bits/weight, relative hidden-state error {err:.4}",
            report.bits_per_param()
        );
        assert!(err < 0.15, "{how}: relative error {err}");
        errors.push(err);
        // Packing while loading (the float model never whole) gives the same model.
        let loaded = load_llama_with(
            fixture("tiny-llama"),
            &fixture_options().packing(Some(how)),
            &device,
        )
        .unwrap();
        assert_eq!(
            values(loaded.forward(&input)),
            values(model.forward(&input))
        );
        // Packing twice is refused; the float model is untouched (clones share weights).
        assert!(matches!(
            quantize_frozen(&mut model, how),
            Err(Error::InvalidState(_))
        ));
    }
    assert!(
        errors[2] < errors[0],
        "int8 {} not nearer than nf4 {}",
        errors[2],
        errors[0]
    );
    assert_eq!(values(float.forward(&input)), reference);
}

/// QLoRA training: f32 adapters on an NF4 base learn, and the packed base is unchanged
/// (bit for bit); merging into a packed weight is refused.
#[test]
fn adapters_train_on_an_nf4_base() {
    let device = device();
    let train_device = device.clone().autodiff();
    let mut base = load_llama(fixture("tiny-llama"), &train_device).unwrap();
    quantize_frozen(&mut base, Quantization::Nf4).unwrap();
    let mut model =
        MultiLabelClassifier::new(base, 3, Pooling::LastToken, 0.0, &train_device).unwrap();
    inject_adapters(
        &mut model,
        &LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]),
        &train_device,
    )
    .unwrap();
    let packed_before = model.backbone.layers[0]
        .q_proj
        .base
        .packed()
        .unwrap()
        .packed()
        .dequantize();
    let set = EncodedSet {
        ids: (0..16)
            .map(|i| vec![5, 10 + i % 3, 11, 12 + i % 5])
            .collect(),
        labels: (0..16).map(|i| vec![(i % 3) as usize]).collect(),
        num_labels: 3,
        pad_id: 0,
    };
    let batch = set.batch(&(0..16).collect::<Vec<_>>(), &device);
    let config = TrainConfig::default().with_lr(5e-4).with_progress(false);
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
    let mut losses = Vec::new();
    for _ in 0..10 {
        losses.push(trainer.train_step(&batch).unwrap());
        trainer.optimizer_step(3e-2).unwrap();
    }
    assert!(
        losses[9] < 0.8 * losses[0],
        "loss did not go down: {losses:?}"
    );
    let mut model = trainer.into_model();
    let q = &mut model.backbone.layers[0].q_proj;
    assert_eq!(
        q.base.packed().unwrap().packed().dequantize(),
        packed_before
    );
    assert!(
        values(q.lora_b().unwrap()).iter().any(|v| *v != 0.0),
        "lora_B did not move"
    );
    assert!(matches!(
        q.merge(),
        Err(Error::Unsupported { what: "merge", .. })
    ));
}

/// Corrupt packed data and weights that cannot be packed are errors, not NaN outputs.
#[test]
fn corrupt_or_unpackable_weights_are_errors() {
    let device = device();
    let values_ok: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 100.0).collect();
    let good = PackedWeight::pack(&values_ok, 2, 64, Quantization::Nf4).unwrap();
    assert!(PackedBase::new(good.clone(), [2, 64], None, &device).is_ok());
    // A NaN scale (a flipped bit in a file) and a block count that does not fit the shape.
    let PackedWeight::Nf4(mut q) = good.clone() else {
        unreachable!()
    };
    q.absmax[1] = f32::NAN;
    assert!(matches!(
        PackedBase::new(PackedWeight::Nf4(q), [2, 64], None, &device),
        Err(Error::InvalidState(m)) if m.contains("block 1")
    ));
    assert!(matches!(
        PackedBase::new(good, [4, 64], None, &device),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut bad = values_ok.clone();
    bad[7] = f32::INFINITY;
    assert!(PackedWeight::pack(&bad, 2, 64, Quantization::Int8).is_err());
    assert!("nf8".parse::<Quantization>().is_err());
    assert_eq!(
        "nf4-dq".parse::<Quantization>().unwrap(),
        Quantization::Nf4Double
    );
    // A double-quantised weight with a corrupt scale offset or a missing block of codes.
    let PackedWeight::Nf4Double(mut dq) =
        PackedWeight::pack(&values_ok, 2, 64, Quantization::Nf4Double).unwrap()
    else {
        unreachable!()
    };
    let mut missing = dq.clone();
    missing.absmax.codes.pop();
    assert!(matches!(
        PackedBase::new(PackedWeight::Nf4Double(missing), [2, 64], None, &device),
        Err(Error::ShapeMismatch { .. })
    ));
    dq.absmax.offset = f32::NAN;
    assert!(matches!(
        PackedBase::new(PackedWeight::Nf4Double(dq), [2, 64], None, &device),
        Err(Error::InvalidState(m)) if m.contains("corrupt")
    ));
    assert_eq!("int8".parse::<Quantization>().unwrap(), Quantization::Int8);
}
