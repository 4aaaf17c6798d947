//! Mass-change breakers: a pure decision on whether a source's new set may replace the current
//! one. A poisoned or broken MISP shows up as a sudden mass deletion (an empty or truncated
//! answer) or a flood of additions; both are held for an operator (`mispctl release`).

/// Limits; see [`super::Settings`] for the defaults and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerLimits {
    /// Hold when more than this many indicators would be added in one sync (any set size).
    pub max_added: usize,
    /// Hold when additions exceed this percentage of the current set...
    pub max_added_percent: u32,
    /// Hold when removals exceed this percentage of the current set...
    pub max_removed_percent: u32,
    /// ...but only once the change is larger than this many indicators, so small sets can grow
    /// and shrink freely.
    pub floor: usize,
}

impl Default for BreakerLimits {
    fn default() -> Self {
        BreakerLimits {
            max_added: 500_000,
            max_added_percent: 1000,
            max_removed_percent: 50,
            floor: 100,
        }
    }
}

/// What to do with a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakerVerdict {
    Apply,
    Hold { reason: String },
}

/// Decide on a change from `current` indicators, adding `added` and removing `removed`.
/// A change that empties a source that had data is always held.
pub fn judge_change(
    current: usize,
    added: usize,
    removed: usize,
    limits: &BreakerLimits,
) -> BreakerVerdict {
    let hold = |reason: String| BreakerVerdict::Hold { reason };
    let after = (current + added).saturating_sub(removed);
    if current > 0 && after == 0 {
        return hold(format!(
            "the new set is empty where {current} indicators were served"
        ));
    }
    if added > limits.max_added {
        return hold(format!(
            "{added} additions exceed max-added ({})",
            limits.max_added
        ));
    }
    let pct = |n: usize| (n as u128 * 100).div_ceil(current.max(1) as u128);
    if current > 0
        && removed > limits.floor
        && removed as u128 * 100 > current as u128 * limits.max_removed_percent as u128
    {
        return hold(format!(
            "{removed} of {current} indicators removed ({}%), above max-removed-percent ({}%)",
            pct(removed),
            limits.max_removed_percent
        ));
    }
    if current > 0
        && added > limits.floor
        && added as u128 * 100 > current as u128 * limits.max_added_percent as u128
    {
        return hold(format!(
            "{added} additions to {current} indicators ({}%), above max-added-percent ({}%)",
            pct(added),
            limits.max_added_percent
        ));
    }
    BreakerVerdict::Apply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(c: usize, a: usize, r: usize) -> BreakerVerdict {
        judge_change(c, a, r, &BreakerLimits::default())
    }
    fn held(v: BreakerVerdict) -> String {
        match v {
            BreakerVerdict::Hold { reason } => reason,
            BreakerVerdict::Apply => panic!("expected a hold"),
        }
    }

    #[test]
    fn empty_set_is_always_held() {
        assert!(held(j(1, 0, 1)).contains("empty"));
        assert!(held(j(60_000, 0, 60_000)).contains("empty"));
        let lax = BreakerLimits {
            max_removed_percent: 100,
            floor: usize::MAX,
            ..Default::default()
        };
        assert!(matches!(
            judge_change(5, 0, 5, &lax),
            BreakerVerdict::Hold { .. }
        ));
    }

    #[test]
    fn removals() {
        assert_eq!(j(60_000, 0, 30_000), BreakerVerdict::Apply);
        assert!(held(j(60_000, 0, 30_001)).contains("max-removed-percent"));
        // tiny sets shrink freely until the floor
        assert_eq!(j(150, 0, 100), BreakerVerdict::Apply);
        assert!(held(j(150, 0, 101)).contains("101 of 150"));
    }

    #[test]
    fn additions() {
        assert_eq!(j(0, 61_000, 0), BreakerVerdict::Apply, "first sync");
        assert!(held(j(0, 600_000, 0)).contains("max-added"));
        assert_eq!(j(10, 100, 0), BreakerVerdict::Apply, "below the floor");
        assert_eq!(
            j(1000, 10_000, 0),
            BreakerVerdict::Apply,
            "1000% is the limit"
        );
        assert!(held(j(1000, 10_001, 0)).contains("max-added-percent"));
        assert_eq!(j(60_000, 500, 400), BreakerVerdict::Apply, "ordinary churn");
    }
}
