//! Memory-mapped safetensors files: tensors by name, converted to the device's float type.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A safetensors file, memory-mapped (the weights are read once, straight into tensors);
/// the header is parsed once, at open.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Where the data section starts (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .finish()
    }
}

impl SafetensorsFile {
    /// Open and validate the header. A truncated or malformed file is an [`Error::Format`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only and this crate never writes the file while it is
        // open; a file changed underneath by another process is outside our contract,
        // as for every mmap-based safetensors reader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let format = |e: safetensors::SafeTensorError| Error::Format {
            path: path.clone(),
            message: e.to_string(),
        };
        // `deserialize` checks every tensor's offsets against the file; keep its metadata.
        SafeTensors::deserialize(&mmap).map_err(format)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(format)?;
        Ok(SafetensorsFile {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    fn lookup(&self, name: &str) -> Result<TensorView<'_>> {
        let missing = || Error::MissingTensor {
            name: name.to_string(),
            path: self.path.clone(),
        };
        let info = self.metadata.info(name).ok_or_else(missing)?;
        let (start, end) = info.data_offsets;
        // Offsets were validated against the file in `open`.
        let data = &self.mmap[self.data_start + start..self.data_start + end];
        TensorView::new(info.dtype, info.shape.clone(), data).map_err(|e| Error::Format {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {e}"),
        })
    }

    /// Drop `name`'s pages from this process's resident memory once its values are copied
    /// out: loading a model then never holds the file and the model at once (the pages stay
    /// in the OS's page cache; a later read maps them again).
    fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Some(info) = self.metadata.info(name) {
            let (start, end) = info.data_offsets;
            // SAFETY: the map is a read-only shared mapping of a file this crate never
            // writes: MADV_DONTNEED only unmaps pages, and the next access reads the same
            // bytes back from the file. A failure only leaves the pages resident.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.data_start + start,
                    end - start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = name;
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    /// Whether the file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// Shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.metadata.info(name).map(|t| t.shape.clone())
    }

    /// Read `name` as f32 values and its shape (f32, f16 and bf16 are accepted).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let view = self.lookup(name)?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let shape = view.shape().to_vec();
        self.release(name);
        Ok((values, shape))
    }

    /// Read an integer tensor (`I64`, `I32`, `U32`) as i64 values and its shape.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let view = self.lookup(name)?;
        let bytes = view.data();
        let values: Vec<i64> = match view.dtype() {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok((values, view.shape().to_vec()))
    }

    /// Load `name` as a float tensor of rank `D` on `device`, checking its shape when
    /// `expected` is given.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        expected: Option<[usize; D]>,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let (values, shape) = self.read_f32(name)?;
        Self::shaped(name, values, shape, expected, device)
    }

    /// Load `name` with the exact `shape`, stored as `dtype` (`F32`, `F16` or `BF16`). A
    /// half-precision tensor asked for in its own dtype is copied bit for bit; any other
    /// pair converts through f32 (rounding to nearest even, as torch's `.to()`).
    pub fn tensor_as<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor<D>> {
        if dtype == DType::F32 {
            return self.tensor(name, Some(shape), device);
        }
        let view = self.lookup(name)?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        let data = match (view.dtype(), dtype) {
            (Dtype::F16, DType::F16) => TensorData::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>(),
                shape,
            ),
            (Dtype::BF16, DType::BF16) => TensorData::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>(),
                shape,
            ),
            (_, DType::F16) => TensorData::new(
                self.read_f32(name)?
                    .0
                    .into_iter()
                    .map(f16::from_f32)
                    .collect::<Vec<_>>(),
                shape,
            ),
            (_, DType::BF16) => TensorData::new(
                self.read_f32(name)?
                    .0
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect::<Vec<_>>(),
                shape,
            ),
            (_, other) => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?} (as a float tensor: F32, F16, BF16)"),
                });
            }
        };
        self.release(name);
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// [`tensor`](Self::tensor), refusing NaN or infinite values (trained weights, e.g. an
    /// adapter saved from a diverged run, which would turn every prediction into NaN).
    pub fn finite_tensor<const D: usize>(
        &self,
        name: &str,
        expected: Option<[usize; D]>,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let (values, shape) = self.read_f32(name)?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Format {
                path: self.path().to_path_buf(),
                message: format!("tensor `{name}` holds a non-finite value ({bad})"),
            });
        }
        Self::shaped(name, values, shape, expected, device)
    }

    fn shaped<const D: usize>(
        name: &str,
        values: Vec<f32>,
        shape: Vec<usize>,
        expected: Option<[usize; D]>,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let shape_ok = match expected {
            Some(e) => shape == e,
            None => shape.len() == D,
        };
        if !shape_ok {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: expected.map(|e| e.to_vec()).unwrap_or_else(|| vec![0; D]),
                actual: shape,
            });
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// f32 tensors by name: `(shape, row-major values)`.
pub type F32Tensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A safetensors file's bytes holding `tensors` as F32 (little-endian), with the
/// `format: pt` metadata PyTorch loaders expect.
pub fn serialize_f32(tensors: &F32Tensors) -> Result<Vec<u8>> {
    let bytes: Vec<(&String, &Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (shape, values))| {
            (
                k,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, shape, data)| {
            TensorView::new(Dtype::F32, (*shape).clone(), data)
                .map(|v| ((*k).clone(), v))
                .map_err(|e| Error::InvalidState(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<_>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::InvalidState(e.to_string()))
}
