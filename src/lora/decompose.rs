//! PiSSA's and OLoRA's starting factors, taken from the frozen weight itself (PEFT's
//! `pissa_init` and `olora_init`; the numerics in `burn_lora_kernels::decompose`).

use burn_lora_kernels::decompose::{Decomposition, Factors, lora_factors};

use super::config::InitLoraWeights;
use crate::error::{Error, Result};

/// The factors `init` takes from `weight` (`[out, in]`, row-major), PEFT-oriented.
/// `gaussian(rows, cols)` draws the standard-normal sketch `pissa_niter_K` needs.
pub(crate) fn factors_from_weight(
    init: &InitLoraWeights,
    weight: &[f32],
    [out, inp]: [usize; 2],
    r: usize,
    scaling: f64,
    gaussian: impl FnOnce(usize, usize) -> Vec<f64>,
) -> Result<Factors> {
    let sketch;
    let how = match init {
        InitLoraWeights::Pissa => Decomposition::Svd,
        InitLoraWeights::Olora => Decomposition::Qr,
        InitLoraWeights::PissaNiter(niter) => {
            sketch = gaussian(out.min(inp), r);
            Decomposition::RandomizedSvd {
                niter: *niter,
                sketch: &sketch,
            }
        }
        other => {
            return Err(Error::InvalidState(format!(
                "{other:?} does not take its factors from the weight"
            )));
        }
    };
    // A rank above min(out, in): PEFT would silently train a smaller adapter than its
    // config says.
    lora_factors(weight, [out, inp], r, scaling, how).map_err(|e| Error::Unsupported {
        what: "init_lora_weights",
        detail: format!("{init:?} on a {out}x{inp} weight: {e}"),
    })
}
