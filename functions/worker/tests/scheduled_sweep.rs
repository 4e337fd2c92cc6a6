//! The scheduled sweep event on the embedded store (no emulator): the webhook callbacks sweep runs even
//! when the operations sweep fails, and the invocation then fails (the errors alarm sees it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osb_broker::config::BrokerConfig;
use osb_broker::contract::faults::FaultyStore;
use osb_broker::contract::store::callback;
use osb_broker::ports::{Clock, Queue, Record, SystemClock, Write};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn scheduled_event() -> Value {
    let path = format!(
        "{}/fixtures/scheduled-sweep-event.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The embedded broker on a fault-injecting wrapper of its store, with one callback whose message was
/// lost long ago.
async fn broker_with_a_lost_callback() -> (
    Arc<osb_broker::broker::Broker>,
    Arc<FaultyStore>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let embedded = osb_broker::embedded::build(&cfg, Arc::new(SystemClock)).unwrap();
    let mut broker = (*embedded.broker).clone();
    let store = FaultyStore::new(broker.store.clone());
    broker.store = store.clone();
    broker
        .store
        .commit(vec![Write::create(Record::Callback(callback(
            "cf1", "i1", "op-lost",
        )))])
        .await
        .unwrap();
    assert!(SystemClock.now_ms() > 600_000, "due long ago");
    (Arc::new(broker), store, dir)
}

async fn webhook_messages(q: &Arc<dyn Queue>) -> usize {
    q.receive(10, Duration::from_millis(50), Duration::from_secs(60))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_re_drives_callbacks_even_when_the_operations_sweep_fails() {
    let (broker, store, _dir) = broker_with_a_lost_callback().await;
    store.fail_operations_listing.store(true, Ordering::SeqCst);
    let out = osb_worker::handle_event(broker.clone(), scheduled_event()).await;
    assert!(out.is_err(), "the invocation reports the failed sweep");
    assert_eq!(webhook_messages(&broker.webhook_queue).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_answers_both_counts_and_skips_what_fails() {
    let (broker, store, _dir) = broker_with_a_lost_callback().await;
    let mut bad = callback("cf1", "i2", "op-corrupt");
    bad.next_attempt_at = 1;
    broker
        .store
        .commit(vec![Write::create(Record::Callback(bad.clone()))])
        .await
        .unwrap();
    store.corrupt.lock().unwrap().insert(bad.key());
    let out = osb_worker::handle_event(broker.clone(), scheduled_event())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"redriven": 0, "failed": 0, "callbacks_redriven": 1, "callbacks_failed": 1})
    );
    assert_eq!(webhook_messages(&broker.webhook_queue).await, 1);
}
