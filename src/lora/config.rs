//! `LoraConfig`: PEFT's LoRA configuration, field for field, with PEFT's target matching.
//!
//! A PEFT `adapter_config.json` deserialises into [`LoraConfig`] and serialises back with
//! the same field names; fields this crate does not interpret are kept in
//! [`LoraConfig::extra`] so a round trip loses nothing.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Names of classification/LM output heads that `"all-linear"` never targets (as PEFT).
pub const OUTPUT_HEAD_NAMES: [&str; 3] = ["lm_head", "classifier", "score"];

/// PEFT's `target_modules` / `exclude_modules`: a list of names, or one regex string.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModuleSelector {
    /// Each entry matches a module path exactly or as a dotted suffix (`"query"` matches
    /// `encoder.layer.0.attention.self.query`).
    Names(Vec<String>),
    /// A regex that must match the whole module path (Python's `re.fullmatch`).
    Regex(String),
    /// PEFT's `"all-linear"` shorthand: every linear but the output head.
    AllLinear,
}

impl ModuleSelector {
    /// A selector from a list of names.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        ModuleSelector::Names(names.iter().map(|s| s.as_ref().to_string()).collect())
    }

    /// The names of a list that match none of the module `paths` (a misspelt target);
    /// none for a regex or `all-linear`.
    pub fn unmatched_names<'a>(&'a self, paths: &[String]) -> Vec<&'a str> {
        match self {
            ModuleSelector::Names(names) => names
                .iter()
                .filter(|n| !paths.iter().any(|p| name_matches(n, p)))
                .map(String::as_str)
                .collect(),
            ModuleSelector::Regex(_) | ModuleSelector::AllLinear => Vec::new(),
        }
    }
}

/// PEFT's list match: `name` is the whole module path or a dotted suffix of it.
fn name_matches(name: &str, path: &str) -> bool {
    path == name
        || path
            .strip_suffix(name)
            .is_some_and(|rest| rest.ends_with('.'))
}

impl Serialize for ModuleSelector {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ModuleSelector::Names(v) => v.serialize(s),
            ModuleSelector::Regex(r) => r.serialize(s),
            ModuleSelector::AllLinear => "all-linear".serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModuleSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::List(v) => ModuleSelector::Names(v),
            Raw::One(s) if s == "all-linear" => ModuleSelector::AllLinear,
            Raw::One(s) => ModuleSelector::Regex(s),
        })
    }
}

/// PEFT's `init_lora_weights`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InitLoraWeights {
    /// `true`: A kaiming-uniform (a = √5), B = 0 — the adapter starts as a no-op.
    Default,
    /// `"gaussian"`: A ~ N(0, σ = 1/r) as PEFT does, B = 0.
    Gaussian,
    /// `false`: A and B both get `nn.Linear`'s default init, so B ≠ 0 (for tests only).
    Random,
    /// `"pissa"`: A and B from the weight's top-r singular triplets (exact SVD); the base
    /// keeps the residual `W − s·BA`, so the model starts unchanged. As in PEFT, disabling
    /// such an adapter leaves the residual base, not the original one.
    Pissa,
    /// `"pissa_niter_K"`: PiSSA from a randomized SVD with K power iterations (fast on
    /// large weights; torch's `svd_lowrank` algorithm, with this crate's random numbers).
    PissaNiter(usize),
    /// `"olora"`: `A = R[:r]`, `B = Q[:, :r]` from the weight's QR; the base keeps `W − s·BA`.
    Olora,
    /// Any other PEFT method name (`"loftq"`, `"corda"`, ...): kept for round trips,
    /// rejected by [`LoraConfig::validate`].
    Other(String),
}

impl InitLoraWeights {
    /// Whether the factors come from the frozen weight, which then keeps the residual
    /// (PiSSA, OLoRA): such adapters are saved converted to plain LoRA (see
    /// [`save_adapter`](crate::adapter::save_adapter)).
    pub fn takes_base(&self) -> bool {
        matches!(
            self,
            InitLoraWeights::Pissa | InitLoraWeights::PissaNiter(_) | InitLoraWeights::Olora
        )
    }
}

