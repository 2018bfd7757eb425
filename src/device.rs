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

/// The devices compiled into this build, by name (used by tests and benches to run
/// the same checks on every backend available).
pub fn compiled_devices() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    names
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
    fn parses_flex() {
        assert!(parse_device(" Flex ").is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_not_compiled_is_an_error() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
