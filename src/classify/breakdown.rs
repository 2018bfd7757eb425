//! Where a multi-label classifier falls short: scores by how frequent a label is in the
//! training data (frequent / middle / rare thirds of the labels) and by how many gold
//! labels an example has. "Poor on multi-label" shows here, not in one micro-F1.

use serde::{Deserialize, Serialize};

use super::metrics::{LabelScore, metrics_from_predictions};

/// The labels of one frequency third and how they score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBucket {
    /// `frequent`, `middle` or `rare`.
    pub bucket: String,
    /// Labels in the bucket.
    pub labels: usize,
    /// Fewest and most training examples of a label in the bucket.
    pub train_count_range: [usize; 2],
    /// Gold positives of the bucket's labels in the scored data.
    pub support: usize,
    /// Micro-F1 over the bucket's labels.
    pub micro_f1: f64,
    /// Mean per-label F1 over the bucket's labels.
    pub macro_f1: f64,
}

/// The examples with a given number of gold labels and how they score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldCountSlice {
    /// `0`, `1`, `2`, `3` or `4+` gold labels.
    pub gold_labels: String,
    /// Examples in the slice.
    pub examples: usize,
    /// Micro-F1 over the slice's examples.
    pub micro_f1: f64,
    /// Sample-averaged F1 over the slice's examples.
    pub samples_f1: f64,
    /// Share of the slice's examples whose label set is exactly right.
    pub subset_accuracy: f64,
}

/// Both views of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Labels split into thirds by training frequency (most frequent first).
    pub by_label_frequency: Vec<FrequencyBucket>,
    /// Examples grouped by their number of gold labels (empty groups left out).
    pub by_gold_count: Vec<GoldCountSlice>,
}

/// Break down hard predictions `pred` against `targets` (both `n × num_labels`, 0/1);
/// `train_counts[j]` is label j's number of training examples (ties keep label order).
pub fn breakdown(
    pred: &[u8],
    targets: &[u8],
    num_labels: usize,
    train_counts: &[usize],
) -> Breakdown {
    assert_eq!(
        pred.len(),
        targets.len(),
        "predictions and targets differ in size"
    );
    assert_eq!(
        train_counts.len(),
        num_labels,
        "one training count per label"
    );
    let per_label = metrics_from_predictions(pred, targets, num_labels).per_label;

    let mut order: Vec<usize> = (0..num_labels).collect();
    order.sort_by(|&a, &b| train_counts[b].cmp(&train_counts[a]).then(a.cmp(&b)));
    let by_label_frequency = ["frequent", "middle", "rare"]
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let labels = &order[i * num_labels / 3..(i + 1) * num_labels / 3];
            if labels.is_empty() {
                return None;
            }
            let sum = |f: fn(&LabelScore) -> usize| labels.iter().map(|&j| f(&per_label[j])).sum();
            let (tp, fp, support): (usize, usize, usize) = (
                sum(|s| s.true_positives),
                sum(|s| s.false_positives),
                sum(|s| s.support),
            );
            let counts = labels.iter().map(|&j| train_counts[j]);
            Some(FrequencyBucket {
                bucket: name.to_string(),
                labels: labels.len(),
                train_count_range: [counts.clone().min().unwrap_or(0), counts.max().unwrap_or(0)],
                support,
                // 2tp / (2tp + fp + fn), with fn = support - tp.
                micro_f1: match tp + fp + support {
                    0 => 0.0,
                    d => 2.0 * tp as f64 / d as f64,
                },
                macro_f1: labels.iter().map(|&j| per_label[j].f1).sum::<f64>()
                    / labels.len() as f64,
            })
        })
        .collect();

    let by_gold_count = ["0", "1", "2", "3", "4+"]
        .iter()
        .enumerate()
        .filter_map(|(k, name)| {
            let in_slice = |t_row: &[u8]| {
                let gold = t_row.iter().filter(|&&t| t == 1).count();
                if k == 4 { gold >= 4 } else { gold == k }
            };
            let (mut p, mut t) = (Vec::new(), Vec::new());
            for (p_row, t_row) in pred.chunks(num_labels).zip(targets.chunks(num_labels)) {
                if in_slice(t_row) {
                    p.extend_from_slice(p_row);
                    t.extend_from_slice(t_row);
                }
            }
            if t.is_empty() {
                return None;
            }
            let m = metrics_from_predictions(&p, &t, num_labels);
            Some(GoldCountSlice {
                gold_labels: name.to_string(),
                examples: t.len() / num_labels,
                micro_f1: m.micro_f1,
                samples_f1: m.samples_f1,
                subset_accuracy: m.subset_accuracy,
            })
        })
        .collect();

    Breakdown {
        by_label_frequency,
        by_gold_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three labels (train counts 10, 1, 5: frequent = label 0, middle = label 2, rare =
    /// label 1), four examples with 1, 2, 0 and 1 gold labels. F1s worked by hand.
    #[test]
    fn buckets_and_slices_by_hand() {
        #[rustfmt::skip]
        let targets = [
            1, 0, 0,
            1, 1, 0,
            0, 0, 0,
            0, 0, 1,
        ];
        #[rustfmt::skip]
        let pred = [
            1, 0, 0, // right
            1, 0, 1, // misses label 1, false label 2
            0, 0, 0, // right
            0, 0, 1, // right
        ];
        let b = breakdown(&pred, &targets, 3, &[10, 1, 5]);
        let names: Vec<&str> = b
            .by_label_frequency
            .iter()
            .map(|x| x.bucket.as_str())
            .collect();
        assert_eq!(names, ["frequent", "middle", "rare"]);
        // Label 0: tp 2 → F1 1. Label 2: tp 1, fp 1 → 2/3. Label 1: fn 1 → 0.
        let f: Vec<f64> = b.by_label_frequency.iter().map(|x| x.micro_f1).collect();
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f[2], 0.0);
        assert_eq!(b.by_label_frequency[1].train_count_range, [5, 5]);
        assert_eq!(b.by_label_frequency[2].support, 1);

        let slices: Vec<(&str, usize)> = b
            .by_gold_count
            .iter()
            .map(|s| (s.gold_labels.as_str(), s.examples))
            .collect();
        assert_eq!(slices, [("0", 1), ("1", 2), ("2", 1)]);
        // One gold label: both rows exactly right.
        assert_eq!(b.by_gold_count[1].micro_f1, 1.0);
        assert_eq!(b.by_gold_count[1].subset_accuracy, 1.0);
        // Two gold labels: tp 1, fp 1, fn 1 → micro-F1 1/2; not exact.
        assert!((b.by_gold_count[2].micro_f1 - 0.5).abs() < 1e-12);
        assert_eq!(b.by_gold_count[2].subset_accuracy, 0.0);
    }

    /// With one label, the only bucket (the last third) is the whole evaluation, and the
    /// gold-count slices partition the examples.
    #[test]
    fn a_single_label_bucket_is_the_whole_evaluation() {
        let targets = [1, 0, 1, 1, 0, 1];
        let pred = [1, 1, 0, 1, 0, 0];
        let b = breakdown(&pred, &targets, 1, &[4]);
        assert_eq!(b.by_label_frequency.len(), 1);
        let overall = metrics_from_predictions(&pred, &targets, 1);
        assert_eq!(b.by_label_frequency[0].micro_f1, overall.micro_f1);
        assert_eq!(b.by_label_frequency[0].support, 4);
        let examples: usize = b.by_gold_count.iter().map(|s| s.examples).sum();
        assert_eq!(examples, 6);
    }
}