impl std::str::FromStr for InitLoraWeights {
    type Err = Error;

    /// The `--init` spellings: `default` (PEFT's `true`), `gaussian`, `pissa`,
    /// `pissa_niter_K`, `olora`.
    fn from_str(s: &str) -> Result<Self> {
        let init = match s {
            "default" | "true" => InitLoraWeights::Default,
            other => serde_json::from_value(serde_json::Value::String(other.into()))?,
        };
        match init {
            InitLoraWeights::Other(_) | InitLoraWeights::Random => Err(Error::InvalidSetting {
                name: "init",
                message: format!(
                    "`{s}` (expected default, gaussian, pissa, pissa_niter_K or olora)"
                ),
            }),
            init => Ok(init),
        }
    }
}

impl Serialize for InitLoraWeights {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            InitLoraWeights::Default => true.serialize(s),
            InitLoraWeights::Random => false.serialize(s),
            InitLoraWeights::Gaussian => "gaussian".serialize(s),
            InitLoraWeights::Pissa => "pissa".serialize(s),
            InitLoraWeights::PissaNiter(k) => format!("pissa_niter_{k}").serialize(s),
            InitLoraWeights::Olora => "olora".serialize(s),
            InitLoraWeights::Other(name) => name.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for InitLoraWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Flag(true) => InitLoraWeights::Default,
            Raw::Flag(false) => InitLoraWeights::Random,
            Raw::Name(n) if n == "gaussian" => InitLoraWeights::Gaussian,
            Raw::Name(n) if n == "pissa" => InitLoraWeights::Pissa,
            // PEFT compares OLoRA's name case-insensitively.
            Raw::Name(n) if n.eq_ignore_ascii_case("olora") => InitLoraWeights::Olora,
            Raw::Name(n) => match n.strip_prefix("pissa_niter_").map(str::parse) {
                Some(Ok(k)) => InitLoraWeights::PissaNiter(k),
                _ => InitLoraWeights::Other(n),
            },
        })
    }
}

/// PEFT's `layers_to_transform`: one layer index or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerIndices {
    /// A single layer index.
    One(usize),
    /// Several layer indices.
    Many(Vec<usize>),
}

impl LayerIndices {
    fn contains(&self, index: usize) -> bool {
        match self {
            LayerIndices::One(i) => *i == index,
            LayerIndices::Many(v) => v.contains(&index),
        }
    }
    fn is_empty(&self) -> bool {
        matches!(self, LayerIndices::Many(v) if v.is_empty())
    }
}

/// PEFT's `layers_pattern`: one name or a list (the module list holding the layers,
/// e.g. `"layer"` for BERT, `"layers"` for Llama).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayersPattern {
    /// One pattern.
    One(String),
    /// Several patterns, tried in order.
    Many(Vec<String>),
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_init() -> InitLoraWeights {
    InitLoraWeights::Default
}

/// PEFT's `bias`: which biases train beside the adapters. Only `none` is supported here;
/// the others are refused by [`LoraConfig::validate`], an unknown value when the config is
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraBias {
    /// No bias trains (PEFT's default).
    #[default]
    None,
    /// Every bias of the model trains.
    All,
    /// The biases of adapted layers train.
    LoraOnly,
}

fn default_bias() -> LoraBias {
    LoraBias::None
}
fn default_peft_type() -> String {
    "LORA".to_string()
}

/// Writes integral floats as JSON integers, as Python writes `lora_alpha=16`.
fn serialize_number<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

fn serialize_number_map<S: Serializer>(
    m: &BTreeMap<String, f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        let value = if v.fract() == 0.0 && v.abs() < 9.0e15 {
            serde_json::Value::from(*v as i64)
        } else {
            serde_json::Value::from(*v)
        };
        map.serialize_entry(k, &value)?;
    }
    map.end()
}

