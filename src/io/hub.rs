//! Checkpoints by Hugging Face model id (feature `hub`).
//!
//! [`HubRepo::download_model`] fetches what the model loaders read — `config.json`, `tokenizer.json`, the
//! safetensors weights (single file or every shard of the index) and, when the repository
//! has them, the sentence-transformers pooling files — from
//! `{endpoint}/{id}/resolve/{revision}/{file}`, as `huggingface_hub` does, into a cache folder,
//! and returns that folder. Files already cached are not fetched again.
//!
//! Transfers go through the `curl` program rather than an HTTP crate: every HTTP stack
//! crate pulls features into the dependency graph that change the build hash of all of burn
//! (a full rebuild for every user, see BENCHMARKS.md), and `curl` is everywhere. It also reads
//! `file://` endpoints, which is how this module is tested offline.
//!
//! Environment, as `huggingface_hub` reads it: `HF_ENDPOINT` (default
//! `https://huggingface.co`), `HF_TOKEN` (sent as a bearer token through curl's standard
//! input, never on its command line). Cache: `BURN_LORA_HUB_CACHE`, else
//! `~/.cache/burn-lora/hub` (not huggingface_hub's blob layout, which needs commit hashes
//! only its API returns).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Default hub address.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One model repository on a hub, at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRepo {
    id: String,
    revision: String,
    endpoint: String,
    cache: PathBuf,
}

impl HubRepo {
    /// Repository `id` (`name` or `owner/name`) at revision `main`, with the endpoint and
    /// cache folder taken from the environment.
    pub fn new(id: &str) -> Result<Self> {
        check_id(id)?;
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        let cache = match std::env::var_os("BURN_LORA_HUB_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".cache/burn-lora/hub"),
        };
        Ok(HubRepo {
            id: id.to_string(),
            revision: "main".into(),
            endpoint,
            cache,
        })
    }

    /// Another revision (branch, tag or commit).
    pub fn with_revision(mut self, revision: &str) -> Result<Self> {
        check_segment(revision, "revision")?;
        self.revision = revision.to_string();
        Ok(self)
    }

    /// Another hub address (`https://…`, or `file:///…` for a local mirror).
    pub fn with_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = endpoint.trim_end_matches('/').to_string();
        self
    }

    /// Another cache folder.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = dir.into();
        self
    }

    /// The folder this repository's files land in.
    pub fn local_dir(&self) -> PathBuf {
        self.cache
            .join(self.id.replace('/', "--"))
            .join(&self.revision)
    }

    /// The URL of `file` in this repository.
    pub fn url(&self, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint, self.id, self.revision, file
        )
    }

    /// Local path of `file`, fetched unless cached; `None` when the hub has no such file.
    pub fn get_optional(&self, file: &str) -> Result<Option<PathBuf>> {
        check_file(file)?;
        let dest = self.local_dir().join(file);
        if dest.is_file() {
            return Ok(Some(dest));
        }
        Ok(self.fetch(file, &dest)?.then_some(dest))
    }

    /// Local path of `file`, fetched unless cached; an error when the hub lacks it.
    pub fn get(&self, file: &str) -> Result<PathBuf> {
        self.get_optional(file)?.ok_or_else(|| Error::Download {
            url: self.url(file),
            message: "not found (or not readable with the given token)".into(),
        })
    }

    /// Fetch a checkpoint folder the backbones load, and return its path.
    pub fn download_model(&self) -> Result<PathBuf> {
        self.get("config.json")?;
        self.get("tokenizer.json")?;
        for optional in ["modules.json", "1_Pooling/config.json"] {
            self.get_optional(optional)?;
        }
        if self.get_optional("model.safetensors")?.is_none() {
            let index = self
                .get_optional("model.safetensors.index.json")?
                .ok_or_else(|| Error::Download {
                    url: self.url("model.safetensors"),
                    message: "neither model.safetensors nor model.safetensors.index.json \
                              exists (only safetensors checkpoints load)"
                        .into(),
                })?;
            for shard in shard_names(&index)? {
                self.get(&shard)?;
            }
        }
        Ok(self.local_dir())
    }

    /// Download `file` to `dest` through a temporary file; `Ok(false)` when it doesn't exist.
    fn fetch(&self, file: &str, dest: &Path) -> Result<bool> {
        let url = self.url(file);
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let partial = PathBuf::from(format!("{}.part", dest.display()));
        let mut curl = Command::new("curl");
        curl.args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "2",
        ])
        .arg("--output")
        .arg(&partial)
        .stdin(Stdio::piped());
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        if token.is_some() {
            // Headers from standard input keep the token out of the process list.
            curl.args(["--header", "@-"]);
        }
        let mut child = curl.arg(&url).spawn().map_err(|e| Error::Download {
            url: url.clone(),
            message: format!("cannot run curl ({e}); install curl or fetch the files by hand"),
        })?;
        if let (Some(token), Some(mut stdin)) = (token, child.stdin.take()) {
            writeln!(stdin, "Authorization: Bearer {token}").map_err(|e| Error::io(dir, e))?;
        }
        let status = child.wait().map_err(|e| Error::io(dir, e))?;
        match status.code() {
            Some(0) => {
                std::fs::rename(&partial, dest).map_err(|e| Error::io(dest, e))?;
                Ok(true)
            }
            // 22: an HTTP error status (404, 401, ...); 37: a file:// path that isn't there.
            Some(22) | Some(37) => {
                let _ = std::fs::remove_file(&partial);
                Ok(false)
            }
            code => {
                let _ = std::fs::remove_file(&partial);
                Err(Error::Download {
                    url,
                    message: format!("curl failed (exit status {code:?})"),
                })
            }
        }
    }
}

/// Shard file names listed in a `model.safetensors.index.json`.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Format {
            path: index.to_path_buf(),
            message: "no `weight_map` object".into(),
        })?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        check_file(name)?;
    }
    Ok(names)
}

/// `name` or `owner/name`, each part a plain path segment.
fn check_id(id: &str) -> Result<()> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("model id", id));
    }
    parts
        .iter()
        .try_for_each(|part| check_segment(part, "model id"))
}

/// A relative file path inside the repository, without `..` or empty segments.
fn check_file(file: &str) -> Result<()> {
    file.split('/')
        .try_for_each(|part| check_segment(part, "file name"))
}

fn check_segment(part: &str, what: &'static str) -> Result<()> {
    let ok = !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(()) } else { Err(bad(what, part)) }
}

fn bad(what: &'static str, value: &str) -> Error {
    Error::Unsupported {
        what,
        detail: format!("`{value}` (letters, digits, `-`, `_`, `.`; `owner/name` for ids)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_file_names_are_checked() {
        assert!(HubRepo::new("sentence-transformers/all-MiniLM-L6-v2").is_ok());
        assert!(HubRepo::new("gpt2").is_ok());
        for bad in ["a/b/c", "../x", "a/..", "", "a b", "a/"] {
            assert!(HubRepo::new(bad).is_err(), "{bad}");
        }
        assert!(check_file("1_Pooling/config.json").is_ok());
        assert!(check_file("../etc/passwd").is_err());
        let repo = HubRepo::new("o/m")
            .unwrap()
            .with_endpoint("https://h.example/");
        assert_eq!(
            repo.url("config.json"),
            "https://h.example/o/m/resolve/main/config.json"
        );
    }
}
