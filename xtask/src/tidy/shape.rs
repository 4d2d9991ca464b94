//! Rules on the shape of crates: `main-size`, `file-size` and `lib-map`.

use super::Violation;
use super::lex::{Scanned, is_ident};

/// Most lines a binary's `main.rs` (or `src/bin/` file) may have.
pub const MAIN_MAX_LINES: usize = 100;
/// Most lines any other source file may have.
pub const FILE_MAX_LINES: usize = 600;

/// `main-size`: a binary stays a thin shell around its library.
pub fn main_size(path: &str, text: &str) -> Option<Violation> {
    let n = text.lines().count();
    (n > MAIN_MAX_LINES).then(|| {
        Violation::new(
            path,
            1,
            "main-size",
            format!(
                "binary source has {n} lines, over the limit of {MAIN_MAX_LINES} (keep the binary a \
                 thin shell: move its logic into the library and call it from main)"
            ),
        )
    })
}

/// `file-size`: a source file is small enough to read as one unit.
pub fn file_size(path: &str, text: &str) -> Option<Violation> {
    let n = text.lines().count();
    (n > FILE_MAX_LINES).then(|| {
        Violation::new(
            path,
            1,
            "file-size",
            format!(
                "file has {n} lines, over the limit of {FILE_MAX_LINES} (split it into modules, one \
                 concern each)"
            ),
        )
    })
}

/// Whether `word` occurs in `text` with no identifier character on either side.
pub fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The modules a `lib.rs` declares with a file of their own (`mod x;`, any visibility), leaving
/// out inline modules and `#[cfg(test)]` ones: (line, name).
pub fn declared_modules(scanned: &Scanned) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut attrs = String::new();
    for (k, line) in scanned.code.lines().enumerate() {
        let mut t = line.trim();
        while t.starts_with("#[") {
            // Attributes, on lines of their own or before the item on its line.
            let end = t.find(']').map_or(t.len(), |e| e + 1);
            attrs.push_str(&t[..end]);
            t = t[end..].trim_start();
        }
        if t.is_empty() {
            continue;
        }
        let test_only = attrs.replace(' ', "").contains("cfg(test)");
        attrs.clear();
        if let Some(rest) = t.strip_prefix("pub") {
            t = rest.trim_start();
            if t.starts_with('(') {
                t = t[t.find(')').map_or(t.len(), |e| e + 1)..].trim_start();
            }
        }
        let Some(rest) = t.strip_prefix("mod ") else {
            continue;
        };
        let rest = rest.trim_start();
        let name: String = rest
            .trim_start_matches("r#")
            .chars()
            .take_while(|&c| is_ident(c))
            .collect();
        let after = rest[rest.find(name.as_str()).unwrap_or(0) + name.len()..].trim_start();
        if !name.is_empty() && after.starts_with(';') && !test_only {
            out.push((k + 1, name));
        }
    }
    out
}

/// `lib-map`: a `lib.rs` opens with `//!` docs that name every module it declares, so the crate
/// docs are a map of the crate.
pub fn lib_map(path: &str, text: &str, scanned: &Scanned) -> Option<Violation> {
    let mut docs = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(doc) = line.strip_prefix("//!") {
            docs.push_str(doc);
            docs.push('\n');
        } else if !(line.is_empty() || line.starts_with("#![")) {
            break;
        }
    }
    if docs.is_empty() {
        return Some(Violation::new(
            path,
            1,
            "lib-map",
            "lib.rs does not start with `//!` crate docs (open it with `//!` docs that say what the \
             crate is for and name each module, e.g. `//! - [`io`]: atomic writes`)"
                .to_string(),
        ));
    }
    let missing: Vec<(usize, String)> = declared_modules(scanned)
        .into_iter()
        .filter(|(_, m)| !contains_word(&docs, m))
        .collect();
    let (line, _) = missing.first()?;
    let names: Vec<String> = missing.iter().map(|(_, m)| format!("`{m}`")).collect();
    Some(Violation::new(
        path,
        *line,
        "lib-map",
        format!(
            "module(s) {} not named in the `//!` crate docs (add a line per module to the crate \
             docs, e.g. `//! - [`{}`]: what it holds`)",
            names.join(", "),
            missing[0].1
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::lex::scan;

    #[test]
    fn main_size_limits_binaries() {
        let long = "fn main() {}\n".repeat(MAIN_MAX_LINES + 1);
        let v = main_size("crates/a/src/main.rs", &long).expect("too long");
        assert_eq!(v.rule, "main-size");
        assert!(v.message.contains("101 lines"));
        assert!(main_size("crates/a/src/main.rs", &"\n".repeat(MAIN_MAX_LINES)).is_none());
    }

    #[test]
    fn file_size_limits_source_files() {
        let v =
            file_size("crates/a/src/x.rs", &"//\n".repeat(FILE_MAX_LINES + 5)).expect("too long");
        assert_eq!(v.to_string().split(": ").nth(1), Some("file-size"));
        assert!(file_size("crates/a/src/x.rs", &"//\n".repeat(FILE_MAX_LINES)).is_none());
    }

    #[test]
    fn declared_modules_skip_inline_and_test_modules() {
        let src = "//! x\npub mod a;\npub(crate) mod b;\nmod c { }\n#[cfg(test)]\nmod tests;\n\
                   #[cfg(feature = \"f\")] mod d;\n// mod e;\n";
        let got = declared_modules(&scan(src));
        assert_eq!(
            got,
            vec![
                (2, "a".to_string()),
                (3, "b".to_string()),
                (7, "d".to_string())
            ]
        );
    }

    #[test]
    fn lib_map_needs_docs_naming_every_module() {
        let no_docs = "pub mod io;\n";
        let v = lib_map("l.rs", no_docs, &scan(no_docs)).expect("no docs");
        assert_eq!((v.line, v.rule), (1, "lib-map"));

        let partial = "//! The crate.\n//! - [`io`]: writes\n//! - ios: not io_x\n\npub mod io;\nmod cli;\nmod ios2;\n";
        let v = lib_map("l.rs", partial, &scan(partial)).expect("cli, ios2 missing");
        assert_eq!(v.line, 6);
        assert!(
            v.message.starts_with("module(s) `cli`, `ios2` not named"),
            "{v}"
        );

        let good = "//! The crate: [`io`] and [`cli`].\n#![forbid(unsafe_code)]\npub mod io;\nmod cli;\n\
                    #[cfg(test)]\nmod tests;\n";
        assert!(lib_map("l.rs", good, &scan(good)).is_none());
    }
}
