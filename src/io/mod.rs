//! Reading and writing weight files.

pub mod atomic;
pub mod checkpoint;
pub mod gguf;
#[cfg(feature = "hub")]
pub mod hub;
pub mod run_lock;
pub mod safetensors;

pub use atomic::{existing_dir, replace_dir, write_atomic};
pub use checkpoint::Checkpoint;
pub use run_lock::RunLock;
pub use safetensors::SafetensorsFile;
