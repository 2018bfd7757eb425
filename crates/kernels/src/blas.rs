//! A system CBLAS (OpenBLAS, BLIS, MKL, Apple's Accelerate) for the large f32 products,
//! loaded at run time when the `blas` feature is on.
//!
//! Why: on AVX2 CPUs without AVX-512 the `gemm` crate's f32 kernel reaches about 70–85 % of
//! the rate of OpenBLAS or MKL at a transformer's linear shapes (BENCHMARKS.md, "A system
//! BLAS for the large products"), and those products are most of an inference pass. Loading
//! the library at run time rather than linking it keeps every build free of system
//! libraries: without one, or with `BURN_LORA_BLAS=none`, every product goes through `gemm`
//! as before.
//!
//! `BURN_LORA_BLAS` (read once, at the first large product): unset — the first of the usual
//! library names that loads (OpenBLAS, then BLIS, then Accelerate on macOS); `none` (or
//! `off`, `0`, empty) — never; anything else — that library file (a name or a path), and
//! no BLAS, with a warning on stderr, when it does not load or lacks `cblas_sgemm`. OpenBLAS
//! is told to use as many threads as rayon's pool (`RAYON_NUM_THREADS`), so one setting
//! governs both.

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use crate::matmul::MatrixView;

/// CBLAS's `cblas_sgemm`.
type Sgemm = unsafe extern "C" fn(
    c_int, // layout
    c_int, // transpose A
    c_int, // transpose B
    c_int, // m
    c_int, // n
    c_int, // k
    f32,   // alpha
    *const f32,
    c_int, // lda
    *const f32,
    c_int, // ldb
    f32,   // beta
    *mut f32,
    c_int, // ldc
);

/// OpenBLAS's `openblas_set_num_threads`.
type SetThreads = unsafe extern "C" fn(c_int);

// CBLAS's enum values (cblas.h).
const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// The library names tried, in order, when `BURN_LORA_BLAS` is unset.
#[cfg(target_os = "macos")]
const DEFAULT_LIBRARIES: &[&str] = &[
    "libopenblas.dylib",
    "libblis.dylib",
    "/System/Library/Frameworks/Accelerate.framework/Accelerate",
];
#[cfg(target_os = "windows")]
const DEFAULT_LIBRARIES: &[&str] = &["libopenblas.dll", "openblas.dll", "libblis.dll"];
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const DEFAULT_LIBRARIES: &[&str] = &[
    "libopenblas.so.0",
    "libopenblas.so",
    "libblis.so.4",
    "libblis.so",
];

/// A loaded CBLAS library.
struct Blas {
    sgemm: Sgemm,
    name: String,
    // Kept alive: `sgemm` points into it.
    _library: libloading::Library,
}

fn loaded() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(|| match std::env::var("BURN_LORA_BLAS") {
        Err(_) => DEFAULT_LIBRARIES.iter().find_map(|name| load(name).ok()),
        Ok(choice) if matches!(choice.trim(), "" | "none" | "off" | "0") => None,
        Ok(choice) => load(choice.trim())
            .map_err(|why| {
                eprintln!(
                    "burn-lora: BURN_LORA_BLAS={choice}: {why}; using the built-in gemm kernel"
                )
            })
            .ok(),
    })
    .as_ref()
}

fn load(name: &str) -> Result<Blas, libloading::Error> {
    // SAFETY: loading a shared library runs its initialisers; the libraries named here (or
    // by the user) are BLAS implementations, whose initialisers only set up their own state.
    let library = unsafe { libloading::Library::new(name)? };
    // SAFETY: `cblas_sgemm` has this signature in every CBLAS (cblas.h); the pointer stays
    // valid while `library` is loaded, which `Blas` keeps.
    let sgemm = unsafe { *library.get::<Sgemm>(b"cblas_sgemm\0")? };
    // SAFETY: OpenBLAS's documented `void openblas_set_num_threads(int)`.
    if let Ok(set_threads) = unsafe { library.get::<SetThreads>(b"openblas_set_num_threads\0") } {
        let threads = c_int::try_from(rayon::current_num_threads()).unwrap_or(1);
        // SAFETY: as above; any positive count is valid.
        unsafe { set_threads(threads) };
    }
    Ok(Blas {
        sgemm,
        name: name.to_owned(),
        _library: library,
    })
}

/// The library the large products go through, if one is loaded (see the module docs);
/// loads it on the first call.
pub fn library() -> Option<&'static str> {
    loaded().map(|blas| blas.name.as_str())
}

/// A view as a CBLAS operand: whether it is transposed and its leading dimension. `None`
/// when neither stride is 1 (CBLAS needs one contiguous direction) or a size overflows C's
/// `int`.
fn operand(view: &MatrixView) -> Option<(c_int, c_int)> {
    // CBLAS also needs the leading dimension to span a whole row (or column) of the view.
    let (trans, ld) = if view.col_stride == 1 && view.row_stride >= view.cols.max(1) {
        (NO_TRANS, view.row_stride)
    } else if view.row_stride == 1 && view.col_stride >= view.rows.max(1) {
        (TRANS, view.col_stride)
    } else {
        return None;
    };
    Some((trans, c_int::try_from(ld).ok()?))
}

