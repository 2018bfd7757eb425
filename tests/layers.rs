//! The layer order in `src/lib.rs`'s docs holds: a module imports (`crate::…`) only from its
//! own layer or those below, so a change in a higher layer never reaches a lower one. Doc
//! comments may link upward; code may not.

use std::path::Path;

/// `src/lib.rs`'s list, lowest first; modules on one line share a layer.
const LAYERS: &[&[&str]] = &[
    &["error", "device", "defaults", "limits", "nn"],
    &["io"],
    &["lora"],
    &["tokenize"],
    &["models"],
    &["data"],
    &["classify"],
    &["adapter", "export"],
    &["train"],
    &["finetune", "classifier"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    let mut modules_seen = std::collections::BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let own = layer_of(&top).unwrap_or_else(|| {
            panic!(
                "{top} (src/{}) is in no layer: add it to lib.rs's list and here",
                rel.display()
            )
        });
        modules_seen.insert(top.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // `crate::{a, b}` names several: each is checked.
                let names: Vec<String> = if name.is_empty() && rest.starts_with('{') {
                    rest[1..]
                        .split([',', '}'])
                        .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    vec![name]
                };
                for name in names {
                    if let Some(theirs) = layer_of(&name)
                        && theirs > own
                    {
                        upward.push(format!(
                            "src/{}:{}: {top} uses crate::{name}",
                            rel.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer:\n{}",
        upward.join("\n")
    );
    // The list names every module: one added without a place would pass unchecked.
    for layer in LAYERS {
        for module in *layer {
            assert!(
                modules_seen.contains(*module),
                "{module} is listed but has no source"
            );
        }
    }
}
