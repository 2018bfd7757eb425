//! PiSSA's and OLoRA's starting factors, taken from the frozen weight itself (PEFT's
//! `pissa_init` and `olora_init`; the numerics in `burn_lora_kernels::decompose`).

use burn_lora_kernels::decompose::{
    DecomposeError, Decomposition, FactorJob, Factors, lora_factors, lora_factors_parallel,
};

use super::config::InitLoraWeights;
use crate::error::{Error, Result};

/// The job of taking `init`'s factors from `weight` (`[out, in]`, row-major).
/// `gaussian(rows, cols)` draws the standard-normal sketch `pissa_niter_K` needs.
pub(crate) fn factor_job(
    init: &InitLoraWeights,
    weight: Vec<f32>,
    dims: [usize; 2],
    r: usize,
    scaling: f64,
    gaussian: impl FnOnce(usize, usize) -> Vec<f64>,
) -> Result<FactorJob> {
    let how = match init {
        InitLoraWeights::Pissa => Decomposition::Svd,
        InitLoraWeights::Olora => Decomposition::Qr,
        InitLoraWeights::PissaNiter(niter) => Decomposition::RandomizedSvd {
            niter: *niter,
            sketch: gaussian(dims[0].min(dims[1]), r),
        },
        other => {
            return Err(Error::InvalidState(format!(
                "{other:?} does not take its factors from the weight"
            )));
        }
    };
    Ok(FactorJob {
        weight,
        dims,
        r,
        scaling,
        how,
    })
}

/// Run one job, PEFT-oriented factors out.
pub(crate) fn run_job(init: &InitLoraWeights, job: &FactorJob) -> Result<Factors> {
    lora_factors(&job.weight, job.dims, job.r, job.scaling, &job.how)
        .map_err(|e| refused(init, job.dims, e))
}

/// Run jobs in parallel (one layer each), in order.
pub(crate) fn run_jobs(init: &InitLoraWeights, jobs: Vec<FactorJob>) -> Result<Vec<Factors>> {
    let dims: Vec<[usize; 2]> = jobs.iter().map(|j| j.dims).collect();
    lora_factors_parallel(jobs)
        .into_iter()
        .zip(dims)
        .map(|(result, dims)| result.map_err(|e| refused(init, dims, e)))
        .collect()
}

/// A rank above min(out, in): PEFT would silently train a smaller adapter than its config
/// says.
fn refused(init: &InitLoraWeights, [out, inp]: [usize; 2], e: DecomposeError) -> Error {
    Error::Unsupported {
        what: "init_lora_weights",
        detail: format!("{init:?} on a {out}x{inp} weight: {e}"),
    }
}
