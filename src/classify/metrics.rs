//! Multi-label metrics from probabilities and thresholds, with scikit-learn's
//! definitions (`zero_division=0`), and threshold tuning on a validation set.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Probabilities `[n, labels]` (row-major) with their multi-hot truth.
#[derive(Debug, Clone, Copy)]
pub struct Scores<'a> {
    /// Predicted probabilities, `n × labels`.
    pub probs: &'a [f32],
    /// Truth, `n × labels`, 0 or 1.
    pub targets: &'a [u8],
    /// Number of labels.
    pub num_labels: usize,
}

impl<'a> Scores<'a> {
    /// Check the shapes and wrap.
    pub fn new(probs: &'a [f32], targets: &'a [u8], num_labels: usize) -> Result<Self> {
        if num_labels == 0
            || probs.len() != targets.len()
            || !probs.len().is_multiple_of(num_labels)
        {
            return Err(Error::ShapeMismatch {
                name: "scores".into(),
                expected: vec![targets.len() / num_labels.max(1), num_labels],
                actual: vec![probs.len()],
            });
        }
        if probs.is_empty() {
            return Err(Error::InvalidState("no examples to score".into()));
        }
        Ok(Scores {
            probs,
            targets,
            num_labels,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.probs.len() / self.num_labels
    }

    /// Never true for a value built by [`Scores::new`].
    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }
}

/// How probabilities become label decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// One threshold per label (all equal for a global threshold).
    pub per_label: Vec<f32>,
    /// The global threshold (used for labels without enough validation positives).
    pub global: f32,
    /// Predict the top-1 label when nothing passes its threshold.
    pub at_least_one: bool,
}

impl Thresholds {
    /// The same threshold for every label.
    pub fn global(threshold: f32, num_labels: usize, at_least_one: bool) -> Self {
        Thresholds {
            per_label: vec![threshold; num_labels],
            global: threshold,
            at_least_one,
        }
    }

    /// Decide labels: `probs[i,j] >= t_j`, plus the top-1 fallback when asked.
    pub fn apply(&self, probs: &[f32]) -> Vec<u8> {
        let l = self.per_label.len();
        let mut out = vec![0u8; probs.len()];
        for (row, pred) in probs.chunks(l).zip(out.chunks_mut(l)) {
            let mut any = false;
            for j in 0..l {
                if row[j] >= self.per_label[j] {
                    pred[j] = 1;
                    any = true;
                }
            }
            if self.at_least_one && !any {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(j, _)| j);
                if let Some(j) = best {
                    pred[j] = 1;
                }
            }
        }
        out
    }
}

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Positives in the data (gold labels).
    pub support: usize,
    /// Correctly predicted positives.
    #[serde(default)]
    pub true_positives: usize,
    /// Predicted positives that are not in the data.
    #[serde(default)]
    pub false_positives: usize,
}

