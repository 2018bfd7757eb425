//! Data: multi-label examples, label sets, prompt templates and batching.

pub mod batch;
pub mod csv;
pub mod dataset;
pub mod template;

pub use batch::{Batch, EncodedExample, EncodedSet, ExampleBatcher, SplitMix64, epoch_batches};
pub use dataset::{
    CsvOptions, DataSplits, Example, LabelSet, LoadStats, UnknownLabelPolicy, label_counts,
    load_csv, load_jsonl,
};
pub use template::PromptTemplate;
