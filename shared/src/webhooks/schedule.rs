//! When to try a webhook delivery again: the backoff schedule (webhooks.md §5), ±20 % jitter, the receiver's
//! `Retry-After` (clamped), and the horizon after which the broker gives up and the platform keeps polling.

use rand::Rng;
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// Delays before attempts 2..=10: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 8 h, 12 h (24 h 42 min 35 s in
/// all, nominal).
pub const DEFAULT_DELAYS_SECS: [u64; 9] = [5, 30, 120, 600, 1800, 3600, 10800, 28800, 43200];

/// 30 h: the nominal schedule (≈24.7 h) with +20 % jitter on every delay and 15 s per attempt is at most
/// ≈29.7 h, so the 10th attempt always fits; a `Retry-After` that stretched the early delays can push it out.
/// The SQS message retention must exceed this.
pub const DEFAULT_HORIZON_SECS: u64 = 30 * 3600;

/// The longest wait a receiver's `Retry-After` can ask for.
pub const DEFAULT_MAX_RETRY_AFTER_SECS: u64 = 3600;

/// The `[webhooks.retry]` config: every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before attempt `n + 2` at index `n`; its length + 1 is the most attempts made.
    pub delays_secs: Vec<u64>,
    /// Relative jitter: each delay is multiplied by a uniform factor in `[1 - jitter, 1 + jitter]`
    /// (clamped to 0..=0.9).
    pub jitter: f64,
    /// No attempt starts later than this after the first one.
    pub horizon_secs: u64,
    /// Upper bound for a receiver's `Retry-After`.
    pub max_retry_after_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays_secs: DEFAULT_DELAYS_SECS.to_vec(),
            jitter: 0.2,
            horizon_secs: DEFAULT_HORIZON_SECS,
            max_retry_after_secs: DEFAULT_MAX_RETRY_AFTER_SECS,
        }
    }
}

