//! The in-process queue: delayed messages, visibility timeouts and redelivery, like SQS, in memory.
//! It does not outlive the process; local mode re-enqueues unfinished work from the store on start.

use crate::ports::queue::MAX_DELAY;
use crate::ports::{Delivery, Queue, QueueError};
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

struct Message {
    body: String,
    receive_count: u32,
    /// Bumped at each delivery; a heap entry or receipt of an older generation is stale.
    generation: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    messages: HashMap<u64, Message>,
    /// (visible at, id, generation)
    schedule: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryQueue")
    }
}

fn poisoned<T>(_: T) -> QueueError {
    QueueError::Unavailable("queue lock poisoned".into())
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages not yet acknowledged (visible or in flight).
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.messages.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` visible messages, or tells when the next one becomes visible.
    fn take(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<(Vec<Delivery>, Option<Instant>), QueueError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let now = Instant::now();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&Reverse((at, id, generation))) = s.schedule.peek() else {
                break;
            };
            if at > now {
                break;
            }
            s.schedule.pop();
            let Some(m) = s.messages.get_mut(&id) else {
                continue; // acknowledged
            };
            if m.generation != generation {
                continue; // stale entry
            }
            m.generation += 1;
            m.receive_count += 1;
            let delivery = Delivery {
                receipt: format!("{id}.{}", m.generation),
                body: m.body.clone(),
                receive_count: m.receive_count,
            };
            let next = m.generation;
            s.schedule.push(Reverse((now + visibility, id, next)));
            out.push(delivery);
        }
        let next = s.schedule.peek().map(|Reverse((at, ..))| *at);
        Ok((out, next))
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        {
            let mut s = self.state.lock().map_err(poisoned)?;
            let id = s.next_id;
            s.next_id += 1;
            s.messages.insert(
                id,
                Message {
                    body,
                    receive_count: 0,
                    generation: 0,
                },
            );
            s.schedule
                .push(Reverse((Instant::now() + delay.min(MAX_DELAY), id, 0)));
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let (out, next) = self.take(max.max(1), visibility)?;
            if !out.is_empty() {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let until = next.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let parsed = receipt
            .split_once('.')
            .and_then(|(id, g)| Some((id.parse::<u64>().ok()?, g.parse::<u64>().ok()?)));
        let Some((id, generation)) = parsed else {
            return Ok(());
        };
        let mut s = self.state.lock().map_err(poisoned)?;
        if s.messages
            .get(&id)
            .is_some_and(|m| m.generation == generation)
        {
            s.messages.remove(&id);
        }
        Ok(())
    }
}
