//! Multi-label text data: JSON Lines (`{"text": ..., "labels": [...]}`, optionally
//! gzip-compressed) or CSV, and the [`LabelSet`] that maps label names to columns.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Optional identifier (`id` field).
    pub id: Option<String>,
    /// The text to classify.
    pub text: String,
    /// Label indices into the [`LabelSet`], sorted and unique.
    pub labels: Vec<usize>,
}

/// The ordered set of label names; index `j` is logit `j`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl LabelSet {
    /// From names in order; duplicates, empty names and names with surrounding whitespace
    /// or line breaks (they would not survive `labels.txt`) are errors.
    pub fn new(names: Vec<String>) -> Result<Self> {
        if names.is_empty() {
            return Err(Error::InvalidState("label set is empty".into()));
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(Error::InvalidState(format!("label {i} has an empty name")));
            }
            // labels.txt is read line by line and trimmed: such a name could not be
            // saved and read back as itself.
            if n.trim() != n || n.contains(['\n', '\r']) {
                return Err(Error::InvalidState(format!(
                    "label {i} ({n:?}) has surrounding whitespace or a line break"
                )));
            }
            if index.insert(n.clone(), i).is_some() {
                return Err(Error::InvalidState(format!("label `{n}` listed twice")));
            }
        }
        Ok(LabelSet { names, index })
    }

    /// Read `labels.txt`: one label per line (blank lines ignored).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: "no labels".into(),
            });
        }
        Self::new(names)
    }

    /// Infer from raw label lists: by frequency (descending), then name.
    pub fn infer<'a>(labels: impl IntoIterator<Item = &'a [String]>) -> Result<Self> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for list in labels {
            for l in list {
                *counts.entry(l.as_str()).or_default() += 1;
            }
        }
        let mut names: Vec<(&str, usize)> = counts.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::new(names.into_iter().map(|(n, _)| n.to_string()).collect())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true for a constructed set.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name of label `j`.
    pub fn name(&self, j: usize) -> &str {
        &self.names[j]
    }

    /// All names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Column of a label name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// `labels.txt` content.
    pub fn to_text(&self) -> String {
        let mut s = self.names.join("\n");
        s.push('\n');
        s
    }
}

/// What to do with a label that is not in the [`LabelSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownLabelPolicy {
    /// Fail with [`Error::UnknownLabel`] naming the file and line (the default).
    #[default]
    Error,
    /// Drop the label, keep the example, and count it in [`LoadStats`].
    Skip,
}

impl std::str::FromStr for UnknownLabelPolicy {
    type Err = Error;

    /// `error | drop` (the example's `--unknown-labels`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" => Ok(UnknownLabelPolicy::Error),
            "drop" => Ok(UnknownLabelPolicy::Skip),
            other => Err(Error::Unsupported {
                what: "unknown-label policy",
                detail: format!("`{other}` (error, drop)"),
            }),
        }
    }
}

/// What to do with examples whose text is empty or only whitespace (the model would see
/// only its special tokens and learn their labels from nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EmptyTextPolicy {
    /// Fail with [`Error::EmptyText`] naming the file and lines (the default: such rows
    /// are usually a broken export, and one silently kept moves the metrics).
    #[default]
    Error,
    /// Drop those examples from every split, saying how many and where.
    Drop,
    /// Keep them, saying how many and where.
    Keep,
}

impl std::str::FromStr for EmptyTextPolicy {
    type Err = Error;

    /// `error | drop | keep` (the example's `--empty-texts`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" => Ok(EmptyTextPolicy::Error),
            "drop" => Ok(EmptyTextPolicy::Drop),
            "keep" => Ok(EmptyTextPolicy::Keep),
            other => Err(Error::Unsupported {
                what: "empty-text policy",
                detail: format!("`{other}` (error, drop, keep)"),
            }),
        }
    }
}

/// Whether a text gives the model nothing to read.
pub fn is_empty_text(text: &str) -> bool {
    text.trim().is_empty()
}

/// Counts from loading one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Examples read.
    pub examples: usize,
    /// Unknown label occurrences dropped (with [`UnknownLabelPolicy::Skip`]).
    pub unknown_labels_skipped: usize,
    /// 1-based lines (CSV: records) of examples whose text is empty or only whitespace.
    pub empty_text_lines: Vec<usize>,
}

/// A raw record before label lookup. `labels` has no default: a misspelt key (`label`,
/// `tags`) would otherwise turn every example into an unlabeled one without a word.
#[derive(Debug, Deserialize)]
struct RawJson {
    #[serde(default)]
    id: Option<serde_json::Value>,
    text: String,
    labels: Option<Vec<String>>,
}

