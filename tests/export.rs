//! Merged export: the adapters folded into the base and written as a
//! `…ForSequenceClassification` checkpoint give the unmerged model's logits when read back
//! (transformers' side: `scripts/check_export.sh`); heads a transformers class would
//! compute differently are refused.

mod common;

use burn::tensor::{Distribution, Tensor};
use burn_lora::Error;
use burn_lora::classify::{MultiLabelClassifier, Pooling};
use burn_lora::data::LabelSet;
use burn_lora::export::export_merged;
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::{LoraConfig, Quantization, inject_adapters, quantize_frozen};
use burn_lora::models::{Backbone, EncoderInput};
use common::{fixture, load_bert, load_gguf, load_llama, max_abs_diff, values};

fn device() -> burn::tensor::Device {
    burn_lora::device::parse_device("flex").unwrap()
}

/// Random nonzero adapters (B = 0 at init would make the merge a no-op) and head.
fn trained<B: Backbone>(
    backbone: B,
    pooling: Pooling,
    targets: &[&str],
) -> MultiLabelClassifier<B> {
    let device = device();
    let mut model = MultiLabelClassifier::new(backbone, 3, pooling, 0.0, &device).unwrap();
    inject_adapters(&mut model, &LoraConfig::new(4, 8.0, targets), &device).unwrap();
    model
        .backbone
        .visit_linears("", &mut |_, linear| {
            if linear.adapter.is_some() {
                let (out, inp) = (linear.out_features(), linear.in_features());
                linear.set_lora_weights(
                    Tensor::random([4, inp], Distribution::Normal(0.0, 0.2), &device),
                    Tensor::random([out, 4], Distribution::Normal(0.0, 0.2), &device),
                )?;
            }
            Ok(())
        })
        .unwrap();
    model
}

fn labels() -> LabelSet {
    LabelSet::new(vec!["x".into(), "y".into(), "z".into()]).unwrap()
}

fn input() -> EncoderInput {
    let ids: Vec<u32> = vec![2, 11, 12, 13, 14, 3, 2, 20, 21, 3, 0, 0];
    let mask: Vec<u32> = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    EncoderInput::new(&ids, &mask, None, 2, 6, &device()).unwrap()
}

/// The export read back: its backbone, with the head its file names.
fn reload<B: Backbone>(
    backbone: B,
    dir: &std::path::Path,
    head: &str,
    pooling: Pooling,
) -> MultiLabelClassifier<B> {
    let device = device();
    let st = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    let mut model = MultiLabelClassifier::new(backbone, 3, pooling, 0.0, &device).unwrap();
    let weight = st
        .tensor::<2>(
            &format!("{head}.weight"),
            Some([3, model.backbone.hidden_size()]),
            &device,
        )
        .unwrap();
    let bias = st.contains(&format!("{head}.bias")).then(|| {
        st.tensor::<1>(&format!("{head}.bias"), Some([3]), &device)
            .unwrap()
    });
    model.head.set_weights(weight, bias).unwrap();
    model
}

#[test]
fn merged_decoder_and_bert_exports_give_the_unmerged_logits() {
    let dir = std::env::temp_dir().join(format!("burn-lora-export-{}", std::process::id()));
    let device = device();

    let llama = trained(
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        Pooling::LastToken,
        &["q_proj", "v_proj", "down_proj"],
    );
    let report =
        export_merged(&llama, fixture("tiny-llama"), &labels(), dir.join("llama")).unwrap();
    assert_eq!(report.architecture, "LlamaForSequenceClassification");
    assert_eq!(report.merged, 6);
    let back = reload(
        load_llama(dir.join("llama"), &device).unwrap(),
        &dir.join("llama"),
        "score",
        Pooling::LastToken,
    );
    let diff = max_abs_diff(
        &values(back.forward(&input())),
        &values(llama.forward(&input())),
    );
    assert!(diff <= 1e-5, "llama export off by {diff}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llama/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"]["2"], "z");
    assert_eq!(config["label2id"]["y"], 1);
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");

    let bert = trained(
        load_bert(fixture("tiny-bert"), &device).unwrap(),
        Pooling::Pooler,
        &["query", "value", "dense"],
    );
    export_merged(&bert, fixture("tiny-bert"), &labels(), dir.join("bert")).unwrap();
    let back = reload(
        load_bert(dir.join("bert"), &device).unwrap(),
        &dir.join("bert"),
        "classifier",
        Pooling::Pooler,
    );
    let diff = max_abs_diff(
        &values(back.forward(&input())),
        &values(bert.forward(&input())),
    );
    assert!(diff <= 1e-5, "bert export off by {diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exports_that_would_change_predictions_are_refused() {
    let device = device();
    let out = std::env::temp_dir().join(format!("burn-lora-export-refused-{}", std::process::id()));
    // BertForSequenceClassification pools with its pooler, not a mean.
    let mean = trained(
        load_bert(fixture("tiny-bert"), &device).unwrap(),
        Pooling::Mean,
        &["query"],
    );
    assert!(matches!(
        export_merged(&mean, fixture("tiny-bert"), &labels(), &out),
        Err(Error::Unsupported { what: "export", .. })
    ));
    // A GGUF base has no safetensors to rewrite.
    let gguf = trained(
        load_gguf(fixture("tiny-llama.gguf"), &device).unwrap(),
        Pooling::LastToken,
        &["q_proj"],
    );
    assert!(matches!(
        export_merged(&gguf, fixture("tiny-llama.gguf"), &labels(), &out),
        Err(Error::Unsupported { what: "export", .. })
    ));
    // A packed base cannot take the merge.
    let mut packed = trained(
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        Pooling::LastToken,
        &["q_proj"],
    );
    quantize_frozen(&mut packed.backbone, Quantization::Nf4).unwrap();
    assert!(matches!(
        export_merged(&packed, fixture("tiny-llama"), &labels(), &out),
        Err(Error::Unsupported { what: "merge", .. })
    ));
    // Labels that are not the head's.
    let two = LabelSet::new(vec!["x".into(), "y".into()]).unwrap();
    let llama = trained(
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        Pooling::LastToken,
        &["q_proj"],
    );
    assert!(matches!(
        export_merged(&llama, fixture("tiny-llama"), &two, &out),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(!out.exists(), "a refused export wrote files");
}
