//! The queue contract: what every `Queue` adapter must do. Cases panic on violation (they are tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ports::Queue;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// Receives until `n` messages arrived or `within` passed.
async fn receive_n(q: &dyn Queue, n: usize, within: Duration) -> Vec<crate::ports::Delivery> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(
            q.receive(n - out.len(), Duration::from_millis(500), LONG)
                .await
                .unwrap(),
        );
    }
    out
}

pub async fn sent_messages_are_received_once_acknowledged(q: Arc<dyn Queue>) {
    q.send("one".into(), Duration::ZERO).await.unwrap();
    q.send("two".into(), Duration::ZERO).await.unwrap();
    let got = receive_n(q.as_ref(), 2, Duration::from_secs(10)).await;
    let bodies: HashSet<_> = got.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, HashSet::from(["one", "two"]));
    assert!(got.iter().all(|d| d.receive_count == 1));
    for d in &got {
        q.ack(&d.receipt).await.unwrap();
    }
    let again = q
        .receive(10, Duration::from_millis(300), LONG)
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "acknowledged messages came back: {again:?}"
    );
}

pub async fn delayed_messages_stay_invisible_until_due(q: Arc<dyn Queue>) {
    let sent = Instant::now();
    q.send("later".into(), Duration::from_secs(2))
        .await
        .unwrap();
    let early = q
        .receive(10, Duration::from_millis(500), LONG)
        .await
        .unwrap();
    assert!(early.is_empty(), "delayed message delivered early");
    let got = receive_n(q.as_ref(), 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
    assert!(
        sent.elapsed() >= Duration::from_millis(1900),
        "delivered after {:?}",
        sent.elapsed()
    );
    q.ack(&got[0].receipt).await.unwrap();
}

pub async fn unacknowledged_messages_come_back_after_visibility_timeout(q: Arc<dyn Queue>) {
    q.send("retry me".into(), Duration::ZERO).await.unwrap();
    let first = loop {
        let d = q
            .receive(1, Duration::from_secs(1), Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(d) = d.into_iter().next() {
            break d;
        }
    };
    assert_eq!(first.receive_count, 1);
    let hidden = q
        .receive(1, Duration::from_millis(200), LONG)
        .await
        .unwrap();
    assert!(
        hidden.is_empty(),
        "message visible during its visibility timeout"
    );
    let again = receive_n(q.as_ref(), 1, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1, "message not redelivered");
    assert_eq!(again[0].body, "retry me");
    assert_eq!(again[0].receive_count, 2);
    q.ack(&again[0].receipt).await.unwrap();
    let none = q
        .receive(1, Duration::from_millis(300), LONG)
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn receive_returns_at_most_max(q: Arc<dyn Queue>) {
    for n in 0..5 {
        q.send(format!("m{n}"), Duration::ZERO).await.unwrap();
    }
    let got = q.receive(2, Duration::from_secs(2), LONG).await.unwrap();
    assert!(!got.is_empty() && got.len() <= 2, "got {}", got.len());
    let rest = receive_n(q.as_ref(), 5 - got.len(), Duration::from_secs(10)).await;
    let all: HashSet<_> = got
        .iter()
        .chain(rest.iter())
        .map(|d| d.body.clone())
        .collect();
    assert_eq!(all.len(), 5);
    for d in got.iter().chain(rest.iter()) {
        q.ack(&d.receipt).await.unwrap();
    }
}

pub async fn receive_on_an_empty_queue_waits_then_returns_nothing(q: Arc<dyn Queue>) {
    let start = Instant::now();
    let got = q
        .receive(10, Duration::from_millis(500), LONG)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "receive did not honour its wait"
    );
}
