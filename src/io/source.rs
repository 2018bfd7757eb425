//! Where a model's weights come from: a checkpoint folder, a GGUF file, … A model loader
//! asks for tensors by their Hugging Face name and shape; each source maps and converts.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::error::Result;

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
}
