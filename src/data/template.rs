//! Prompt templates that wrap an input text for decoder models.

use std::path::Path;

use crate::error::{Error, Result};

/// A template with a `{text}` placeholder and optionally `{labels}` (the label names,
/// comma-separated).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    template: String,
    labels: String,
}

impl PromptTemplate {
    /// From a string; it must contain `{text}`.
    pub fn new(template: &str, labels: &[String]) -> Result<Self> {
        if !template.contains("{text}") {
            return Err(Error::InvalidState(format!(
                "template has no {{text}} placeholder: {template:?}"
            )));
        }
        Ok(PromptTemplate {
            template: template.to_string(),
            labels: labels.join(", "),
        })
    }

    /// From a file holding the template.
    pub fn from_file(path: impl AsRef<Path>, labels: &[String]) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::new(&text, labels)
    }

    /// A ChatML prompt (`<|im_start|>system ... <|im_end|>`) around an instruction that
    /// contains `{text}`, ending where the assistant's answer would start.
    pub fn chatml(system: &str, user: &str, labels: &[String]) -> Result<Self> {
        Self::new(
            &format!(
                "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
            ),
            labels,
        )
    }

    /// The identity template `{text}`.
    pub fn identity() -> Self {
        PromptTemplate {
            template: "{text}".into(),
            labels: String::new(),
        }
    }

    /// Whether this template leaves text unchanged.
    pub fn is_identity(&self) -> bool {
        self.template == "{text}"
    }

    /// The template string.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Fill in the placeholders.
    pub fn render(&self, text: &str) -> String {
        // `{labels}` first, so a text containing "{labels}" is not expanded.
        self.template
            .replace("{labels}", &self.labels)
            .replace("{text}", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_requires_placeholder() {
        let t =
            PromptTemplate::new("Tags ({labels}) for: {text}", &["a".into(), "b".into()]).unwrap();
        assert_eq!(t.render("x {labels}"), "Tags (a, b) for: x {labels}");
        assert!(PromptTemplate::new("no placeholder", &[]).is_err());
        let c = PromptTemplate::chatml("sys", "Classify: {text}", &[]).unwrap();
        assert!(c.render("hi").ends_with("<|im_start|>assistant\n"));
    }
}
