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
//! no BLAS, with a note ([`notes`]), when it does not load or lacks `cblas_sgemm`. OpenBLAS
//! is told to use as many threads as rayon's pool (`RAYON_NUM_THREADS`), so one setting
//! governs both, unless `OPENBLAS_NUM_THREADS` is set (then OpenBLAS's own choice stands).
//! Nothing here prints: what a caller may want to show is in [`notes`].
//!
//! An OpenBLAS that does not recognise the CPU runs its generic SSE3 (`Prescott`) kernels,
//! at about half `gemm`'s rate (Debian 12's 0.3.21 on a 2023 Xeon: BENCHMARKS.md, "Subnormal
//! attention probabilities and OpenBLAS's fallback kernels"). Found by default, such a
//! library is passed over, with a note; `OPENBLAS_CORETYPE` (OpenBLAS's own
//! setting, e.g. `Haswell` or `SkylakeX`) picks its tuned kernels instead, and a library
//! named in `BURN_LORA_BLAS` is used whatever its kernels, with a note.

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

/// OpenBLAS's `openblas_get_corename`: the name of the kernel set it chose.
type CoreName = unsafe extern "C" fn() -> *const std::ffi::c_char;

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
pub(crate) struct Blas {
    sgemm: Sgemm,
    name: String,
    /// OpenBLAS's kernel set (`Haswell`, `SkylakeX`, `Zen`, `Prescott`…); `None` for
    /// other libraries.
    core: Option<String>,
    /// `name`, with the kernel set when known.
    label: String,
    // Kept alive: `sgemm` points into it.
    _library: libloading::Library,
}

/// The library chosen as the module docs say, loaded on the first call.
pub(crate) fn loaded() -> Option<&'static Blas> {
    choice().0.as_ref()
}

/// Why a library found was not used, or is used with generic kernels: for the caller to
/// show (library code prints nothing). Empty when nothing needs saying.
pub fn notes() -> &'static [String] {
    &choice().1
}

/// The library chosen, with the notes about the choice.
fn choice() -> &'static (Option<Blas>, Vec<String>) {
    static BLAS: OnceLock<(Option<Blas>, Vec<String>)> = OnceLock::new();
    BLAS.get_or_init(|| {
        let mut notes = Vec::new();
        let blas = match std::env::var("BURN_LORA_BLAS") {
            Err(_) => DEFAULT_LIBRARIES
                .iter()
                .filter_map(|name| load(name).ok())
                .find(|blas| match blas.generic_kernels() {
                    Some(core) => {
                        notes.push(format!(
                            "{} passed over: it runs its generic {core} kernels on this CPU (it \
                             does not recognise it), slower than the built-in gemm kernel; \
                             OPENBLAS_CORETYPE=Haswell (AVX2) or SkylakeX (AVX-512) selects its \
                             tuned kernels",
                            blas.name
                        ));
                        false
                    }
                    None => true,
                }),
            Ok(choice) if matches!(choice.trim(), "" | "none" | "off" | "0") => None,
            Ok(choice) => match load(choice.trim()) {
                Ok(blas) => {
                    if let Some(core) = blas.generic_kernels() {
                        notes.push(format!(
                            "BURN_LORA_BLAS={choice} runs its generic {core} kernels on this \
                             CPU; OPENBLAS_CORETYPE selects tuned ones"
                        ));
                    }
                    Some(blas)
                }
                Err(why) => {
                    notes.push(format!(
                        "BURN_LORA_BLAS={choice}: {why}; using the built-in gemm kernel"
                    ));
                    None
                }
            },
        };
        (blas, notes)
    })
}

/// OpenBLAS's kernel sets from before AVX2 (its `driver/others/dynamic.c`): the ones it
/// falls back to on a CPU model it does not know.
const PRE_AVX2_CORES: &[&str] = &[
    "katmai",
    "coppermine",
    "northwood",
    "prescott",
    "banias",
    "core2",
    "penryn",
    "dunnington",
    "nehalem",
    "atom",
    "sandybridge",
    "opteron",
    "opteron_sse3",
    "barcelona",
    "bobcat",
    "bulldozer",
    "piledriver",
    "unknown",
];

/// Whether a library reporting kernel set `core` runs below what a CPU with AVX2 and FMA
/// (`cpu_has_avx2_fma`) can do, the sign of a CPU model the library does not know.
fn is_generic_core(core: &str, cpu_has_avx2_fma: bool) -> bool {
    cpu_has_avx2_fma && PRE_AVX2_CORES.contains(&core.trim().to_ascii_lowercase().as_str())
}

fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

impl Blas {
    /// The kernel set's name when it is a generic fallback on this CPU.
    fn generic_kernels(&self) -> Option<&str> {
        self.core
            .as_deref()
            .filter(|core| is_generic_core(core, cpu_has_avx2_fma()))
    }
}