/// `out ← scale·(lhs·rhs)`, or `out ← out + scale·(lhs·rhs)` with `accumulate`, through the
/// loaded CBLAS, for views checked by their `fits` and a row-major `out` of `lhs.rows ×
/// rhs.cols`. `false`, leaving `out` untouched, when no library is loaded or the views
/// cannot be handed to CBLAS as they are.
pub(crate) fn product_into(
    out: &mut [MaybeUninit<f32>],
    lhs: MatrixView,
    rhs: MatrixView,
    accumulate: bool,
    scale: f32,
) -> bool {
    let Some(blas) = loaded() else {
        return false;
    };
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let (Some((trans_a, lda)), Some((trans_b, ldb))) = (operand(&lhs), operand(&rhs)) else {
        return false;
    };
    let (Ok(m), Ok(n), Ok(k)) = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k)) else {
        return false;
    };
    if m == 0 || n == 0 || k == 0 || out.len() != lhs.rows * rhs.cols {
        return false;
    }
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: both views lie inside their buffers (their `fits`) with the strides `operand`
    // read off; `out` holds m·n elements, row-major with leading dimension n. With beta 0
    // CBLAS does not read C (the BLAS specification), so an unwritten `out` is fine; with
    // `accumulate` it has been written.
    unsafe {
        (blas.sgemm)(
            ROW_MAJOR,
            trans_a,
            trans_b,
            m,
            n,
            k,
            scale,
            lhs.data.as_ptr().add(lhs.offset),
            lda,
            rhs.data.as_ptr().add(rhs.offset),
            ldb,
            beta,
            out.as_mut_ptr().cast::<f32>(),
            n,
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::tests::{close, naive, offset_and_transposed_views, values};

    #[test]
    fn views_become_cblas_operands_only_with_a_contiguous_direction() {
        let data = [0f32; 64];
        let view = |row_stride, col_stride| MatrixView {
            data: &data,
            offset: 0,
            rows: 3,
            cols: 4,
            row_stride,
            col_stride,
        };
        assert_eq!(operand(&view(4, 1)), Some((NO_TRANS, 4)));
        assert_eq!(operand(&view(6, 1)), Some((NO_TRANS, 6)), "padded rows");
        assert_eq!(
            operand(&view(1, 3)),
            Some((TRANS, 3)),
            "a transposed [4, 3]"
        );
        assert_eq!(operand(&view(8, 2)), None, "no unit stride");
        assert_eq!(operand(&view(2, 1)), None, "rows overlap");
    }

    #[test]
    fn products_through_the_library_match_the_triple_loop() {
        let required = std::env::var("BURN_LORA_TEST_BLAS").is_ok_and(|v| v == "required");
        let Some(name) = library() else {
            assert!(
                !required,
                "BURN_LORA_TEST_BLAS=required but no CBLAS library loaded"
            );
            eprintln!("no CBLAS library loaded: nothing to compare");
            return;
        };
        eprintln!("CBLAS: {name}");
        let (m, k, n) = (70, 90, 50);
        let a = values(m * k + 7, 1);
        let b = values(k * n, 2);
        let base = values(m * n, 3);
        let (lhs, rhs_both) = offset_and_transposed_views(&a, &b, (m, k, n));
        for rhs in rhs_both {
            let product = naive(lhs, rhs, None);
            let mut out = crate::matmul::uninit(m * n);
            assert!(product_into(&mut out, lhs, rhs, false, 0.5));
            // SAFETY: a product that went through writes every element.
            let out = unsafe { crate::matmul::assume_init(out) };
            let half: Vec<f32> = product.iter().map(|p| 0.5 * p).collect();
            close(&out, &half);
            // Accumulating onto the values already there.
            let mut acc: Vec<MaybeUninit<f32>> =
                base.iter().copied().map(MaybeUninit::new).collect();
            assert!(product_into(&mut acc, lhs, rhs, true, 2.0));
            // SAFETY: every element was written before the product.
            let acc = unsafe { crate::matmul::assume_init(acc) };
            let want: Vec<f32> = product
                .iter()
                .zip(&base)
                .map(|(p, b)| b + 2.0 * p)
                .collect();
            close(&acc, &want);
        }
        // A view without a unit stride is left to the caller.
        let strided = MatrixView {
            col_stride: 2,
            row_stride: 2 * k,
            cols: k / 2,
            ..lhs
        };
        let short = MatrixView {
            rows: k / 2,
            ..rhs_both[0]
        };
        let mut out = crate::matmul::uninit(m * n);
        assert!(!product_into(&mut out, strided, short, false, 1.0));
    }
}
