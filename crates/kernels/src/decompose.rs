//! LoRA factors taken from a weight itself, as PEFT's PiSSA and OLoRA initialisations take
//! them (`pissa_init`, `olora_init`), computed in f64.
//!
//! * PiSSA: `W = V S Uᵀ` (thin SVD of the `[out, in]` weight); with `S_r = S[:r] / s`,
//!   `A = diag(√S_r) Uᵀ[:r]` and `B = V[:, :r] diag(√S_r)`, so `s·BA` is W's best rank-r
//!   part. `pissa_niter_K` takes the SVD from torch's `svd_lowrank` algorithm (Halko et al.
//!   2009: a Gaussian sketch, K power iterations, an SVD of the small projection).
//! * OLoRA: `W = QR` (Householder, LAPACK's sign convention); `A = R[:r]`, `B = Q[:, :r]`.
//!
//! The caller subtracts `s·BA` from the weight. Singular vectors are defined up to a sign
//! per pair (LAPACK builds differ there too); `BA` and the residual are not.
//!
//! Here, in the optimised kernels crate, because nalgebra's generic SVD is compiled where
//! it is used: at the dev profile's opt-level 0 a 384x384 SVD took seconds.

use nalgebra::DMatrix;

/// How the factors are taken from the weight.
#[derive(Debug, Clone)]
pub enum Decomposition {
    /// PiSSA: the exact thin SVD.
    Svd,
    /// PiSSA with torch's `svd_lowrank(W, r, niter)`: `sketch` is the standard-normal
    /// `[min(out, in), r]` test matrix, row-major.
    RandomizedSvd {
        /// Power iterations.
        niter: usize,
        /// The random test matrix.
        sketch: Vec<f64>,
    },
    /// OLoRA: the thin QR.
    Qr,
}

/// Factors in PEFT's orientation, row-major: `a` is `[r, in]`, `b` is `[out, r]`.
#[derive(Debug, Clone)]
pub struct Factors {
    /// `A`, `[r, in]`.
    pub a: Vec<f32>,
    /// `B`, `[out, r]`.
    pub b: Vec<f32>,
}

/// Why no factors came out.
#[derive(Debug, Clone, PartialEq)]
pub enum DecomposeError {
    /// The weight has fewer than `r` singular values / Q columns.
    RankTooLarge {
        /// The rank asked for.
        r: usize,
        /// `min(out, in)`.
        available: usize,
    },
    /// The weight's length is not `out × in`, or the sketch's not `min(out, in) × r`.
    WrongLength {
        /// Which slice.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length its dimensions call for.
        expected: usize,
    },
    /// The SVD did not converge (non-finite values).
    NotConverged,
}

impl std::fmt::Display for DecomposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecomposeError::RankTooLarge { r, available } => write!(
                f,
                "r = {r} factors asked of a weight that has only {available}"
            ),
            DecomposeError::WrongLength {
                what,
                len,
                expected,
            } => write!(f, "the {what} holds {len} values, not {expected}"),
            DecomposeError::NotConverged => {
                write!(f, "the SVD did not converge (non-finite values?)")
            }
        }
    }
}

impl std::error::Error for DecomposeError {}

