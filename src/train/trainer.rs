//! The ready-made [`Trainer`]: AdamW (no decay on biases), gradient accumulation,
//! global-norm clipping, best-checkpoint saving in PEFT format, and resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{EvalResult, LoopState, MessageSink, TrainConfig, TrainingLoop};
use crate::adapter::{
    AdapterContents, AdapterMeta, LoadedAdapter, load_adapter_for_training, read_adapter,
    save_adapter,
};
use crate::classify::{MultiLabelClassifier, MultiLabelLoss};
use crate::data::{Batch, EncodedSet, LabelSet};
use crate::error::{Error, Result};
use crate::io::{existing_dir, replace_dir, write_atomic};
use crate::lora::{LoraConfig, ModuleSelector};
use crate::models::Backbone;

/// Where and what the trainer checkpoints: `DIR/best` (the best validation micro-F1,
/// a PEFT adapter folder) and `DIR/last` (adapter + optimizer state + loop state, for resume).
#[derive(Debug, Clone)]
pub struct TrainerCheckpoint {
    /// Output folder.
    pub dir: PathBuf,
    /// The LoRA config to record.
    pub lora: LoraConfig,
    /// Labels.
    pub labels: LabelSet,
    /// Pooling, max length, template.
    pub meta: AdapterMeta,
    /// `base_model_name_or_path`.
    pub base_model: Option<String>,
}

const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "trainer_state.json";

#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    state: LoopState,
    /// Parameter ids by module path, so the optimizer state finds its parameters again.
    param_ids: BTreeMap<String, u64>,
    config: TrainConfig,
}

/// Sum of squared gradient entries over a module's parameters.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    squares: Vec<Tensor<1>>,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.squares.push(g.powi_scalar(2).sum());
        }
    }
}

/// Multiply every gradient by a factor.
struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `module`'s parameters.
pub fn global_grad_norm<M: Module>(grads: &GradientsParams, module: &M) -> f64 {
    let mut norm = GradNorm {
        grads,
        squares: Vec::new(),
    };
    module.visit(&mut norm);
    if norm.squares.is_empty() {
        return 0.0;
    }
    Tensor::cat(norm.squares, 0)
        .sum()
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_or(f64::NAN, |v| v[0])
        .sqrt()
}

/// Clip the global L2 norm of `grads` to `max_norm` (PyTorch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)` when above). Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(grads: &mut GradientsParams, module: &M, max_norm: f64) -> f64 {
    let total = global_grad_norm(grads, module);
    let factor = max_norm / (total + 1e-6);
    if factor < 1.0 {
        module.visit(&mut GradScale { grads, factor });
    }
    total
}

/// The ready trainer for a [`MultiLabelClassifier`].
pub struct Trainer<B: Backbone> {
    model: Option<MultiLabelClassifier<B>>,
    eval_model: Option<MultiLabelClassifier<B>>,
    optim: ModuleOptimizer,
    accum: GradientsAccumulator<MultiLabelClassifier<B>>,
    loss: MultiLabelLoss,
    config: TrainConfig,
    checkpoint: Option<TrainerCheckpoint>,
    /// The best evaluation so far (validation probabilities and global threshold).
    pub best_eval: Option<EvalResult>,
    best_model: Option<MultiLabelClassifier<B>>,
    messages: Option<MessageSink>,
    /// LoRA+'s fast group, found at the first step (parameter ids outlive optimizer steps).
    loraplus_fast: Option<ParamGroup>,
}

impl<B: Backbone> Trainer<B> {
    /// A trainer for `model` (its parameters on an autodiff device).
    pub fn new(
        model: MultiLabelClassifier<B>,
        loss: MultiLabelLoss,
        config: TrainConfig,
        checkpoint: Option<TrainerCheckpoint>,
    ) -> Self {
        let optim = Self::optimizer(&model, &config);
        Trainer {
            model: Some(model),
            eval_model: None,
            optim,
            accum: GradientsAccumulator::new(),
            loss,
            config,
            checkpoint,
            best_eval: None,
            best_model: None,
            messages: None,
            loraplus_fast: None,
        }
    }

