//! Turning a `--device` string into a burn [`Device`], in one place.
//!
//! burn 0.22 picks the backend from the device value, so one code path runs on every
//! backend compiled in. `Device::default()` changes with cargo feature unification
//! (wgpu wins over flex), so examples, tests and benches always name their device.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Backend names accepted by [`parse_device`], for help texts.
pub const DEVICE_NAMES: &str = "flex | ndarray | wgpu | vulkan | metal | cuda[:N]";

/// Parse `flex | ndarray | wgpu | vulkan | metal | cuda[:N]` into a burn device.
///
/// Returns [`Error::Device`] for an unknown name or for a backend whose cargo feature
/// is not enabled in this build.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec_trimmed = spec.trim().to_ascii_lowercase();
    let (name, index) = match spec_trimmed.split_once(':') {
        Some((name, index)) => (name, Some(index)),
        None => (spec_trimmed.as_str(), None),
    };
    let err = |reason: String| Error::Device {
        device: spec.to_string(),
        reason,
    };
    if index.is_some() && name != "cuda" {
        return Err(err(format!("only cuda takes an index ({DEVICE_NAMES})")));
    }
    let not_compiled = |feature: &str| {
        err(format!(
            "backend not compiled in: rebuild with `--features {feature}`"
        ))
    };
    match name {
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(not_compiled("flex"));
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            return Err(not_compiled("ndarray"));
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "wgpu"))]
            return Err(not_compiled("wgpu"));
        }
        "vulkan" => {
            #[cfg(feature = "vulkan")]
            return Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "vulkan"))]
            return Err(not_compiled("vulkan"));
        }
        "metal" => {
            #[cfg(feature = "metal")]
            return Ok(Device::metal(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "metal"))]
            return Err(not_compiled("metal"));
        }
        "cuda" => {
            let index: usize = match index {
                None => 0,
                Some(i) => i
                    .parse()
                    .map_err(|_| err(format!("cuda index `{i}` is not a number")))?,
            };
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index));
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(not_compiled("cuda"))
            }
        }
        other => Err(err(format!(
            "unknown backend `{other}`; expected {DEVICE_NAMES}"
        ))),
    }
}

/// Every backend compiled into this build, by `--device` name, in the order
/// `flex, ndarray, wgpu, vulkan, metal, cuda`. Compiled is not the same as usable: a
/// GPU backend also needs a driver and a device; [`probe_device`] checks that.
pub fn compiled_devices() -> Vec<&'static str> {
    [
        ("flex", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .into_iter()
    .filter_map(|(name, compiled)| compiled.then_some(name))
    .collect()
}

/// Parse `spec` and check that the device really runs: a small tensor goes to it and
/// back. burn's GPU runtimes panic when no adapter or driver exists (wgpu on a machine
/// without a Vulkan/Metal driver, CUDA without `libcuda`); the probe turns that into
/// [`Error::Device`], so a caller can fall back instead of crashing mid-run.
pub fn probe_device(spec: &str) -> Result<Device> {
    let device = parse_device(spec)?;
    let probe = device.clone();
    let outcome = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0, 3.0], &probe);
        (t * 2.0).into_data().convert::<f32>().try_to_vec::<f32>()
    });
    let reason = match outcome {
        Ok(Ok(values)) if values == [2.0, 4.0, 6.0] => return Ok(device),
        Ok(Ok(values)) => format!("the probe computed {values:?} for [2, 4, 6]"),
        Ok(Err(e)) => format!("the probe's result could not be read: {e:?}"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            format!("not usable here (no driver or device?): {message}")
        }
    };
    Err(Error::Device {
        device: spec.to_string(),
        reason,
    })
}

/// The compiled devices that pass [`probe_device`] on this machine.
pub fn available_devices() -> Vec<(&'static str, Device)> {
    compiled_devices()
        .into_iter()
        .filter_map(|name| probe_device(name).ok().map(|device| (name, device)))
        .collect()
}

/// A short name of `device` for a run's record: `flex` for the CPU backend, else burn's own
/// description of the device.
pub fn device_name(device: &Device) -> String {
    if crate::nn::is_flex(device) {
        "flex".into()
    } else {
        format!("{device:?}")
    }
}

/// What runs the large f32 matrix products (a model's linears) on the CPU backend,
/// burn-flex, in this process, for a run's report: `system BLAS <library>` when the `blas`
/// feature found one (e.g. `system BLAS libopenblas.so.0 (Haswell kernels)`), else the
/// built-in `gemm` kernel with the SIMD kernel set it picks on this CPU at run time —
/// `built-in gemm kernel (AVX-512)` where the CPU has AVX-512 (`avx512f`), `(AVX2+FMA)` on
/// other x86-64 CPUs with FMA, `(NEON)` on aarch64, `(generic)` otherwise. The first call
/// loads the system BLAS, as the first large product would.
pub fn cpu_product_kernel() -> &'static str {
    burn_lora_kernels::matmul::product_kernel()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_and_bad_index() {
        assert!(matches!(parse_device("tpu"), Err(Error::Device { .. })));
        assert!(matches!(parse_device("cuda:x"), Err(Error::Device { .. })));
        assert!(matches!(parse_device("flex:1"), Err(Error::Device { .. })));
    }

    #[cfg(feature = "flex")]
    #[test]
    fn parses_and_probes_flex() {
        assert!(parse_device(" Flex ").is_ok());
        assert!(probe_device("flex").is_ok());
        assert_eq!(compiled_devices()[0], "flex");
    }

    #[test]
    fn compiled_devices_follow_the_features() {
        let names = compiled_devices();
        assert_eq!(names.contains(&"wgpu"), cfg!(feature = "wgpu"));
        assert_eq!(names.contains(&"cuda"), cfg!(feature = "cuda"));
        assert_eq!(names.contains(&"metal"), cfg!(feature = "metal"));
        for name in names {
            assert!(
                parse_device(name).is_ok(),
                "{name} is compiled but does not parse"
            );
        }
    }

    #[test]
    fn cpu_product_kernel_names_blas_or_gemm() {
        let kernel = cpu_product_kernel();
        match crate::nn::blas_library() {
            // Notes on a library passed over may follow the name.
            Some(library) => assert!(kernel.starts_with(&format!("system BLAS {library}"))),
            None => assert!(kernel.starts_with("built-in gemm kernel ("), "{kernel}"),
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_not_compiled_is_an_error() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
