//! Data: multi-label examples, label sets and batching.

pub mod batch;
pub mod csv;
pub mod dataset;

pub use batch::{Batch, EncodedExample, EncodedSet, ExampleBatcher, SplitMix64, epoch_batches};
pub use dataset::{
    CsvOptions, DataSplits, EmptyTextPolicy, EmptyTexts, Example, LabelSet, LoadStats,
    UnknownLabelPolicy, is_empty_text, label_counts, load_csv, load_jsonl,
};
// Templates are applied at tokenisation; re-exported here where data sets use them.
pub use crate::tokenize::PromptTemplate;
