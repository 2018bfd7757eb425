//! Multi-label classification: head and pooling, losses, metrics and threshold tuning.

pub mod breakdown;
pub mod head;
pub mod loss;
pub mod metrics;
pub mod predict;

pub use breakdown::{Breakdown, FrequencyBucket, GoldCountSlice, breakdown};
pub use head::{ClassificationHead, MultiLabelClassifier, Pooling};
pub use loss::{LossKind, MultiLabelLoss};
pub use metrics::{
    LabelScore, MultiLabelMetrics, Scores, ThresholdMode, Thresholds, evaluate,
    metrics_from_predictions, tune_thresholds,
};
pub use predict::{predict_probs, predict_probs_observed};
