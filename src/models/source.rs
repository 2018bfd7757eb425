//! Where a model's weights come from: a checkpoint folder, a GGUF file, … A model loader
//! asks for tensors by their Hugging Face name and shape; each source maps and converts.
//! (Here, above [`crate::lora`], since a source may hand over packed blocks.)

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::Checkpoint;
use crate::lora::{BaseDtype, PackedWeight};

/// Named float tensors, addressed by Hugging Face parameter names.
pub trait TensorSource {
    /// The file or folder the tensors come from (for error messages).
    fn origin(&self) -> &Path;

    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;

    /// Load `name` with exactly `shape`, as the device's float type.
    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>>;

    /// Load `name` with exactly `shape`, stored as `dtype`. The default reads it as f32
    /// and casts (one tensor at a time: the f32 model never exists whole); a source that
    /// stores half precision reads it straight into its dtype.
    fn tensor_as<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: BaseDtype,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let tensor = self.tensor(name, shape, device)?;
        Ok(match dtype {
            BaseDtype::F32 => tensor,
            half => tensor.cast(half.float_dtype()),
        })
    }

    /// Linear weight `name` (`[out, in]`) in the quantised blocks the source stores it in,
    /// for [`Quantization::Keep`](crate::lora::Quantization::Keep): `None` where it is
    /// stored as plain floats (load it with [`tensor`](Self::tensor)). Sources without
    /// quantised blocks (all but GGUF files) answer with an error.
    fn stored_blocks(&self, name: &str, shape: [usize; 2]) -> Result<Option<PackedWeight>> {
        let _ = (name, shape);
        Err(Error::Unsupported {
            what: "quantization",
            detail: format!(
                "`keep` keeps the quantised blocks of a GGUF file; {} stores none (use nf4 \
                 or int8)",
                self.origin().display()
            ),
        })
    }
}

impl TensorSource for Checkpoint {
    fn origin(&self) -> &Path {
        self.dir()
    }

    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }

    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        Checkpoint::tensor(self, name, shape, device)
    }

    fn tensor_as<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: BaseDtype,
        device: &Device,
    ) -> Result<Tensor<D>> {
        Checkpoint::tensor_as(self, name, shape, dtype.dtype(), device)
    }
}