/// The multi-label report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    /// Micro-averaged precision.
    pub micro_precision: f64,
    /// Micro-averaged recall.
    pub micro_recall: f64,
    /// Micro-averaged F1.
    pub micro_f1: f64,
    /// Macro-averaged precision (mean over labels).
    pub macro_precision: f64,
    /// Macro-averaged recall.
    pub macro_recall: f64,
    /// Macro-averaged F1 (mean of per-label F1).
    pub macro_f1: f64,
    /// Sample-averaged precision.
    pub samples_precision: f64,
    /// Sample-averaged recall.
    pub samples_recall: f64,
    /// Sample-averaged F1.
    pub samples_f1: f64,
    /// Fraction of wrong label decisions.
    pub hamming_loss: f64,
    /// Fraction of examples whose label set is exactly right.
    pub subset_accuracy: f64,
    /// Per-label scores, in label order.
    pub per_label: Vec<LabelScore>,
}

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Metrics of hard predictions `pred` against `targets` (both `n × labels`, 0/1).
pub fn metrics_from_predictions(
    pred: &[u8],
    targets: &[u8],
    num_labels: usize,
) -> MultiLabelMetrics {
    let n = targets.len() / num_labels;
    let mut tp = vec![0usize; num_labels];
    let mut fp = vec![0usize; num_labels];
    let mut fn_ = vec![0usize; num_labels];
    let (mut sp, mut sr, mut sf) = (0.0, 0.0, 0.0);
    let (mut wrong, mut exact) = (0usize, 0usize);
    for (p_row, t_row) in pred.chunks(num_labels).zip(targets.chunks(num_labels)) {
        let (mut row_tp, mut row_p, mut row_t) = (0usize, 0usize, 0usize);
        for j in 0..num_labels {
            let (p, t) = (p_row[j] == 1, t_row[j] == 1);
            match (p, t) {
                (true, true) => tp[j] += 1,
                (true, false) => fp[j] += 1,
                (false, true) => fn_[j] += 1,
                _ => {}
            }
            row_tp += (p && t) as usize;
            row_p += p as usize;
            row_t += t as usize;
            wrong += (p != t) as usize;
        }
        exact += (row_p == row_t && row_tp == row_p) as usize;
        sp += div(row_tp as f64, row_p as f64);
        sr += div(row_tp as f64, row_t as f64);
        sf += div(2.0 * row_tp as f64, (row_p + row_t) as f64);
    }
    let per_label: Vec<LabelScore> = (0..num_labels)
        .map(|j| LabelScore {
            precision: div(tp[j] as f64, (tp[j] + fp[j]) as f64),
            recall: div(tp[j] as f64, (tp[j] + fn_[j]) as f64),
            f1: div(2.0 * tp[j] as f64, (2 * tp[j] + fp[j] + fn_[j]) as f64),
            support: tp[j] + fn_[j],
            true_positives: tp[j],
            false_positives: fp[j],
        })
        .collect();
    let (ttp, tfp, tfn) = (
        tp.iter().sum::<usize>() as f64,
        fp.iter().sum::<usize>() as f64,
        fn_.iter().sum::<usize>() as f64,
    );
    let mean = |f: fn(&LabelScore) -> f64| per_label.iter().map(f).sum::<f64>() / num_labels as f64;
    MultiLabelMetrics {
        micro_precision: div(ttp, ttp + tfp),
        micro_recall: div(ttp, ttp + tfn),
        micro_f1: div(2.0 * ttp, 2.0 * ttp + tfp + tfn),
        macro_precision: mean(|s| s.precision),
        macro_recall: mean(|s| s.recall),
        macro_f1: mean(|s| s.f1),
        samples_precision: sp / n as f64,
        samples_recall: sr / n as f64,
        samples_f1: sf / n as f64,
        hamming_loss: wrong as f64 / (n * num_labels) as f64,
        subset_accuracy: exact as f64 / n as f64,
        per_label,
    }
}

/// Metrics of probabilities under `thresholds`.
pub fn evaluate(scores: Scores<'_>, thresholds: &Thresholds) -> MultiLabelMetrics {
    let pred = thresholds.apply(scores.probs);
    metrics_from_predictions(&pred, scores.targets, scores.num_labels)
}

/// How thresholds are tuned on validation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ThresholdMode {
    /// One threshold maximising validation micro-F1.
    Global,
    /// One threshold per label maximising that label's F1; labels with fewer than
    /// `min_positives` validation positives keep the global one.
    PerLabel,
}

impl std::str::FromStr for ThresholdMode {
    type Err = crate::error::Error;

    /// `global | per-label` (the example's `--threshold`).
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "global" => Ok(ThresholdMode::Global),
            "per-label" => Ok(ThresholdMode::PerLabel),
            other => Err(crate::error::Error::Unsupported {
                what: "threshold",
                detail: format!("`{other}` (global, per-label)"),
            }),
        }
    }
}

/// The candidate thresholds: 0.01, 0.02, ..., 0.99.
fn grid() -> impl Iterator<Item = f32> {
    (1..100).map(|i| i as f32 / 100.0)
}

/// Tune thresholds on validation scores. Ties go to the lower threshold.
pub fn tune_thresholds(
    scores: Scores<'_>,
    mode: ThresholdMode,
    min_positives: usize,
    at_least_one: bool,
) -> Thresholds {
    let l = scores.num_labels;
    let mut best = (f64::MIN, 0.5f32);
    for t in grid() {
        let m = evaluate(scores, &Thresholds::global(t, l, at_least_one));
        if m.micro_f1 > best.0 {
            best = (m.micro_f1, t);
        }
    }
    let global = best.1;
    let mut thresholds = Thresholds::global(global, l, at_least_one);
    if mode == ThresholdMode::PerLabel {
        for j in 0..l {
            let positives = scores
                .targets
                .iter()
                .skip(j)
                .step_by(l)
                .filter(|&&y| y == 1)
                .count();
            if positives < min_positives {
                continue;
            }
            let mut best = (f64::MIN, global);
            for t in grid() {
                let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
                for (p, y) in scores
                    .probs
                    .iter()
                    .skip(j)
                    .step_by(l)
                    .zip(scores.targets.iter().skip(j).step_by(l))
                {
                    match (*p >= t, *y == 1) {
                        (true, true) => tp += 1,
                        (true, false) => fp += 1,
                        (false, true) => fn_ += 1,
                        _ => {}
                    }
                }
                let f1 = div(2.0 * tp as f64, (2 * tp + fp + fn_) as f64);
                if f1 > best.0 {
                    best = (f1, t);
                }
            }
            thresholds.per_label[j] = best.1;
        }
    }
    thresholds
}
