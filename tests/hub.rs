//! Checkpoints by model id (feature `hub`), against a local mirror served through a
//! `file://` endpoint laid out as the hub's `{id}/resolve/{revision}/{file}`.
#![cfg(feature = "hub")]

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use burn_lora::Error;
use burn_lora::io::hub::HubRepo;
use burn_lora::models::{Backbone, EncoderInput};
use common::{fixture, load_bert, load_llama};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-lora-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Mirror `files` of a fixture folder as repository `id` (plus a stand-in tokenizer.json).
fn mirror(hub: &Path, id: &str, fixture_dir: &str, files: &[&str]) {
    let dir = hub.join(id).join("resolve/main");
    std::fs::create_dir_all(&dir).unwrap();
    for f in files {
        std::fs::copy(fixture(fixture_dir).join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
}

fn hub_repo(id: &str, endpoint: &str, cache: &Path) -> HubRepo {
    HubRepo::new(id)
        .unwrap()
        .with_endpoint(endpoint)
        .with_cache_dir(cache)
}

fn input(device: &burn::tensor::Device) -> EncoderInput {
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 11, 12, 13, 3], [1, 5]), device);
    EncoderInput {
        attention_mask: ids.ones_like(),
        input_ids: ids,
        token_type_ids: None,
    }
}

#[test]
fn downloads_single_file_and_sharded_checkpoints_and_reuses_the_cache() {
    let device = burn_lora::device::parse_device("flex").unwrap();
    let (hub, cache) = (scratch("mirror"), scratch("cache"));
    let endpoint = format!("file://{}", hub.display());
    mirror(
        &hub,
        "org/tiny-bert",
        "tiny-bert",
        &["config.json", "model.safetensors"],
    );
    let repo = hub_repo("org/tiny-bert", &endpoint, &cache);
    let dir = repo.download_model().unwrap();
    assert_eq!(dir, cache.join("org--tiny-bert/main"));
    let downloaded = load_bert(&dir, &device).unwrap().forward(&input(&device));
    let direct = load_bert(fixture("tiny-bert"), &device)
        .unwrap()
        .forward(&input(&device));
    assert_eq!(common::values(downloaded), common::values(direct));
    assert!(!dir.join("modules.json").exists(), "optional file invented");

    // Cached: works with the mirror gone.
    std::fs::remove_dir_all(hub.join("org/tiny-bert")).unwrap();
    assert_eq!(repo.download_model().unwrap(), dir);

    // Sharded bf16: the index and every shard it names.
    let shards = [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    mirror(&hub, "tiny-llama", "tiny-llama-bf16-sharded", &shards);
    let dir = hub_repo("tiny-llama", &endpoint, &cache)
        .download_model()
        .unwrap();
    for f in &shards[2..] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    load_llama(&dir, &device).unwrap();
}

#[test]
fn missing_files_are_named() {
    let (hub, cache) = (scratch("mirror-missing"), scratch("cache-missing"));
    let endpoint = format!("file://{}", hub.display());
    // Config but no weights.
    mirror(&hub, "org/no-weights", "tiny-bert", &["config.json"]);
    let err = hub_repo("org/no-weights", &endpoint, &cache)
        .download_model()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Download { url, .. } if url.ends_with("org/no-weights/resolve/main/model.safetensors")),
        "{err}"
    );
    // Nothing at all.
    let err = hub_repo("org/absent", &endpoint, &cache)
        .download_model()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Download { url, .. } if url.ends_with("config.json")),
        "{err}"
    );
    assert!(!cache.join("org--absent/main/config.json").exists());
    assert!(!cache.join("org--absent/main/config.json.part").exists());
}
