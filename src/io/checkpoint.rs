//! A Hugging Face checkpoint folder: `model.safetensors` or a sharded set described by
//! `model.safetensors.index.json`, read tensor by tensor (memory-mapped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor};

use super::safetensors::SafetensorsFile;
use crate::error::{Error, Result};

/// Every tensor of a checkpoint, by name, across shards.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .field("tensors", &self.by_name.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Open `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut by_name = HashMap::new();
        if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let index: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::Format {
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let mut shard_ids: HashMap<String, usize> = HashMap::new();
            let mut shard_names: Vec<&String> = index.weight_map.values().collect();
            shard_names.sort();
            shard_names.dedup();
            for shard in shard_names {
                shard_ids.insert(shard.clone(), files.len());
                files.push(SafetensorsFile::open(dir.join(shard))?);
            }
            for (name, shard) in &index.weight_map {
                let id = shard_ids[shard];
                if !files[id].contains(name) {
                    return Err(Error::MissingTensor {
                        name: name.clone(),
                        path: files[id].path().to_path_buf(),
                    });
                }
                by_name.insert(name.clone(), id);
            }
        } else if single.exists() {
            let file = SafetensorsFile::open(&single)?;
            for name in file.names() {
                by_name.insert(name, 0);
            }
            files.push(file);
        } else {
            return Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json",
                ),
            ));
        }
        Ok(Checkpoint {
            dir,
            files,
            by_name,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.files[*self.by_name.get(name)?].shape(name)
    }

    /// Read `name` as f32 values (f32, f16 and bf16 files) and its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.file_of(name)?.read_f32(name)
    }

    /// The shard holding `name`.
    fn file_of(&self, name: &str) -> Result<&SafetensorsFile> {
        let id = self.by_name.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            path: self.dir.clone(),
        })?;
        Ok(&self.files[*id])
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Load `name` with the exact `shape`, as the device's float type.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        self.file_of(name)?.tensor(name, Some(shape), device)
    }

    /// Load `name` with the exact `shape`, stored as `dtype` (f32, f16 or bf16): a tensor
    /// the file stores in `dtype` is copied as is, never widened to f32 on the way.
    pub fn tensor_as<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor<D>> {
        self.file_of(name)?.tensor_as(name, shape, dtype, device)
    }
}
