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

    /// The finetune example's default for decoders: a ChatML instruction when the
    /// tokenizer knows `<|im_start|>` (SmolLM2, Qwen), else a plain one; the prompt ends
    /// where the answer would start, so the last token (the pooled one) has read the text.
    pub fn default_instruction(chatml: bool) -> Self {
        let user = "Which categories apply to the following text?\n\n{text}";
        let template = if chatml {
            format!(
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
            )
        } else {
            format!("{user}\n\nCategories:")
        };
        PromptTemplate {
            template,
            labels: String::new(),
        }
    }

    /// A template given on a command line: the contents of the file it names, if there
    /// is one, else the string itself.
    pub fn from_arg(arg: &str, labels: &[String]) -> Result<Self> {
        if Path::new(arg).is_file() {
            Self::from_file(arg, labels)
        } else {
            Self::new(arg, labels)
        }
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
        for chatml in [true, false] {
            let d = PromptTemplate::default_instruction(chatml);
            assert!(d.render("XYZ").contains("XYZ") && !d.is_identity());
        }
    }
}
