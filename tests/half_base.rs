//! A half-precision frozen base (`--base-dtype f16|bf16`): the weight stored as f16/bf16 and
//! cast to f32 per forward gives exactly the f32 layer's output on the same weight rounded
//! to that precision (the reference rounding: the `half` crate's round-to-nearest-even);
//! merging rounds the merged weight into the same storage; a quantised base is refused.

mod common;

use burn::tensor::{DType, Distribution, Tensor};
use burn_lora::lora::{
    BaseDtype, FrozenBase, LinearReader, LinearVisitor, LoraLinear, LoraTargets, ModuleSelector,
    cast_frozen,
};
use common::{devices, max_rel_err, values};

/// One linear as a model (`proj`).
#[derive(Clone)]
struct One(LoraLinear);

impl LoraTargets for One {
    fn visit_linears(
        &mut self,
        prefix: &str,
        visitor: &mut LinearVisitor<'_>,
    ) -> burn_lora::Result<()> {
        visitor(&burn_lora::lora::join_path(prefix, "proj"), &mut self.0)
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> burn_lora::Result<()> {
        reader(&burn_lora::lora::join_path(prefix, "proj"), &self.0)
    }

    fn default_targets(&self) -> ModuleSelector {
        ModuleSelector::names(&["proj"])
    }
}

fn rounded(values: &[f32], dtype: BaseDtype) -> Vec<f32> {
    values
        .iter()
        .map(|&v| match dtype {
            BaseDtype::F16 => half::f16::from_f32(v).to_f32(),
            BaseDtype::Bf16 => half::bf16::from_f32(v).to_f32(),
            _ => v,
        })
        .collect()
}

#[test]
fn half_precision_base_is_the_rounded_f32_layer() {
    for (dev_name, device) in devices() {
        for dtype in [BaseDtype::F16, BaseDtype::Bf16] {
            if !device.supports_dtype(dtype.dtype()) {
                eprintln!("{dev_name}: no {dtype} storage; skipped");
                continue;
            }
            let weight = Tensor::<2>::random([24, 32], Distribution::Default, &device);
            let bias = Tensor::<1>::random([24], Distribution::Default, &device);
            let x = Tensor::<3>::random([2, 5, 32], Distribution::Default, &device);
            let mut model =
                One(LoraLinear::from_out_in(weight.clone(), Some(bias.clone())).unwrap());
            let report = cast_frozen(&mut model, dtype).unwrap();
            let half = model.0;
            assert_eq!(
                (report.layers, report.bytes_before, report.bytes_after),
                (1, 24 * 32 * 4, 24 * 32 * 2)
            );
            let dense = half.base.dense().unwrap();
            assert_eq!(dense.dtype(), dtype);
            assert_eq!(dense.weight.val().dtype(), dtype.dtype());

            let w_rounded = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(rounded(&values(weight.clone()), dtype), [24, 32]),
                &device,
            );
            let reference = LoraLinear::from_out_in(w_rounded, Some(bias.clone())).unwrap();
            let y = values(half.forward(x.clone()));
            let want = values(reference.forward(x.clone()));
            let err = max_rel_err(&y, &want);
            assert!(err <= 1e-6, "{dev_name} {dtype}: rel err {err}");
            // The rounding is real: the f32 layer differs.
            let full = LoraLinear::from_out_in(weight.clone(), Some(bias.clone())).unwrap();
            assert!(max_rel_err(&values(full.forward(x.clone())), &want) > 1e-6);

            // A merge lands in the same storage, rounded.
            let mut merged = half.clone();
            let delta = Tensor::<2>::random([32, 24], Distribution::Default, &device) * 0.01;
            merged.base.add_delta(delta.clone()).unwrap();
            let dense = merged.base.dense().unwrap();
            assert_eq!(dense.weight.val().dtype(), dtype.dtype());
            let want = rounded(&values(half.base.weight_in_out() + delta), dtype);
            assert_eq!(values(merged.base.weight_in_out()), want);
        }
    }
    // The storage is asked for by name.
    assert_eq!("bf16".parse::<BaseDtype>().unwrap(), BaseDtype::Bf16);
    assert!("f8".parse::<BaseDtype>().is_err());
    assert_eq!(BaseDtype::F32.dtype(), DType::F32);
}

/// A quantised base has its own storage: casting it is refused, naming the layer.
#[test]
fn a_packed_base_is_not_cast() {
    let device = burn_lora::device::parse_device("flex").unwrap();
    let weight = Tensor::<2>::random([64, 64], Distribution::Default, &device);
    let layer =
        LoraLinear::from_out_in_packed(weight, None, Some(burn_lora::lora::Quantization::Nf4))
            .unwrap();
    assert!(matches!(
        cast_frozen(&mut One(layer), BaseDtype::Bf16),
        Err(burn_lora::Error::Unsupported { .. })
    ));
}

/// Every dense frozen linear of `model`: path, stored dtype, weight `[out, in]` as f32.
fn linears(model: &impl LoraTargets) -> Vec<(String, DType, Vec<f32>)> {
    let mut found = Vec::new();
    model
        .read_linears("", &mut |path, linear| {
            let dense = linear.base.dense().expect("a dense base");
            found.push((
                path.to_string(),
                dense.weight.val().dtype(),
                values(linear.base.weight_out_in()),
            ));
            Ok(())
        })
        .unwrap();
    found
}