/// Open a file, decompressing `.gz` transparently (every member of a multi-member gzip,
/// as `gzip -d` and `cat a.gz b.gz` make; a single-member decoder stops after the first).
fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// `dir/name.jsonl` or `dir/name.jsonl.gz`, whichever exists; both is an error.
pub fn find_split(dir: &Path, name: &str) -> Result<PathBuf> {
    let (plain, gz) = (
        dir.join(format!("{name}.jsonl")),
        dir.join(format!("{name}.jsonl.gz")),
    );
    match (plain.exists(), gz.exists()) {
        // Which one is meant cannot be guessed: they may hold different data.
        (true, true) => {
            return Err(Error::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "both {name}.jsonl and {name}.jsonl.gz are here; keep one of them"
                ),
            });
        }
        (true, false) => return Ok(plain),
        (false, true) => return Ok(gz),
        (false, false) => {}
    }
    Err(Error::io(
        dir.join(format!("{name}.jsonl")),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "split not found (.jsonl or .jsonl.gz)",
        ),
    ))
}

fn lookup(
    labels: &[String],
    set: &LabelSet,
    policy: UnknownLabelPolicy,
    path: &Path,
    line: usize,
    stats: &mut LoadStats,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(labels.len());
    for l in labels {
        match set.index_of(l) {
            Some(j) => out.push(j),
            None if policy == UnknownLabelPolicy::Skip => stats.unknown_labels_skipped += 1,
            None => {
                return Err(Error::UnknownLabel {
                    path: path.to_path_buf(),
                    line,
                    label: l.clone(),
                });
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A raw JSON Lines record: `(line number, id, text, labels)`.
type RawRecord = (usize, Option<String>, String, Vec<String>);

/// Read raw JSON Lines records.
fn read_jsonl_raw(path: &Path) -> Result<Vec<RawRecord>> {
    let reader = open_text(path)?;
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let fmt = |message: String| Error::Format {
            path: path.to_path_buf(),
            message: format!("line {}: {message}", i + 1),
        };
        let raw: RawJson = serde_json::from_str(&line).map_err(|e| fmt(e.to_string()))?;
        let Some(labels) = raw.labels else {
            let keys: Vec<String> =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line)
                    .map(|m| m.keys().map(|k| format!("`{k}`")).collect())
                    .unwrap_or_default();
            return Err(fmt(format!(
                "no `labels` key (the record has {}); write `\"labels\": []` for an example without labels",
                keys.join(", ")
            )));
        };
        let id = raw.id.map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        out.push((i + 1, id, raw.text, labels));
    }
    if out.is_empty() {
        return Err(Error::EmptyData(path.to_path_buf()));
    }
    Ok(out)
}

/// Load a JSON Lines split against a label set.
pub fn load_jsonl(
    path: impl AsRef<Path>,
    labels: &LabelSet,
    policy: UnknownLabelPolicy,
) -> Result<(Vec<Example>, LoadStats)> {
    let path = path.as_ref();
    let mut stats = LoadStats::default();
    let mut examples = Vec::new();
    for (line, id, text, raw_labels) in read_jsonl_raw(path)? {
        let labels = lookup(&raw_labels, labels, policy, path, line, &mut stats)?;
        if is_empty_text(&text) {
            stats.empty_text_lines.push(line);
        }
        examples.push(Example { id, text, labels });
    }
    stats.examples = examples.len();
    Ok((examples, stats))
}

/// Infer a label set from a JSON Lines file (by frequency).
pub fn infer_labels_jsonl(path: impl AsRef<Path>) -> Result<LabelSet> {
    let records = read_jsonl_raw(path.as_ref())?;
    LabelSet::infer(records.iter().map(|r| r.3.as_slice()))
}

/// CSV layout options.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Column with the text.
    pub text_column: String,
    /// Column with the labels.
    pub labels_column: String,
    /// Separator between labels inside the labels column.
    pub label_separator: String,
    /// Field delimiter.
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            text_column: "text".into(),
            labels_column: "labels".into(),
            label_separator: "|".into(),
            delimiter: b',',
        }
    }
}

/// Load a CSV file with a header row.
pub fn load_csv(
    path: impl AsRef<Path>,
    labels: &LabelSet,
    options: &CsvOptions,
    policy: UnknownLabelPolicy,
) -> Result<(Vec<Example>, LoadStats)> {
    let path = path.as_ref();
    let fmt = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut text = String::new();
    open_text(path)?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    let records = super::csv::parse_csv(&text, options.delimiter as char).map_err(fmt)?;
    let mut rows = records.into_iter();
    let headers = rows
        .next()
        .ok_or_else(|| Error::EmptyData(path.to_path_buf()))?;
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| fmt(format!("no `{name}` column")))
    };
    let (text_col, labels_col) = (col(&options.text_column)?, col(&options.labels_column)?);
    let id_col = headers.iter().position(|h| h == "id");
    let mut stats = LoadStats::default();
    let mut examples = Vec::new();
    for (i, record) in rows.enumerate() {
        let line = i + 2; // 1-based record number, after the header
        if record.len() != headers.len() {
            return Err(fmt(format!(
                "record {line}: {} fields, header has {}",
                record.len(),
                headers.len()
            )));
        }
        let raw: Vec<String> = record[labels_col]
            .split(options.label_separator.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let labels = lookup(&raw, labels, policy, path, line, &mut stats)?;
        if is_empty_text(&record[text_col]) {
            stats.empty_text_lines.push(line);
        }
        examples.push(Example {
            id: id_col.map(|c| record[c].clone()),
            text: record[text_col].clone(),
            labels,
        });
    }
    if examples.is_empty() {
        return Err(Error::EmptyData(path.to_path_buf()));
    }
    stats.examples = examples.len();
    Ok((examples, stats))
}