/// The LoRA configuration, with PEFT's field names and defaults
/// (PEFT 0.21 `LoraConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `"LORA"` for this config.
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// PEFT task type (`"SEQ_CLS"`, `"CAUSAL_LM"`, `"FEATURE_EXTRACTION"`, ...).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// LoRA rank.
    #[serde(default = "default_r")]
    pub r: usize,
    /// LoRA alpha; scaling is `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    #[serde(default = "default_alpha", serialize_with = "serialize_number")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input, in `[0, 1)`.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which linears get an adapter; `None` means the model family's PEFT default.
    #[serde(default)]
    pub target_modules: Option<ModuleSelector>,
    /// Linears never adapted, matched like `target_modules`.
    #[serde(default)]
    pub exclude_modules: Option<ModuleSelector>,
    /// Rank-stabilised LoRA: scaling `alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Adapter initialisation.
    #[serde(default = "default_init")]
    pub init_lora_weights: InitLoraWeights,
    /// Which biases train: only `"none"` is supported.
    #[serde(default = "default_bias")]
    pub bias: LoraBias,
    /// Modules trained in full and saved with the adapter (e.g. a classification head).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Only adapt layers with these indices.
    #[serde(default)]
    pub layers_to_transform: Option<LayerIndices>,
    /// Name of the layer list that `layers_to_transform` indexes.
    #[serde(default)]
    pub layers_pattern: Option<LayersPattern>,
    /// Per-module rank overrides: regex key matched against the end of the module path.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, matched like `rank_pattern`.
    #[serde(default, serialize_with = "serialize_number_map")]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// PEFT's `fan_in_fan_out` (GPT-2 `Conv1D` weights); must be `false` here.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// DoRA (weight-decomposed LoRA): a magnitude vector per adapted linear, PEFT's
    /// `lora_magnitude_vector`.
    #[serde(default)]
    pub use_dora: bool,
    /// PEFT's inference flag, kept for round trips.
    #[serde(default)]
    pub inference_mode: bool,
    /// Every other field of the JSON file, kept verbatim for round trips.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            peft_type: default_peft_type(),
            task_type: None,
            base_model_name_or_path: None,
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: 0.0,
            target_modules: None,
            exclude_modules: None,
            use_rslora: false,
            init_lora_weights: InitLoraWeights::Default,
            bias: default_bias(),
            modules_to_save: None,
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            fan_in_fan_out: false,
            use_dora: false,
            inference_mode: false,
            extra: serde_json::Map::new(),
        }
    }
}

/// Rank, alpha and scaling resolved for one module.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModuleLoraParams {
    /// Rank for this module.
    pub r: usize,
    /// Alpha for this module.
    pub alpha: f64,
    /// The scaling applied to the adapter output.
    pub scaling: f64,
    /// DoRA: a trained magnitude per output row (PEFT's `use_dora`).
    pub dora: bool,
}