/// The rank-`r` factors of `weight` (`[out, in]`, row-major) for LoRA scaling `scaling`:
/// PiSSA's `A = diag(√(S_r/s)) Uᵀ[:r]`, `B = V[:, :r] diag(√(S_r/s))`, or OLoRA's
/// `A = R[:r]`, `B = Q[:, :r]`.
pub fn lora_factors(
    weight: &[f32],
    [out, inp]: [usize; 2],
    r: usize,
    scaling: f64,
    how: &Decomposition,
) -> Result<Factors, DecomposeError> {
    let available = out.min(inp);
    if r > available {
        return Err(DecomposeError::RankTooLarge { r, available });
    }
    if weight.len() != out * inp {
        return Err(DecomposeError::WrongLength {
            what: "weight",
            len: weight.len(),
            expected: out * inp,
        });
    }
    let w = DMatrix::from_row_slice(out, inp, weight).map(f64::from);
    let (left, singular, right_t) = match how {
        Decomposition::Svd => {
            let (u, singular, v_t) = thin_svd(w)?;
            (
                u.columns(0, r).into_owned(),
                singular.rows(0, r).into_owned(),
                v_t.rows(0, r).into_owned(),
            )
        }
        Decomposition::RandomizedSvd { niter, sketch } => svd_lowrank(&w, r, *niter, sketch)?,
        Decomposition::Qr => {
            let (q, rr) = householder_qr(&w, r);
            return Ok(Factors {
                a: row_major(&rr.rows(0, r).into_owned()),
                b: row_major(&q.columns(0, r).into_owned()),
            });
        }
    };
    // PEFT divides the singular values by the scaling, so `s·BA` is the rank-r part.
    let root = singular.map(|x| (x / scaling).sqrt());
    let a = DMatrix::from_fn(r, inp, |i, j| root[i] * right_t[(i, j)]);
    let b = DMatrix::from_fn(out, r, |i, j| left[(i, j)] * root[j]);
    Ok(Factors {
        a: row_major(&a),
        b: row_major(&b),
    })
}

fn row_major(m: &DMatrix<f64>) -> Vec<f32> {
    let mut v = Vec::with_capacity(m.len());
    for i in 0..m.nrows() {
        v.extend(m.row(i).iter().map(|&x| x as f32));
    }
    v
}

/// One weight's factors to compute: [`lora_factors`]'s arguments, owned.
#[derive(Debug, Clone)]
pub struct FactorJob {
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    /// `[out, in]`.
    pub dims: [usize; 2],
    /// The rank.
    pub r: usize,
    /// The LoRA scaling.
    pub scaling: f64,
    /// How.
    pub how: Decomposition,
}

/// [`lora_factors`] for several weights at once, one per rayon task (the SVDs of a model's
/// layers are independent; each is sequential), results in the jobs' order.
pub fn lora_factors_parallel(jobs: Vec<FactorJob>) -> Vec<Result<Factors, DecomposeError>> {
    use rayon::prelude::*;
    jobs.into_par_iter()
        .map(|job| lora_factors(&job.weight, job.dims, job.r, job.scaling, &job.how))
        .collect()
}

/// `(U [m, q], S [q], Vᵀ [q, n])`.
type SingularTriplets = (DMatrix<f64>, nalgebra::DVector<f64>, DMatrix<f64>);

/// The thin SVD, singular values in descending order.
fn thin_svd(m: DMatrix<f64>) -> Result<SingularTriplets, DecomposeError> {
    let svd = nalgebra::SVD::try_new(m, true, true, f64::EPSILON, 0)
        .ok_or(DecomposeError::NotConverged)?;
    match (svd.u, svd.v_t) {
        (Some(u), Some(v_t)) => Ok((u, svd.singular_values, v_t)),
        _ => Err(DecomposeError::NotConverged),
    }
}

/// torch's `svd_lowrank(W, q, niter)`: `(U [out, q], S [q], Vᵀ [q, in])`.
fn svd_lowrank(
    w: &DMatrix<f64>,
    q: usize,
    niter: usize,
    sketch: &[f64],
) -> Result<SingularTriplets, DecomposeError> {
    // Work on the orientation with at least as many rows as columns, as torch does.
    let wide = w.nrows() < w.ncols();
    let a = if wide { w.transpose() } else { w.clone() };
    let n = a.ncols();
    if sketch.len() != n * q {
        return Err(DecomposeError::WrongLength {
            what: "sketch",
            len: sketch.len(),
            expected: n * q,
        });
    }
    let sketch = DMatrix::from_row_slice(n, q, sketch);
    let mut basis = householder_qr(&(&a * sketch), q).0;
    for _ in 0..niter {
        basis = householder_qr(&(a.transpose() * &basis), q).0;
        basis = householder_qr(&(&a * &basis), q).0;
    }
    let projected = basis.transpose() * &a;
    let (u_small, singular, v_t) = thin_svd(projected)?;
    let u = basis * u_small;
    Ok(if wide {
        (v_t.transpose(), singular, u.transpose())
    } else {
        (u, singular, v_t)
    })
}