    /// Send the loop's lines (each evaluation's score) to `sink` instead of stderr.
    pub fn with_messages(mut self, sink: MessageSink) -> Self {
        self.messages = Some(sink);
        self
    }

    fn optimizer(model: &MultiLabelClassifier<B>, config: &TrainConfig) -> ModuleOptimizer {
        // PyTorch's AdamW defaults (eps 1e-8), decoupled decay on weights only.
        let decay = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(config.weight_decay as f32);
        let no_decay = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0);
        let mut optim = decay.init();
        if let Some(bias) = &model.head.bias {
            optim = optim.with_group(ParamGroup::from_ids(vec![bias.id]), no_decay.build(), None);
        }
        optim
    }

    /// Train on `train`, evaluating on `valid`, under this trainer's own config:
    /// [`run_loop`](super::run_loop) with it. `state` continues a resumed run; its best
    /// model (read back by [`resume`](Self::resume)) is scored on `valid` first, so
    /// [`best_eval`](Self::best_eval) holds what the uninterrupted run would hold.
    pub fn fit(
        &mut self,
        train: &EncodedSet,
        valid: &EncodedSet,
        device: &Device,
        state: Option<LoopState>,
    ) -> Result<LoopState> {
        let config = self.config.clone();
        if self.best_eval.is_none()
            && !valid.is_empty()
            && let Some(best) = self.best_model.clone()
        {
            // The same evaluation path as during training (eval_step's batches).
            self.eval_model = Some(best);
            let eval = super::evaluate_loop(
                self,
                valid,
                &valid.multi_hot(),
                config.eval_batch_size,
                device,
            );
            self.eval_model = None;
            self.best_eval = Some(eval?);
        }
        super::run_loop(self, train, valid, &config, device, state)
    }

    /// The settings this trainer runs with.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &MultiLabelClassifier<B> {
        self.model.as_ref().expect("model present between steps")
    }

    /// The model (in evaluation mode) of the best validation micro-F1 so far.
    pub fn best_model(&self) -> Option<&MultiLabelClassifier<B>> {
        self.best_model.as_ref()
    }

    /// Take the trained model out.
    pub fn into_model(mut self) -> MultiLabelClassifier<B> {
        self.model.take().expect("model present between steps")
    }

    fn param_ids(&self) -> Result<BTreeMap<String, u64>> {
        let model = self.model.as_ref().expect("model present");
        let mut ids = BTreeMap::new();
        model.backbone.read_linears("", &mut |path, linear| {
            if let Some(a) = &linear.adapter {
                ids.insert(format!("{path}.lora_A"), a.a.id.val());
                ids.insert(format!("{path}.lora_B"), a.b.id.val());
                if let Some(m) = &a.magnitude {
                    ids.insert(format!("{path}.lora_magnitude_vector"), m.id.val());
                }
            }
            Ok(())
        })?;
        ids.insert("head.weight".into(), model.head.weight.id.val());
        if let Some(b) = &model.head.bias {
            ids.insert("head.bias".into(), b.id.val());
        }
        Ok(ids)
    }

    fn save_to(&mut self, dir: &Path, eval: Option<&EvalResult>) -> Result<()> {
        let ck = self
            .checkpoint
            .clone()
            .ok_or_else(|| Error::InvalidState("no checkpoint folder configured".into()))?;
        let contents = AdapterContents {
            config: &ck.lora,
            labels: &ck.labels,
            thresholds: eval.map(|e| &e.thresholds),
            meta: &ck.meta,
            base_model: ck.base_model.clone(),
        };
        let model = self.model.as_mut().expect("model present");
        save_adapter(dir, model, &contents)
    }

    fn save_last(&mut self, state: &LoopState, eval: &EvalResult) -> Result<()> {
        let Some(ck) = self.checkpoint.clone() else {
            return Ok(());
        };
        let saved = SavedState {
            state: state.clone(),
            param_ids: self.param_ids()?,
            config: self.config.clone(),
        };
        // Adapter, optimizer moments and loop state swap in together: a crash at any
        // point leaves the previous checkpoint whole.
        replace_dir(ck.dir.join("last"), |last| {
            self.save_to(last, Some(eval))?;
            let path = last.join(OPTIMIZER_FILE);
            self.optim.save(&path).map_err(|e| match e {
                // A full disk or a gone folder: an I/O error on the file, said as one.
                burn::store::RecordError::Io(message) => {
                    Error::io(&path, std::io::Error::other(message))
                }
                other => Error::InvalidState(format!("saving optimizer state: {other}")),
            })?;
            write_atomic(
                last.join(STATE_FILE),
                serde_json::to_string_pretty(&saved)?.as_bytes(),
            )
        })
    }

    /// Restore a run from `DIR/last`: adapter and head weights, parameter ids, optimizer
    /// moments and the loop state (epoch, position in the epoch, step), and the best model
    /// so far from `DIR/best`. Dropout masks need no saved state (see
    /// [`run_loop`](super::run_loop)). The model must be
    /// built as for the original run (same backbone, labels and pooling) but **without**
    /// adapters: they are injected from the saved config.
    ///
    /// `config` and `checkpoint` are this run's settings; a difference from the saved
    /// run in what shapes the training (labels, LoRA config, pooling, length, template,
    /// batch and accumulation sizes, epochs, learning-rate schedule, seed) is
    /// [`Error::ResumeMismatch`]: continuing would silently train another run.
    ///
    /// burn builds the optimizer state on its default device (`BURN_DEVICE`, else the first
    /// GPU backend compiled in) and moves it at the first step: where that default cannot
    /// start (the `wgpu` feature without a Vulkan driver), set `BURN_DEVICE` to the training
    /// backend (the finetune example does).
    pub fn resume(
        mut model: MultiLabelClassifier<B>,
        loss: MultiLabelLoss,
        config: TrainConfig,
        checkpoint: TrainerCheckpoint,
        device: &Device,
    ) -> Result<(Self, LoopState)> {
        let wanted = checkpoint.dir.join("last");
        let last = existing_dir(&wanted).ok_or_else(|| {
            Error::io(
                &wanted,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint to resume"),
            )
        })?;
        let adapter: LoadedAdapter = read_adapter(&last)?;
        let state_path = last.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let saved: SavedState = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        check_same_run(&adapter, &saved.config, &checkpoint, &config)?;
        // The best model so far, as the run held it: without it a resumed run whose later
        // evaluations never beat the saved best would have no model to report.
        let best_model = match existing_dir(checkpoint.dir.join("best")) {
            Some(best_dir) => {
                let mut best = model.clone();
                load_adapter_for_training(
                    &read_adapter(&best_dir)?,
                    &mut best,
                    &config.train_device(device),
                )?;
                Some(best.valid())
            }
            None => None,
        };
        load_adapter_for_training(&adapter, &mut model, &config.train_device(device))?;
        let ids = &saved.param_ids;
        let id_of = |key: &str| -> Result<ParamId> {
            ids.get(key)
                .map(|&v| ParamId::from(v))
                .ok_or_else(|| Error::MissingTensor {
                    name: key.to_string(),
                    path: state_path.clone(),
                })
        };
        fn rebind<const D: usize>(p: &Param<Tensor<D>>, id: ParamId) -> Param<Tensor<D>> {
            Param::initialized(id, p.val().detach().set_require_grad(true))
        }
        model.backbone.visit_linears("", &mut |path, linear| {
            if let Some(a) = linear.adapter.as_mut() {
                a.a = rebind(&a.a, id_of(&format!("{path}.lora_A"))?);
                a.b = rebind(&a.b, id_of(&format!("{path}.lora_B"))?);
                if let Some(m) = a.magnitude.as_mut() {
                    *m = rebind(m, id_of(&format!("{path}.lora_magnitude_vector"))?);
                }
            }
            Ok(())
        })?;
        model.head.weight = rebind(&model.head.weight, id_of("head.weight")?);
        if let Some(b) = model.head.bias.as_mut() {
            *b = rebind(b, id_of("head.bias")?);
        }
        let mut trainer = Trainer::new(model, loss, config, Some(checkpoint));
        trainer.best_model = best_model;
        // Read into memory: burn's file loader reads lazily, and the next checkpoint
        // replaces this folder (the file would be gone before all of it was read).
        let optim_path = last.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&optim_path).map_err(|e| Error::io(&optim_path, e))?;
        trainer.optim = trainer
            .optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| Error::Format {
                path: optim_path.clone(),
                message: e.to_string(),
            })?;
        Ok((trainer, saved.state))
    }
}

