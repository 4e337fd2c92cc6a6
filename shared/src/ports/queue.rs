//! The queue port: at-least-once delivery of small text messages with a per-message delay and a
//! visibility timeout, as SQS offers it. Every adapter passes `contract::queue`.

use async_trait::async_trait;
use std::time::Duration;

/// The longest delay a queue accepts (SQS's 15 minutes). Longer waits re-enqueue.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Handle to acknowledge this delivery with.
    pub receipt: String,
    pub body: String,
    /// 1 on first delivery, +1 on each redelivery.
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends a message that becomes visible after `delay` (clamped to `MAX_DELAY`).
    async fn send(&self, body: String, delay: Duration) -> Result<(), QueueError>;

    /// Waits up to `wait` for visible messages and returns at most `max`. Each stays invisible for
    /// `visibility`; unless acknowledged by then, it is delivered again.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Removes a delivered message for good.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;
}