fn compile_full(field: &'static str, pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| Error::InvalidRegex {
        field,
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

fn compile_suffix(field: &'static str, pattern: &str) -> Result<Regex> {
    // PEFT's `get_pattern_key`: `re.match(rf"(.*\.)?({key})$", module_path)`.
    Regex::new(&format!(r"^(?:.*\.)?(?:{pattern})$")).map_err(|e| Error::InvalidRegex {
        field,
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

impl LoraConfig {
    /// A config with rank, alpha and a list of target names; everything else PEFT's default.
    pub fn new<S: AsRef<str>>(r: usize, lora_alpha: f64, targets: &[S]) -> Self {
        LoraConfig {
            r,
            lora_alpha,
            target_modules: Some(ModuleSelector::names(targets)),
            ..Default::default()
        }
    }

    /// Read an `adapter_config.json`.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: LoraConfig = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check every field this crate interprets; returns the first problem as a specific error.
    pub fn validate(&self) -> Result<()> {
        if self.peft_type != "LORA" {
            return Err(Error::Unsupported {
                what: "peft_type",
                detail: format!("`{}` (only LORA)", self.peft_type),
            });
        }
        check_rank("<config>", self.r)?;
        check_alpha("<config>", self.lora_alpha)?;
        if !self.lora_dropout.is_finite() || !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::InvalidDropout(self.lora_dropout));
        }
        if self.bias != LoraBias::None {
            return Err(Error::Unsupported {
                what: "bias",
                detail: format!("`{:?}` (only \"none\")", self.bias),
            });
        }
        if let InitLoraWeights::Other(name) = &self.init_lora_weights {
            return Err(Error::Unsupported {
                what: "init_lora_weights",
                detail: format!(
                    "`{name}` (supported: true, false, \"gaussian\", \"pissa\", \"pissa_niter_K\", \"olora\")"
                ),
            });
        }
        // PEFT's `lora_bias` (a trainable bias on B) has no counterpart here; silently
        // dropping it would change every output.
        if self
            .extra
            .get("lora_bias")
            .is_some_and(|v| v != &serde_json::Value::Bool(false))
        {
            return Err(Error::Unsupported {
                what: "lora_bias",
                detail: format!("`{}` (only false)", self.extra["lora_bias"]),
            });
        }
        if self.fan_in_fan_out {
            return Err(Error::Unsupported {
                what: "fan_in_fan_out",
                detail: "Conv1D-style weights are not supported".into(),
            });
        }
        for (field, selector) in [
            ("target_modules", &self.target_modules),
            ("exclude_modules", &self.exclude_modules),
        ] {
            if let Some(ModuleSelector::Regex(p)) = selector {
                compile_full(field, p)?;
            }
        }
        for (key, &r) in &self.rank_pattern {
            compile_suffix("rank_pattern", key)?;
            check_rank(key, r)?;
        }
        for (key, &alpha) in &self.alpha_pattern {
            compile_suffix("alpha_pattern", key)?;
            check_alpha(key, alpha)?;
        }
        if let Some(LayersPattern::One(p)) = &self.layers_pattern {
            compile_full("layers_pattern", p)?;
        }
        if let Some(LayersPattern::Many(ps)) = &self.layers_pattern {
            for p in ps {
                compile_full("layers_pattern", p)?;
            }
        }
        Ok(())
    }

    /// The effective target selector: the config's own, or `default_targets` (the model
    /// family's PEFT default) when it has none.
    pub fn targets_or<'a>(&'a self, default_targets: &'a ModuleSelector) -> &'a ModuleSelector {
        self.target_modules.as_ref().unwrap_or(default_targets)
    }

    /// Does the module at `path` get an adapter? Same rules as PEFT 0.21's
    /// `check_target_module_exists`: `exclude_modules` and `modules_to_save` win; a regex
    /// string must match the whole path; a list matches exactly or as a dotted suffix, then
    /// `layers_to_transform` filters by the first numbered path segment.
    pub fn is_target(&self, path: &str, default_targets: &ModuleSelector) -> Result<bool> {
        if let Some(exclude) = &self.exclude_modules
            && selector_matches("exclude_modules", exclude, path)?
        {
            return Ok(false);
        }
        // An adapter never goes inside a module that is trained in full.
        for module in self.modules_to_save.iter().flatten() {
            let re = Regex::new(&format!(r"^(?:|.*\.)(?:{module})(?:$|\..*)")).map_err(|e| {
                Error::InvalidRegex {
                    field: "modules_to_save",
                    pattern: module.clone(),
                    message: e.to_string(),
                }
            })?;
            if re.is_match(path) {
                return Ok(false);
            }
        }
        let targets = self.targets_or(default_targets);
        match targets {
            ModuleSelector::Regex(_) | ModuleSelector::AllLinear => {
                selector_matches("target_modules", targets, path)
            }
            ModuleSelector::Names(names) => {
                if names.iter().any(|n| n == path) {
                    return Ok(true);
                }
                if !names.iter().any(|n| path.ends_with(&format!(".{n}"))) {
                    return Ok(false);
                }
                self.layer_filter(path)
            }
        }
    }

    fn layer_filter(&self, path: &str) -> Result<bool> {
        let indices = match &self.layers_to_transform {
            Some(ix) if !ix.is_empty() => ix,
            _ => return Ok(true),
        };
        let patterns: Vec<String> = match &self.layers_pattern {
            Some(LayersPattern::One(p)) if !p.is_empty() => vec![p.clone()],
            Some(LayersPattern::Many(ps)) if !ps.is_empty() => ps.clone(),
            _ => Vec::new(),
        };
        // Lazy `.*?` takes the first numbered segment (the layer), not a nested one
        // such as an expert index.
        let regexes: Vec<(String, String)> = if patterns.is_empty() {
            vec![(r"^.*?\.[^.]*\.(\d+)\.".to_string(), String::new())]
        } else {
            patterns
                .into_iter()
                .map(|p| (format!(r"^(?:|.*?\.)(?:{p})\.(\d+)\."), p))
                .collect()
        };
        for (regex, pattern) in regexes {
            let re = Regex::new(&regex).map_err(|e| Error::InvalidRegex {
                field: "layers_pattern",
                pattern,
                message: e.to_string(),
            })?;
            // The layer index is the regex's last group: a pattern may hold groups of its
            // own (`(h)?layers`), which must not shift it or, unmatched, be read.
            if let Some(c) = re.captures(path)
                && let Some(index) = c.get(c.len() - 1)
            {
                let index: usize = index.as_str().parse().unwrap_or(usize::MAX);
                return Ok(indices.contains(index));
            }
        }
        Ok(false)
    }

    /// The config of a PiSSA/OLoRA adapter once converted to plain LoRA for saving (PEFT's
    /// `save_pretrained(path_initial_model_for_weight_conversion=…)`): every rank doubled,
    /// every alpha doubled (×√2 under rsLoRA, which PEFT refuses with patterns: the
    /// scaling `α/√r` is kept all the same), `init_lora_weights` back to `true`.
    pub fn converted_to_plain(&self) -> LoraConfig {
        let alpha_factor = if self.use_rslora {
            std::f64::consts::SQRT_2
        } else {
            2.0
        };
        let mut config = self.clone();
        config.r = self.r.saturating_mul(2);
        config.lora_alpha = self.lora_alpha * alpha_factor;
        for r in config.rank_pattern.values_mut() {
            *r = r.saturating_mul(2);
        }
        for alpha in config.alpha_pattern.values_mut() {
            *alpha *= alpha_factor;
        }
        config.init_lora_weights = InitLoraWeights::Default;
        config
    }

    /// Rank, alpha and scaling for the module at `path`, honouring `rank_pattern` and
    /// `alpha_pattern` (PEFT's `get_pattern_key`: the first key, in sorted order as PEFT
    /// reads them back from its sorted JSON, matching the end of the path).
    pub fn params_for(&self, path: &str) -> Result<ModuleLoraParams> {
        let mut r = self.r;
        for (key, &value) in &self.rank_pattern {
            if compile_suffix("rank_pattern", key)?.is_match(path) {
                r = value;
                break;
            }
        }
        let mut alpha = self.lora_alpha;
        for (key, &value) in &self.alpha_pattern {
            if compile_suffix("alpha_pattern", key)?.is_match(path) {
                alpha = value;
                break;
            }
        }
        check_rank(path, r)?;
        check_alpha(path, alpha)?;
        Ok(ModuleLoraParams {
            r,
            alpha,
            scaling: scaling(alpha, r, self.use_rslora),
            dora: self.use_dora,
        })
    }
}

/// PEFT's scaling: `alpha / r`, or `alpha / sqrt(r)` for rsLoRA.
pub fn scaling(alpha: f64, r: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

fn check_rank(module: &str, r: usize) -> Result<()> {
    if r == 0 {
        return Err(Error::InvalidRank {
            module: module.to_string(),
            rank: r,
        });
    }
    Ok(())
}

fn check_alpha(module: &str, alpha: f64) -> Result<()> {
    if !alpha.is_finite() || alpha <= 0.0 {
        return Err(Error::InvalidAlpha {
            module: module.to_string(),
            alpha,
        });
    }
    Ok(())
}

fn selector_matches(field: &'static str, selector: &ModuleSelector, path: &str) -> Result<bool> {
    Ok(match selector {
        ModuleSelector::Regex(p) => compile_full(field, p)?.is_match(path),
        ModuleSelector::Names(names) => names.iter().any(|n| name_matches(n, path)),
        ModuleSelector::AllLinear => {
            let leaf = path.rsplit('.').next().unwrap_or(path);
            !OUTPUT_HEAD_NAMES.contains(&leaf)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> ModuleSelector {
        ModuleSelector::names(v)
    }

    #[test]
    fn list_matches_exact_and_dotted_suffix_only() {
        let c = LoraConfig::new(8, 16.0, &["query", "value"]);
        let d = names(&[]);
        assert!(
            c.is_target("encoder.layer.0.attention.self.query", &d)
                .unwrap()
        );
        assert!(c.is_target("query", &d).unwrap());
        // `key` is not a suffix match of `query`, nor is `xquery`.
        assert!(
            !c.is_target("encoder.layer.0.attention.self.key", &d)
                .unwrap()
        );
        assert!(
            !c.is_target("encoder.layer.0.attention.self.xquery", &d)
                .unwrap()
        );
    }

    #[test]
    fn regex_is_full_match() {
        let mut c = LoraConfig {
            target_modules: Some(ModuleSelector::Regex(r".*\.(query|key)".into())),
            ..Default::default()
        };
        let d = names(&[]);
        assert!(
            c.is_target("encoder.layer.1.attention.self.key", &d)
                .unwrap()
        );
        assert!(
            !c.is_target("encoder.layer.1.attention.self.key.extra", &d)
                .unwrap()
        );
        c.target_modules = Some(ModuleSelector::Regex("query".into()));
        assert!(
            !c.is_target("encoder.layer.1.attention.self.query", &d)
                .unwrap()
        );
    }

    #[test]
    fn layers_to_transform_and_exclude() {
        let mut c = LoraConfig::new(4, 8.0, &["q_proj"]);
        c.layers_to_transform = Some(LayerIndices::Many(vec![1]));
        let d = names(&[]);
        assert!(c.is_target("model.layers.1.self_attn.q_proj", &d).unwrap());
        assert!(!c.is_target("model.layers.0.self_attn.q_proj", &d).unwrap());
        c.layers_to_transform = None;
        c.exclude_modules = Some(names(&["layers.0.self_attn.q_proj"]));
        assert!(!c.is_target("model.layers.0.self_attn.q_proj", &d).unwrap());
        assert!(c.is_target("model.layers.2.self_attn.q_proj", &d).unwrap());
        // A layers_pattern with groups of its own: the layer index is still the number
        // after it (an unmatched optional group was once read as the index, and panicked).
        c.exclude_modules = None;
        c.layers_to_transform = Some(LayerIndices::Many(vec![1]));
        c.layers_pattern = Some(LayersPattern::One("(h)?layers".into()));
        assert!(c.is_target("model.layers.1.self_attn.q_proj", &d).unwrap());
        assert!(!c.is_target("model.layers.0.self_attn.q_proj", &d).unwrap());
        assert!(c.is_target("model.hlayers.1.self_attn.q_proj", &d).unwrap());
    }

    #[test]
    fn all_linear_skips_heads_and_patterns_override() {
        let mut c = LoraConfig {
            target_modules: Some(ModuleSelector::AllLinear),
            ..Default::default()
        };
        let d = names(&[]);
        assert!(c.is_target("encoder.layer.0.output.dense", &d).unwrap());
        assert!(!c.is_target("classifier", &d).unwrap());
        c.rank_pattern.insert(r"layer\.0\.output\.dense".into(), 2);
        c.alpha_pattern.insert("dense".into(), 4.0);
        let p = c.params_for("encoder.layer.0.output.dense").unwrap();
        assert_eq!((p.r, p.alpha, p.scaling), (2, 4.0, 2.0));
        let q = c.params_for("encoder.layer.1.output.dense").unwrap();
        assert_eq!((q.r, q.alpha), (8, 4.0));
        c.use_rslora = true;
        let q = c
            .params_for("encoder.layer.1.attention.self.query")
            .unwrap();
        assert!((q.scaling - 8.0 / 8f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn defaults_apply_when_no_targets() {
        let c = LoraConfig::default();
        let d = names(&["query", "value"]);
        assert!(c.is_target("a.value", &d).unwrap());
        assert!(!c.is_target("a.key", &d).unwrap());
    }
}