fn load(name: &str) -> Result<Blas, libloading::Error> {
    // SAFETY: loading a shared library runs its initialisers; the libraries named here (or
    // by the user) are BLAS implementations, whose initialisers only set up their own state.
    let library = unsafe { libloading::Library::new(name)? };
    // SAFETY: `cblas_sgemm` has this signature in every CBLAS (cblas.h); the pointer stays
    // valid while `library` is loaded, which `Blas` keeps.
    let sgemm = unsafe { *library.get::<Sgemm>(b"cblas_sgemm\0")? };
    // OpenBLAS's thread count is process-wide: set to rayon's pool size so one setting
    // governs both, unless the user chose it with OpenBLAS's own variable.
    // SAFETY: OpenBLAS's documented `void openblas_set_num_threads(int)`.
    if std::env::var_os("OPENBLAS_NUM_THREADS").is_none()
        && let Ok(set_threads) = unsafe { library.get::<SetThreads>(b"openblas_set_num_threads\0") }
    {
        let threads = c_int::try_from(rayon::current_num_threads()).unwrap_or(1);
        // SAFETY: as above; any positive count is valid.
        unsafe { set_threads(threads) };
    }
    // SAFETY: OpenBLAS's documented `char* openblas_get_corename(void)`.
    let core = unsafe { library.get::<CoreName>(b"openblas_get_corename\0") }
        .ok()
        .and_then(|core_name| {
            // SAFETY: as above; it returns a static NUL-terminated string (or null).
            let name = unsafe { core_name() };
            // SAFETY: checked non-null; OpenBLAS's names are static C strings.
            (!name.is_null()).then(|| {
                unsafe { std::ffi::CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            })
        });
    let label = match &core {
        Some(core) => format!("{name} ({core} kernels)"),
        None => name.to_owned(),
    };
    Ok(Blas {
        sgemm,
        name: name.to_owned(),
        core,
        label,
        _library: library,
    })
}

/// The library the large products go through, if one is loaded (see the module docs), with
/// OpenBLAS's kernel set, e.g. `libopenblas.so.0 (Haswell kernels)`; loads it on the first
/// call.
pub fn library() -> Option<&'static str> {
    loaded().map(|blas| blas.label.as_str())
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

impl Blas {
    /// `out ← scale·(lhs·rhs)`, or `out ← out + scale·(lhs·rhs)` with `accumulate`, through
    /// this library, for views checked by their `fits` and a row-major `out` of `lhs.rows ×
    /// rhs.cols`. `false`, leaving `out` untouched, when the views cannot be handed to CBLAS
    /// as they are.
    pub(crate) fn product_into(
        &self,
        out: &mut [MaybeUninit<f32>],
        lhs: MatrixView,
        rhs: MatrixView,
        accumulate: bool,
        scale: f32,
    ) -> bool {
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        let (Some((trans_a, lda)), Some((trans_b, ldb))) = (operand(&lhs), operand(&rhs)) else {
            return false;
        };
        let (Ok(m), Ok(n), Ok(k)) = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k))
        else {
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
            (self.sgemm)(
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
    fn only_pre_avx2_kernel_sets_count_as_generic_and_only_on_avx2_cpus() {
        for core in ["Prescott", "Core2", "NEHALEM", "Sandybridge", " prescott "] {
            assert!(is_generic_core(core, true), "{core}");
            assert!(
                !is_generic_core(core, false),
                "{core} on a CPU without AVX2"
            );
        }
        for core in [
            "Haswell",
            "SkylakeX",
            "Cooperlake",
            "Zen",
            "SapphireRapids",
            "Neoverse",
        ] {
            assert!(!is_generic_core(core, true), "{core}");
        }
    }

    #[test]
    fn products_through_the_library_match_the_triple_loop() {
        let required = std::env::var("BURN_LORA_TEST_BLAS").is_ok_and(|v| v == "required");
        // Loaded directly: the arithmetic is checked whichever kernels the library runs
        // (`loaded` may pass over a library with generic kernels).
        let Some(blas) = DEFAULT_LIBRARIES.iter().find_map(|name| load(name).ok()) else {
            assert!(
                !required,
                "BURN_LORA_TEST_BLAS=required but no CBLAS library loaded"
            );
            eprintln!("no CBLAS library loaded: nothing to compare");
            return;
        };
        eprintln!("CBLAS: {}", blas.label);
        let (m, k, n) = (70, 90, 50);
        let a = values(m * k + 7, 1);
        let b = values(k * n, 2);
        let base = values(m * n, 3);
        let (lhs, rhs_both) = offset_and_transposed_views(&a, &b, (m, k, n));
        for rhs in rhs_both {
            let product = naive(lhs, rhs, None);
            let mut out = crate::matmul::uninit(m * n);
            assert!(blas.product_into(&mut out, lhs, rhs, false, 0.5));
            // SAFETY: a product that went through writes every element.
            let out = unsafe { crate::matmul::assume_init(out) };
            let half: Vec<f32> = product.iter().map(|p| 0.5 * p).collect();
            close(&out, &half);
            // Accumulating onto the values already there.
            let mut acc: Vec<MaybeUninit<f32>> =
                base.iter().copied().map(MaybeUninit::new).collect();
            assert!(blas.product_into(&mut acc, lhs, rhs, true, 2.0));
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
        assert!(!blas.product_into(&mut out, strided, short, false, 1.0));
    }
}
