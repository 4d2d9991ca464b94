//! A small Rust scanner for the tidy rules: it splits a source file into code, comments and
//! string literals, so that a rule about comments does not fire inside a string and a rule
//! about code (brace matching, `#[test]`) is not fooled by a `{` in a string or a comment.
//!
//! It is not a full lexer; it knows line and block comments (nested), string literals (plain,
//! byte, C and raw), char literals and lifetimes, which is all the rules need.

/// A scanned source file.
pub struct Scanned {
    /// The source with every comment, and the contents of every string and char literal,
    /// replaced by spaces (quotes kept); line breaks are kept, so line N of `code` is line N of
    /// the source.
    pub code: String,
    /// The comments, one entry per source line a comment covers: (1-based line, its text there).
    pub comments: Vec<(usize, String)>,
    /// The string literals: (1-based line where it starts, contents between the quotes as
    /// written, escapes not processed).
    pub strings: Vec<(usize, String)>,
}

/// Whether `ch` can be part of an identifier.
pub fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

struct Scanner {
    src: Vec<char>,
    i: usize,
    line: usize,
    code: String,
    comments: Vec<(usize, String)>,
    strings: Vec<(usize, String)>,
}

impl Scanner {
    fn at(&self, k: usize) -> Option<char> {
        self.src.get(self.i + k).copied()
    }

    /// Consumes one char as code.
    fn keep(&mut self) {
        let ch = self.src[self.i];
        self.code.push(ch);
        if ch == '\n' {
            self.line += 1;
        }
        self.i += 1;
    }

    /// Consumes one char, blanking it in the code (a line break stays a line break).
    fn blank(&mut self) -> char {
        let ch = self.src[self.i];
        if ch == '\n' {
            self.code.push('\n');
            self.line += 1;
        } else {
            self.code.push(' ');
        }
        self.i += 1;
        ch
    }

    fn line_comment(&mut self) {
        let line = self.line;
        let mut text = String::new();
        while self.i < self.src.len() && self.src[self.i] != '\n' {
            text.push(self.blank());
        }
        self.comments.push((line, text));
    }

    fn block_comment(&mut self) {
        let mut depth = 0usize;
        let mut text = String::new();
        while self.i < self.src.len() {
            if self.at(0) == Some('/') && self.at(1) == Some('*') {
                depth += 1;
                text.push(self.blank());
                text.push(self.blank());
                continue;
            } else if self.at(0) == Some('*') && self.at(1) == Some('/') {
                depth -= 1;
                text.push(self.blank());
                text.push(self.blank());
                if depth == 0 {
                    break;
                }
                continue;
            }
            let line = self.line;
            let ch = self.blank();
            if ch == '\n' {
                self.comments.push((line, std::mem::take(&mut text)));
            } else {
                text.push(ch);
            }
        }
        if !text.is_empty() {
            self.comments.push((self.line, text));
        }
    }

    /// A string whose opening quote is at `self.i`; `hashes` is `Some(n)` for a raw string
    /// closed by a quote and n `#`.
    fn string(&mut self, hashes: Option<usize>) {
        let line = self.line;
        self.keep();
        let mut text = String::new();
        while self.i < self.src.len() {
            let ch = self.src[self.i];
            match hashes {
                None if ch == '\\' => {
                    text.push(self.blank());
                    if self.i < self.src.len() {
                        text.push(self.blank());
                    }
                    continue;
                }
                None if ch == '"' => break,
                Some(n) if ch == '"' && (1..=n).all(|k| self.at(k) == Some('#')) => break,
                _ => text.push(self.blank()),
            }
        }
        if self.i < self.src.len() {
            self.keep();
        }
        self.strings.push((line, text));
    }

    /// At `r` (or `br`, `cr`): `Some(n)` when a raw string with n `#` starts here.
    fn raw_string_start(&self) -> Option<usize> {
        let prev = |k: usize| self.i.checked_sub(k).map(|j| self.src[j]);
        let starts_token = match prev(1) {
            None => true,
            Some('b' | 'c') => !prev(2).is_some_and(is_ident),
            Some(p) => !is_ident(p),
        };
        if !starts_token {
            return None;
        }
        let mut n = 0;
        while self.at(1 + n) == Some('#') {
            n += 1;
        }
        (self.at(1 + n) == Some('"')).then_some(n)
    }

    /// At `'`: a char literal is blanked; a lifetime or label is kept as code.
    fn quote(&mut self) {
        let is_char =
            self.at(1) == Some('\\') || (self.at(2) == Some('\'') && self.at(1) != Some('\n'));
        self.keep();
        if !is_char {
            return;
        }
        while self.i < self.src.len() && self.src[self.i] != '\'' && self.src[self.i] != '\n' {
            if self.blank() == '\\' && self.i < self.src.len() {
                self.blank();
            }
        }
        if self.at(0) == Some('\'') {
            self.keep();
        }
    }
}

/// Scans `src` into code, comments and strings.
pub fn scan(src: &str) -> Scanned {
    let mut s = Scanner {
        src: src.chars().collect(),
        i: 0,
        line: 1,
        code: String::with_capacity(src.len()),
        comments: Vec::new(),
        strings: Vec::new(),
    };
    while s.i < s.src.len() {
        match (s.src[s.i], s.at(1)) {
            ('/', Some('/')) => s.line_comment(),
            ('/', Some('*')) => s.block_comment(),
            ('"', _) => s.string(None),
            ('\'', _) => s.quote(),
            ('r', _) => match s.raw_string_start() {
                Some(n) => {
                    for _ in 0..=n {
                        s.keep();
                    }
                    s.string(Some(n));
                    for _ in 0..n {
                        s.keep();
                    }
                }
                None => s.keep(),
            },
            _ => s.keep(),
        }
    }
    Scanned {
        code: s.code,
        comments: s.comments,
        strings: s.strings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_strings_are_separated_from_code() {
        let src = "let a = \"x // y\"; // note {\nlet b = r#\"q\"w\"#; /* c\n d */ let c = '{';\n";
        let s = scan(src);
        assert_eq!(
            s.comments,
            vec![
                (1, "// note {".to_string()),
                (2, "/* c".to_string()),
                (3, " d */".to_string())
            ]
        );
        assert_eq!(
            s.strings,
            vec![(1, "x // y".to_string()), (2, "q\"w".to_string())]
        );
        assert_eq!(s.code.lines().count(), 3);
        assert!(
            !s.code.contains('{'),
            "braces in strings, comments, chars are blanked"
        );
        assert!(s.code.contains("let c ="));
    }

    #[test]
    fn lifetimes_escapes_and_byte_strings() {
        let s = scan("fn f<'a>(x: &'a str) -> u8 { b'\"' + br\"}\"[0] }\nlet e = \"\\\"{\";");
        assert!(s.code.contains("fn f<'a>(x: &'a str)"));
        assert_eq!(s.code.matches('{').count(), 1);
        assert_eq!(
            s.strings,
            vec![(1, "}".to_string()), (2, "\\\"{".to_string())]
        );
        assert_eq!(line_of(&s.code, s.code.find("let e").unwrap()), 2);
        assert_eq!(s.code.lines().nth(1), Some("let e = \"   \";"));
    }

    #[test]
    fn raw_identifiers_are_not_raw_strings() {
        let s = scan("let r#type = 1; let for_r = \"s\";");
        assert_eq!(s.strings, vec![(1, "s".to_string())]);
        assert!(s.code.starts_with("let r#type = 1;"));
    }
}
