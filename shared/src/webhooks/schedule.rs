//! TEMPORARY placeholder.
use std::time::Duration;
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RetryPolicy {}
impl RetryPolicy {
    pub fn next_delay(
        &self,
        _attempts_made: u32,
        _retry_after: Option<Duration>,
        _elapsed: Duration,
        _rng: &mut impl rand::Rng,
    ) -> Option<Duration> {
        None
    }
}