/// The parameters LoRA+ trains at `lr × ratio`: PEFT's `create_loraplus_optimizer` puts
/// every `lora_B` and every 1-D parameter (DoRA's magnitudes, biases) there; `lora_A` and
/// the head's weight keep `lr`.
fn loraplus_fast_params<B: Backbone>(model: &MultiLabelClassifier<B>) -> Result<Vec<ParamId>> {
    let mut ids = Vec::new();
    model.backbone.read_linears("", &mut |_, linear| {
        if let Some(a) = &linear.adapter {
            ids.push(a.b.id);
            ids.extend(a.magnitude.as_ref().map(|m| m.id));
        }
        Ok(())
    })?;
    ids.extend(model.head.bias.as_ref().map(|b| b.id));
    Ok(ids)
}

/// Refuse to resume a saved run under other settings (see [`Trainer::resume`]).
fn check_same_run(
    saved_adapter: &LoadedAdapter,
    saved: &TrainConfig,
    checkpoint: &TrainerCheckpoint,
    now: &TrainConfig,
) -> Result<()> {
    fn same<T: PartialEq + std::fmt::Debug>(what: &str, saved: &T, now: &T) -> Result<()> {
        if saved == now {
            return Ok(());
        }
        Err(Error::ResumeMismatch {
            what: what.to_string(),
            saved: format!("{saved:?}"),
            now: format!("{now:?}"),
        })
    }
    same(
        "the label list",
        &saved_adapter.labels.names(),
        &checkpoint.labels.names(),
    )?;
    // A PiSSA/OLoRA adapter is saved converted; the run trained under `trained_config`.
    let a = saved_adapter
        .meta
        .as_ref()
        .and_then(|m| m.trained_config.as_ref())
        .unwrap_or(&saved_adapter.config);
    let b = &checkpoint.lora;
    same("the LoRA rank", &a.r, &b.r)?;
    same(
        "init_lora_weights",
        &a.init_lora_weights,
        &b.init_lora_weights,
    )?;
    same("lora_alpha", &a.lora_alpha, &b.lora_alpha)?;
    same("lora_dropout", &a.lora_dropout, &b.lora_dropout)?;
    same("use_rslora", &a.use_rslora, &b.use_rslora)?;
    same("use_dora", &a.use_dora, &b.use_dora)?;
    // Name lists compare as sets: `value,query` is the run saved with `query,value`.
    let targets = |s: &Option<ModuleSelector>| match s {
        Some(ModuleSelector::Names(n)) => {
            let mut n = n.clone();
            n.sort();
            n.dedup();
            Some(ModuleSelector::Names(n))
        }
        other => other.clone(),
    };
    if b.target_modules.is_some() {
        same(
            "target_modules",
            &targets(&a.target_modules),
            &targets(&b.target_modules),
        )?;
    }
    same("rank_pattern", &a.rank_pattern, &b.rank_pattern)?;
    same("alpha_pattern", &a.alpha_pattern, &b.alpha_pattern)?;
    same("layers_pattern", &a.layers_pattern, &b.layers_pattern)?;
    same("exclude_modules", &a.exclude_modules, &b.exclude_modules)?;
    same(
        "layers_to_transform",
        &a.layers_to_transform,
        &b.layers_to_transform,
    )?;
    if let Some(meta) = &saved_adapter.meta {
        let m = &checkpoint.meta;
        same("the pooling", &meta.pooling, &m.pooling)?;
        same("the maximum length", &meta.max_len, &m.max_len)?;
        same("the prompt template", &meta.template, &m.template)?;
        same("the model type", &meta.model_type, &m.model_type)?;
        same("the base's quantization", &meta.quantize, &m.quantize)?;
        same("the base dtype", &meta.base_dtype, &m.base_dtype)?;
    }
    same("epochs", &saved.epochs, &now.epochs)?;
    same("max_steps", &saved.max_steps, &now.max_steps)?;
    same("the batch size", &saved.batch_size, &now.batch_size)?;
    same("grad_accum", &saved.grad_accum, &now.grad_accum)?;
    same("the learning rate", &saved.lr, &now.lr)?;
    same("weight_decay", &saved.weight_decay, &now.weight_decay)?;
    same("warmup_ratio", &saved.warmup_ratio, &now.warmup_ratio)?;
    same("the decay schedule", &saved.decay, &now.decay)?;
    same("max_grad_norm", &saved.max_grad_norm, &now.max_grad_norm)?;
    same(
        "loraplus_lr_ratio",
        &saved.loraplus_lr_ratio,
        &now.loraplus_lr_ratio,
    )?;
    same("the seed", &saved.seed, &now.seed)?;
    same("length bucketing", &saved.bucket, &now.bucket)
}