/// Thin QR by Householder reflections with LAPACK's conventions (`geqr2`/`larfg`:
/// `R_ii = −sign(α)·‖x‖`, no reflection where the column below is already zero), so Q and
/// R carry the signs `torch.linalg.qr` gives: `(Q[:, :steps] [m, steps], R[:steps] [steps,
/// n])`, `steps ≤ min(m, n)`. Only the first `steps` reflections touch those (row i of R is
/// final after reflection i, and later reflections leave Q's first columns alone), so
/// OLoRA's rank-r factors cost `r` reflections, not `min(m, n)`.
fn householder_qr(a: &DMatrix<f64>, steps: usize) -> (DMatrix<f64>, DMatrix<f64>) {
    let (m, n) = a.shape();
    let k = steps.min(m).min(n);
    let mut r = a.clone();
    // Each reflector `H = I − τ v vᵀ` with `v[0] = 1`, acting on rows i.. .
    let mut reflectors: Vec<(Vec<f64>, f64)> = Vec::with_capacity(k);
    for i in 0..k {
        let alpha = r[(i, i)];
        let below: f64 = (i + 1..m)
            .map(|row| r[(row, i)].powi(2))
            .sum::<f64>()
            .sqrt();
        if below == 0.0 {
            reflectors.push((vec![1.0], 0.0));
            continue;
        }
        let beta = -alpha.signum() * alpha.hypot(below);
        let tau = (beta - alpha) / beta;
        let mut v = Vec::with_capacity(m - i);
        v.push(1.0);
        v.extend((i + 1..m).map(|row| r[(row, i)] / (alpha - beta)));
        r[(i, i)] = beta;
        for row in i + 1..m {
            r[(row, i)] = 0.0;
        }
        reflect(&mut r, &v, tau, i, i + 1..n);
        reflectors.push((v, tau));
    }
    // Q = H_0 H_1 … H_{k−1} applied to the first k columns of I.
    let mut q = DMatrix::<f64>::identity(m, k);
    for (i, (v, tau)) in reflectors.iter().enumerate().rev() {
        if *tau != 0.0 {
            reflect(&mut q, v, *tau, i, 0..k);
        }
    }
    (q, r.rows(0, k).into_owned())
}

/// `M[row0.., cols] ← (I − τ v vᵀ) M[row0.., cols]`.
fn reflect(m: &mut DMatrix<f64>, v: &[f64], tau: f64, row0: usize, cols: std::ops::Range<usize>) {
    for col in cols {
        let dot: f64 = v
            .iter()
            .enumerate()
            .map(|(t, vt)| vt * m[(row0 + t, col)])
            .sum();
        for (t, vt) in v.iter().enumerate() {
            m[(row0 + t, col)] -= tau * vt * dot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn householder_qr_reconstructs_and_is_orthonormal() {
        let a = DMatrix::from_fn(7, 4, |i, j| ((i * 5 + j * 3) % 7) as f64 - 2.5 + j as f64);
        let (q, r) = householder_qr(&a, 4);
        assert!((&q * &r - &a).abs().max() < 1e-12);
        assert!((q.transpose() * &q - DMatrix::identity(4, 4)).abs().max() < 1e-12);
        // Fewer steps: the leading columns of Q and rows of R, exactly.
        let (q2, r2) = householder_qr(&a, 2);
        assert_eq!(q2, q.columns(0, 2).into_owned());
        assert_eq!(r2, r.rows(0, 2).into_owned());
        for i in 0..4 {
            for j in 0..i {
                assert_eq!(r[(i, j)], 0.0);
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        let w = vec![1.0f32; 6];
        assert_eq!(
            lora_factors(&w, [2, 3], 3, 1.0, &Decomposition::Qr).unwrap_err(),
            DecomposeError::RankTooLarge { r: 3, available: 2 }
        );
        assert!(matches!(
            lora_factors(&w[..5], [2, 3], 1, 1.0, &Decomposition::Svd),
            Err(DecomposeError::WrongLength { .. })
        ));
        let how = Decomposition::RandomizedSvd {
            niter: 1,
            sketch: vec![0.5; 3],
        };
        assert!(matches!(
            lora_factors(&w, [2, 3], 1, 1.0, &how),
            Err(DecomposeError::WrongLength { .. })
        ));
    }
}