impl RetryPolicy {
    /// The most attempts this schedule makes (the first one plus one per delay).
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays_secs.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// How long to wait before the next attempt after `attempts_made` failed ones, or `None` to give up
    /// (schedule exhausted, or the next attempt would start after the horizon).
    ///
    /// The scheduled delay gets the jitter; a receiver's `retry_after` can lengthen it (never shorten it) up to
    /// `max_retry_after_secs`: the result is `max(jittered, min(retry_after, max_retry_after))`.
    /// `attempts_made == 0` means nothing was sent yet: `Some(0)`.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        elapsed_since_first: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if attempts_made == 0 {
            return Some(Duration::ZERO);
        }
        let index = usize::try_from(attempts_made - 1).ok()?;
        let scheduled = Duration::from_secs(*self.delays_secs.get(index)?);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 0.9)
        } else {
            0.0
        };
        let factor = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        let mut delay = scheduled.mul_f64(factor);
        if let Some(asked) = retry_after {
            let asked = asked.min(Duration::from_secs(self.max_retry_after_secs));
            delay = delay.max(asked);
        }
        let starts_at = elapsed_since_first.checked_add(delay)?;
        if starts_at > Duration::from_secs(self.horizon_secs) {
            return None;
        }
        Some(delay)
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date (IMF-fixdate, RFC 850 or asctime),
/// relative to `now`. A date in the past is `Some(0)`. Anything else is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate; the caller clamps anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn defaults_follow_the_research_schedule() {
        let p = RetryPolicy::default();
        assert_eq!(p.delays_secs, DEFAULT_DELAYS_SECS);
        assert_eq!(p.max_attempts(), 10);
        assert_eq!(p.jitter, 0.2);
        assert_eq!(p.max_retry_after_secs, 3600);
        let nominal: u64 = p.delays_secs.iter().sum();
        assert_eq!(nominal, 88_955);
        // Worst-case jitter plus 15 s per attempt still fits the horizon.
        assert!((nominal as f64 * 1.2) as u64 + 10 * 15 < p.horizon_secs);
        let parsed: RetryPolicy = toml::from_str("").unwrap();
        assert_eq!(parsed, p);
        let custom: RetryPolicy = toml::from_str("delays_secs = [1, 2]\njitter = 0.0").unwrap();
        assert_eq!(custom.max_attempts(), 3);
        assert!(toml::from_str::<RetryPolicy>("delay_secs = [1]").is_err());
    }

    #[test]
    fn without_jitter_the_schedule_is_exact_and_then_exhausted() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut r = rng();
        let mut elapsed = Duration::ZERO;
        for (i, want) in DEFAULT_DELAYS_SECS.iter().enumerate() {
            let attempts = u32::try_from(i + 1).unwrap();
            let d = p.next_delay(attempts, None, elapsed, &mut r).unwrap();
            assert_eq!(d, S(*want), "after attempt {attempts}");
            elapsed += d;
        }
        assert_eq!(p.next_delay(10, None, elapsed, &mut r), None);
        assert_eq!(p.next_delay(11, None, Duration::ZERO, &mut r), None);
        assert_eq!(p.next_delay(u32::MAX, None, Duration::ZERO, &mut r), None);
        assert_eq!(
            p.next_delay(0, None, Duration::ZERO, &mut r),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let p = RetryPolicy::default();
        let mut r = rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let d = p.next_delay(2, None, Duration::ZERO, &mut r).unwrap();
            assert!(d >= S(24) && d <= S(36), "{d:?}");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 50);
        // Deterministic for a seed.
        let a = p.next_delay(5, None, Duration::ZERO, &mut rng());
        let b = p.next_delay(5, None, Duration::ZERO, &mut rng());
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_and_is_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut r = rng();
        // Longer than scheduled: honoured.
        assert_eq!(
            p.next_delay(1, Some(S(7)), Duration::ZERO, &mut r),
            Some(S(7))
        );
        // Shorter than scheduled: the schedule wins.
        assert_eq!(
            p.next_delay(2, Some(S(7)), Duration::ZERO, &mut r),
            Some(S(30))
        );
        assert_eq!(
            p.next_delay(1, Some(S(0)), Duration::ZERO, &mut r),
            Some(S(5))
        );
        // Capped at max_retry_after.
        assert_eq!(
            p.next_delay(1, Some(S(86_400)), Duration::ZERO, &mut r),
            Some(S(3600))
        );
        // The schedule's own long delays stay above the cap.
        assert_eq!(
            p.next_delay(8, Some(S(10)), Duration::ZERO, &mut r),
            Some(S(28_800))
        );
        // With jitter, Retry-After is a floor.
        let j = RetryPolicy::default();
        for _ in 0..100 {
            let d = j.next_delay(1, Some(S(7)), Duration::ZERO, &mut r).unwrap();
            assert!(d >= S(7) && d <= S(7), "{d:?}");
        }
    }

    #[test]
    fn gives_up_past_the_horizon() {
        let p = RetryPolicy {
            jitter: 0.0,
            horizon_secs: 100,
            ..RetryPolicy::default()
        };
        let mut r = rng();
        assert_eq!(p.next_delay(2, None, S(70), &mut r), Some(S(30)));
        assert_eq!(p.next_delay(2, None, S(71), &mut r), None);
        assert_eq!(p.next_delay(1, Some(S(3600)), S(0), &mut r), None);
        assert_eq!(p.next_delay(1, None, Duration::MAX, &mut r), None);
    }

    #[test]
    fn odd_jitter_values_are_tamed() {
        let mut r = rng();
        for jitter in [f64::NAN, f64::INFINITY, -1.0] {
            let p = RetryPolicy {
                jitter,
                ..RetryPolicy::default()
            };
            assert_eq!(
                p.next_delay(1, None, Duration::ZERO, &mut r),
                Some(S(5)),
                "{jitter}"
            );
        }
        let p = RetryPolicy {
            jitter: 5.0,
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let d = p.next_delay(1, None, Duration::ZERO, &mut r).unwrap();
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(9500));
        }
    }

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::UNIX_EPOCH + S(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(S(7)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(S(120)));
        assert_eq!(parse_retry_after("0", now), Some(S(0)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(S(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(S(60))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now),
            Some(S(120))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(S(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(S(0))
        );
        for bad in ["", " ", "-1", "1.5", "7s", "soon", "Sun, 06 Nov 1994", "+7"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