impl<B: Backbone> TrainingLoop for Trainer<B> {
    fn check_inputs(&self, set: &EncodedSet) -> Result<()> {
        self.model().check_inputs(set)
    }

    fn on_message(&mut self, line: &str) {
        match &self.messages {
            Some(sink) => sink(line),
            None => eprintln!("{line}"),
        }
    }

    fn train_step(&mut self, batch: &Batch) -> Result<f32> {
        let model = self.model.as_ref().expect("model present");
        let logits = model.forward(&batch.input);
        let loss = self.loss.forward(logits, batch.targets.clone());
        let value = loss
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map(|v| v[0])
            .unwrap_or(f32::NAN);
        if !value.is_finite() {
            return Ok(value);
        }
        let scaled = if self.config.grad_accum > 1 {
            loss.div_scalar(self.config.grad_accum as f64)
        } else {
            loss
        };
        let grads = GradientsParams::from_grads(scaled.backward(), model);
        self.accum.accumulate(model, grads);
        Ok(value)
    }

    fn optimizer_step(&mut self, lr: f64) -> Result<()> {
        if self.config.loraplus_lr_ratio.is_some() && self.loraplus_fast.is_none() {
            let ids = loraplus_fast_params(self.model.as_mut().expect("model present"))?;
            self.loraplus_fast = Some(ParamGroup::from_ids(ids));
        }
        let mut grads = self.accum.grads();
        let model = self.model.take().expect("model present");
        // A finite loss can still come with NaN/inf gradients (an overflow in backward);
        // one such step would spoil every adapter weight.
        let norm = match self.config.max_grad_norm {
            Some(max) => clip_global_norm(&mut grads, &model, max),
            None => global_grad_norm(&grads, &model),
        };
        if !norm.is_finite() {
            self.model = Some(model);
            return Err(Error::NonFiniteGradient { norm, step: 0 });
        }
        self.model = Some(match (self.config.loraplus_lr_ratio, &self.loraplus_fast) {
            (Some(ratio), Some(fast)) => {
                let rates = ModuleLrScheduler::new(lr)
                    .with_group(fast.clone(), lr * ratio)
                    .step();
                self.optim.step(rates, model, grads)
            }
            _ => self.optim.step(lr, model, grads),
        });
        self.eval_model = None;
        Ok(())
    }

    fn eval_step(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        if self.eval_model.is_none() {
            self.eval_model = Some(self.model.as_ref().expect("model present").valid());
        }
        let model = self.eval_model.as_ref().expect("just set");
        let probs = model.probabilities(&batch.input);
        probs
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("{e:?}")))
    }

    fn on_evaluation(
        &mut self,
        state: &LoopState,
        eval: &EvalResult,
        improved: bool,
    ) -> Result<()> {
        if improved {
            self.best_eval = Some(eval.clone());
            self.best_model = Some(self.model().valid());
            if let Some(dir) = self.checkpoint.as_ref().map(|c| c.dir.join("best")) {
                replace_dir(dir, |tmp| self.save_to(tmp, Some(eval)))?;
            }
        }
        self.save_last(state, eval)
    }
}
