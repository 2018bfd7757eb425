//! Putting adapters on a model's linears by Hugging Face module path, as PEFT's
//! `inject_adapter` does.
//!
//! A model lists its wrappable linears through [`LoraTargets`]; [`inject_adapters`]
//! matches each path against a [`LoraConfig`] and attaches an adapter where it matches.

use std::collections::HashMap;

use burn::tensor::Device;
use burn_lora_kernels::decompose::Factors;

use super::config::{LoraConfig, ModuleSelector};
use super::decompose::run_jobs;
use super::linear::LoraLinear;
use crate::error::{Error, Result};

/// Callback receiving each linear with its full module path.
pub type LinearVisitor<'a> = dyn FnMut(&str, &mut LoraLinear) -> Result<()> + 'a;

/// Callback receiving each linear read-only with its full module path.
pub type LinearReader<'a> = dyn FnMut(&str, &LoraLinear) -> Result<()> + 'a;

/// A module tree whose linears can be adapted by name.
///
/// `visit_linears` calls `visitor` once per linear with its Hugging Face module path
/// (e.g. `encoder.layer.3.attention.self.query`), the same names PEFT matches.
pub trait LoraTargets {
    /// Visit every linear under `prefix` (empty for the root).
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()>;

    /// Visit every linear under `prefix` read-only, in the same order with the same paths
    /// (reports, saving, parameter lists: nothing to clone or borrow mutably).
    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()>;

    /// The family's PEFT default `target_modules` (e.g. `["query", "value"]` for BERT).
    fn default_targets(&self) -> ModuleSelector;
}

/// Join a module path prefix and a child name with a dot.
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What [`inject_adapters`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InjectionReport {
    /// Module paths that received an adapter, in visiting order.
    pub adapted: Vec<String>,
    /// Total linears visited.
    pub linears_seen: usize,
    /// Trainable adapter parameters added.
    pub trainable_params: usize,
    /// Names of a target list that matched no module (PEFT adapts the others without a
    /// word; the finetune job refuses them as misspelt).
    pub unmatched_targets: Vec<String>,
    /// The distinct last components of every linear's path (`query`, `dense`, `q_proj`,
    /// ...), to say what a target list could name.
    pub linear_names: Vec<String>,
}

/// Take `model`, inject adapters as [`inject_adapters`] does, and hand it back with the
/// report (what each backbone's `from_pretrained` does after loading).
pub fn with_adapters<M: LoraTargets>(
    mut model: M,
    config: &LoraConfig,
    device: &Device,
) -> Result<(M, InjectionReport)> {
    let report = inject_adapters(&mut model, config, device)?;
    Ok((model, report))
}

/// Attach adapters to every linear of `model` that `config` targets.
///
/// The config is validated first. A target list that matches nothing is an error
/// ([`Error::NoTargetMatched`]), as in PEFT.
pub fn inject_adapters<M: LoraTargets>(
    model: &mut M,
    config: &LoraConfig,
    device: &Device,
) -> Result<InjectionReport> {
    config.validate()?;
    let default_targets = model.default_targets();
    let mut precomputed = if config.init_lora_weights.takes_base() {
        factors_from_bases(model, config, &default_targets, device)?
    } else {
        HashMap::new()
    };
    let mut report = InjectionReport::default();
    let mut all_paths = Vec::new();
    model.visit_linears("", &mut |path, linear| {
        report.linears_seen += 1;
        all_paths.push(path.to_string());
        if config.is_target(path, &default_targets)? {
            let params = config.params_for(path)?;
            linear
                .attach_adapter_with(
                    params,
                    config.lora_dropout,
                    &config.init_lora_weights,
                    precomputed.remove(path),
                    device,
                )
                .map_err(|e| match e {
                    // Name the module the rank does not fit.
                    Error::RankTooLarge { rank, max, .. } => Error::RankTooLarge {
                        module: path.to_string(),
                        rank,
                        max,
                    },
                    other => other,
                })?;
            report.trainable_params += linear.trainable_params();
            report.adapted.push(path.to_string());
        }
        Ok(())
    })?;
    report.unmatched_targets = config
        .targets_or(&default_targets)
        .unmatched_names(&all_paths)
        .into_iter()
        .map(String::from)
        .collect();
    for path in &all_paths {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        if !report.linear_names.iter().any(|n| n == leaf) {
            report.linear_names.push(leaf.to_string());
        }
    }
    if report.adapted.is_empty() {
        let shown: Vec<_> = all_paths.iter().take(8).cloned().collect();
        return Err(Error::NoTargetMatched {
            targets: serde_json::to_string(config.targets_or(&default_targets))?,
            available: format!(
                "{}{}",
                shown.join(", "),
                if all_paths.len() > 8 { ", ..." } else { "" }
            ),
        });
    }
    Ok(report)
}

/// PiSSA/OLoRA: the factors of every layer `config` targets, the decompositions run in
/// parallel a few layers at a time (each holds a host copy of its weight, so not the whole
/// model at once). The random sketches of `pissa_niter_K` are drawn in visiting order, as
/// attaching layer by layer would draw them.
fn factors_from_bases<M: LoraTargets>(
    model: &mut M,
    config: &LoraConfig,
    default_targets: &ModuleSelector,
    device: &Device,
) -> Result<HashMap<String, Factors>> {
    let mut targets = Vec::new();
    model.read_linears("", &mut |path, _| {
        if config.is_target(path, default_targets)? {
            targets.push(path.to_string());
        }
        Ok(())
    })?;
    let group = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut factors = HashMap::with_capacity(targets.len());
    for paths in targets.chunks(group) {
        let mut jobs = Vec::with_capacity(paths.len());
        model.visit_linears("", &mut |path, linear| {
            if paths.iter().any(|p| p == path) {
                let params = config.params_for(path)?;
                jobs.push(linear.factor_job(&config.init_lora_weights, &params, device)?);
            }
            Ok(())
        })?;
        let computed = run_jobs(&config.init_lora_weights, jobs)?;
        factors.extend(paths.iter().cloned().zip(computed));
    }
    Ok(factors)
}

/// Apply `f` to every linear that carries an adapter (merge all, disable all, ...).
pub fn for_each_adapted<M: LoraTargets>(
    model: &mut M,
    mut f: impl FnMut(&str, &mut LoraLinear) -> Result<()>,
) -> Result<()> {
    model.visit_linears("", &mut |path, linear| {
        if linear.adapter.is_some() {
            f(path, linear)?;
        }
        Ok(())
    })
}