/// A `--data DIR` folder: `train`, `valid`, `test` splits and the label set
/// (`labels.txt`, else inferred from train).
#[derive(Debug, Clone)]
pub struct DataSplits {
    /// Label set.
    pub labels: LabelSet,
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples.
    pub valid: Vec<Example>,
    /// Test examples.
    pub test: Vec<Example>,
    /// Unknown labels skipped per split (train, valid, test).
    pub skipped: [usize; 3],
    /// Where each split's examples with an empty text are (train, valid, test).
    pub empty_texts: [EmptyTexts; 3],
}

/// Examples of one split whose text is empty or only whitespace, and where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmptyTexts {
    /// The split's file, or `None` for examples given in memory.
    pub path: Option<PathBuf>,
    /// 0-based positions in the split's example list.
    pub positions: Vec<usize>,
    /// 1-based file lines (CSV: records), or 1-based example numbers in memory.
    pub lines: Vec<usize>,
}

impl EmptyTexts {
    /// Find them in examples given in memory.
    pub fn in_memory(examples: &[Example]) -> Self {
        let positions: Vec<usize> = (0..examples.len())
            .filter(|&i| is_empty_text(&examples[i].text))
            .collect();
        let lines = positions.iter().map(|i| i + 1).collect();
        EmptyTexts {
            path: None,
            positions,
            lines,
        }
    }

    /// Where they are, for a message: `FILE lines 3, 9` or `examples 3, 9` (the first ten).
    pub fn describe(&self) -> String {
        const SHOWN: usize = 10;
        let mut list: Vec<String> = self
            .lines
            .iter()
            .take(SHOWN)
            .map(|l| l.to_string())
            .collect();
        if self.lines.len() > SHOWN {
            list.push(format!("... ({} more)", self.lines.len() - SHOWN));
        }
        let list = list.join(", ");
        match &self.path {
            Some(path) => format!("{} line(s) {list}", path.display()),
            None => format!("example(s) {list}"),
        }
    }
}

impl DataSplits {
    /// Load a data folder. Training labels outside `labels.txt` are dropped (the label set
    /// defines the task); unknown labels in valid/test follow `policy`.
    ///
    /// Training data in which no example carries a label of the set (a `labels.txt` for
    /// another data set, or labels under a misspelt key) is [`Error::NoLabels`].
    pub fn load(dir: impl AsRef<Path>, policy: UnknownLabelPolicy) -> Result<Self> {
        let dir = dir.as_ref();
        let train_path = find_split(dir, "train")?;
        let labels_path = dir.join("labels.txt");
        let labels = if labels_path.exists() {
            LabelSet::from_file(&labels_path)?
        } else {
            let records = read_jsonl_raw(&train_path)?;
            if records.iter().all(|r| r.3.is_empty()) {
                return Err(Error::NoLabels {
                    path: train_path,
                    message: "no example has a label, so there is no label set to learn".into(),
                });
            }
            LabelSet::infer(records.iter().map(|r| r.3.as_slice()))?
        };
        let (train, s0) = load_jsonl(&train_path, &labels, UnknownLabelPolicy::Skip)?;
        // The positions as in memory; the lines the loader recorded in the file.
        let empty = |path: &Path, examples: &[Example], stats: &LoadStats| EmptyTexts {
            path: Some(path.to_path_buf()),
            lines: stats.empty_text_lines.clone(),
            ..EmptyTexts::in_memory(examples)
        };
        let empty_train = empty(&train_path, &train, &s0);
        if train.iter().all(|e| e.labels.is_empty()) {
            return Err(Error::NoLabels {
                path: labels_path,
                message: format!(
                    "no label of it occurs in {} ({} label occurrences there are not in it)",
                    train_path.display(),
                    s0.unknown_labels_skipped
                ),
            });
        }
        let (valid_path, test_path) = (find_split(dir, "valid")?, find_split(dir, "test")?);
        let (valid, s1) = load_jsonl(&valid_path, &labels, policy)?;
        let (test, s2) = load_jsonl(&test_path, &labels, policy)?;
        Ok(DataSplits {
            empty_texts: [
                empty_train,
                empty(&valid_path, &valid, &s1),
                empty(&test_path, &test, &s2),
            ],
            labels,
            train,
            valid,
            test,
            skipped: [
                s0.unknown_labels_skipped,
                s1.unknown_labels_skipped,
                s2.unknown_labels_skipped,
            ],
        })
    }
}

/// Positives per label.
pub fn label_counts(examples: &[Example], num_labels: usize) -> Vec<usize> {
    let mut counts = vec![0usize; num_labels];
    for e in examples {
        for &j in &e.labels {
            counts[j] += 1;
        }
    }
    counts
}