/// `LoadOptions::dtype` reads each linear straight into its storage dtype: a bf16
/// checkpoint's weights arrive bit for bit (bf16 → f32 is exact, so the f32 view equals the
/// file's values), an f32 checkpoint's are rounded exactly as casting the f32 model would
/// round them, and the model computes what the cast f32 model computes.
#[test]
fn half_precision_loads_without_an_f32_model() {
    let bf16_dir = common::fixture("tiny-llama-bf16-sharded");
    let ckpt = burn_lora::io::Checkpoint::open(&bf16_dir).unwrap();
    let input = burn_lora::models::EncoderInput::new(
        &[3, 7, 1, 9, 4, 2, 8, 5],
        &[1, 1, 1, 1, 1, 1, 0, 0],
        None,
        2,
        4,
        &burn_lora::device::parse_device("flex").unwrap(),
    )
    .unwrap();
    for (dev_name, device) in devices() {
        for dtype in [BaseDtype::F16, BaseDtype::Bf16] {
            if !device.supports_dtype(dtype.dtype()) {
                eprintln!("{dev_name}: no {dtype} storage; skipped");
                continue;
            }
            let options = common::fixture_options().dtype(dtype);
            let loaded = common::load_llama_with(&bf16_dir, &options, &device).unwrap();
            let found = linears(&loaded);
            assert!(!found.is_empty());
            for (path, stored, weight) in &found {
                assert_eq!(*stored, dtype.dtype(), "{dev_name} {path}");
                let (file, _) = ckpt.read_f32(&format!("{path}.weight")).unwrap();
                assert_eq!(weight, &rounded(&file, dtype), "{dev_name} {dtype} {path}");
            }

            // An f32 checkpoint loaded as `dtype` = the f32 model cast afterwards.
            let f32_dir = common::fixture("tiny-llama");
            let direct = common::load_llama_with(&f32_dir, &options, &device).unwrap();
            let mut cast = common::load_llama(&f32_dir, &device).unwrap();
            cast_frozen(&mut cast, dtype).unwrap();
            assert_eq!(linears(&direct), linears(&cast), "{dev_name} {dtype}");
            // The embedding table too is stored as `dtype`.
            assert_eq!(direct.embed.weight.val().dtype(), dtype.dtype());
            let table = cast.embed.weight.val().cast(dtype.float_dtype());
            cast.embed = burn_lora::models::layers::FrozenEmbedding::new(table);
            let input = burn_lora::models::EncoderInput {
                input_ids: input.input_ids.clone().to_device(&device),
                attention_mask: input.attention_mask.clone().to_device(&device),
                token_type_ids: None,
            };
            use burn_lora::models::Backbone;
            assert_eq!(
                values(direct.forward(&input)),
                values(cast.forward(&input)),
                "{dev_name} {dtype}"
            );
            let report = burn_lora::lora::half_base_report(&direct).unwrap();
            assert_eq!(report.layers, found.len());
            assert_eq!(report.bytes_before, 2 * report.bytes_after);
        }
    }
}

/// Options that cannot be built are refused before any file is read (the path here does
/// not exist: an I/O error would mean the files were touched first).
#[test]
fn load_options_are_checked_first() {
    use burn_lora::models::{LoadOptions, load};
    let device = burn_lora::device::parse_device("flex").unwrap();
    let missing = "/nonexistent/burn-lora-model";
    let packed_half = LoadOptions::new(16)
        .dtype(BaseDtype::Bf16)
        .packing(Some(burn_lora::lora::Quantization::Nf4));
    let err = load(missing, &packed_half, &device).unwrap_err();
    assert!(
        matches!(err, burn_lora::Error::Unsupported { .. }) && err.to_string().contains("bf16"),
        "{err}"
    );
    let err = load(missing, &LoadOptions::new(0), &device).unwrap_err();
    assert!(matches!(err, burn_lora::Error::InputOutOfRange(_)), "{err}");
    // Past the position table (the fixtures hold 64): refused by the family's constructor.
    let err = common::load_bert_with(common::fixture("tiny-bert"), &LoadOptions::new(65), &device)
        .unwrap_err();
    assert!(err.to_string().contains("64 positions"), "{err}");
}

/// A finetune job asking for a base type its device cannot store (lavapipe's wgpu has no
/// bf16) is refused with a typed error before it reads the model or writes its folder.
#[test]
fn finetune_refuses_a_dtype_the_device_cannot_store() {
    let mut refused = 0;
    for (name, device) in devices() {
        for dtype in [BaseDtype::F16, BaseDtype::Bf16] {
            if device.supports_dtype(dtype.dtype()) {
                continue;
            }
            let out = std::env::temp_dir().join(format!(
                "burn-lora-half-refused-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&out);
            let err = burn_lora::Finetune::new("/nonexistent/model", "/nonexistent/data")
                .out(&out)
                .base_dtype(dtype)
                .run(&device)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    burn_lora::Error::Unsupported {
                        what: "base dtype",
                        ..
                    }
                ),
                "{name} {dtype}: {err}"
            );
            assert!(!out.exists(), "{name} {dtype}: the output folder was made");
            refused += 1;
        }
    }
    // With a GPU device required (CI's lavapipe), at least bf16 there is refused.
    if std::env::var("BURN_LORA_TEST_GPU").as_deref() == Ok("required") {
        assert!(refused > 0, "no device lacks a half-precision type");
    }
}
