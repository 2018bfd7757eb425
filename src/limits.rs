//! Bounds on sizes read from files (`config.json`, GGUF headers, adapter configs), checked
//! before they size an allocation.

use crate::error::{Error, Result};

/// Refuse a config size that no real checkpoint has (`what` ≤ `max`), before it sizes an
/// allocation: a corrupt or hostile `config.json` / GGUF header must give an error, not
/// an out-of-memory abort or a capacity-overflow panic.
pub(crate) fn check_size(what: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::Unsupported {
            what: "model config",
            detail: format!("{what} = {value} is beyond any real model (at most {max})"),
        });
    }
    Ok(())
}

/// The largest count a job setting may take (epochs, batch size, ...): far past any real
/// run, and small enough that products of a few such counts stay far from overflow.
pub(crate) const MAX_COUNT: usize = 1 << 24;

/// Upper bounds for [`check_size`]: an order of magnitude above today's largest models.
pub(crate) mod sizes {
    // Also bounds LoRA ranks (lora::linear), which is why this sits below lora and models.
    /// Layers.
    pub const LAYERS: usize = 1 << 10;
    /// Vocabulary entries.
    pub const VOCAB: usize = 1 << 23;
    /// Hidden, intermediate and head sizes.
    pub const WIDTH: usize = 1 << 18;
    /// Attention heads.
    pub const HEADS: usize = 1 << 12;
    /// Position-table rows.
    pub const POSITIONS: usize = 1 << 22;
}
