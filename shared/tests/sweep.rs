//! The sweep of stalled operations and webhook callbacks (`Broker::sweep`): it pages through the index
//! listings, works on a bounded number of items at once, skips an item that fails and goes on, touches a
//! callback it re-drives so the next sweeps leave it alone, and runs the callbacks sweep whatever the
//! operations sweep returned. Records are seeded straight into the store, their messages already lost.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Harness;
use osb_broker::broker::worker::{SWEEP_CONCURRENCY, SWEEP_PAGE, SweepCounts};
use osb_broker::contract::faults::FaultyStore;
use osb_broker::contract::store::{callback, operation};
use osb_broker::ports::{Clock, Queue, Record, Write};
use osb_broker::records::{CallbackState, OperationKey};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The harness on a fault-injecting wrapper of its store.
fn faulty() -> (Harness, Arc<FaultyStore>) {
    let mut slot = None;
    let h = Harness::wrapped(
        |backend| backend,
        |store| {
            let f = FaultyStore::new(store);
            slot = Some(f.clone());
            f
        },
    );
    (h, slot.unwrap())
}

fn id(n: usize) -> String {
    format!("op{n:04}")
}

/// `n` operations in progress, untouched since long ago (stalled), spread over tenants and instances.
async fn seed_operations(h: &Harness, n: usize) -> Vec<OperationKey> {
    seed(h, n, |tenant, instance, id| {
        Record::Operation(operation(tenant, instance, id))
    })
    .await
}

/// `n` pending callbacks, due since long ago (their message lost).
async fn seed_callbacks(h: &Harness, n: usize) -> Vec<OperationKey> {
    seed(h, n, |tenant, instance, id| {
        Record::Callback(callback(tenant, instance, id))
    })
    .await
}

async fn seed(h: &Harness, n: usize, make: fn(&str, &str, &str) -> Record) -> Vec<OperationKey> {
    let records: Vec<Record> = (0..n)
        .map(|i| make(["cf1", "cf2"][i % 2], &format!("i{}", i % 7), &id(i)))
        .collect();
    let mut keys = Vec::new();
    for chunk in records.chunks(50) {
        h.broker
            .store
            .commit(chunk.iter().cloned().map(Write::create).collect())
            .await
            .unwrap();
    }
    for r in records {
        keys.push(match r {
            Record::Operation(o) => o.key(),
            Record::Callback(c) => c.key(),
            _ => unreachable!(),
        });
    }
    keys.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
    keys
}

/// Every message waiting on a queue (received and acknowledged), sorted by operation id.
async fn drain(q: &Arc<dyn Queue>) -> Vec<OperationKey> {
    let mut keys: Vec<OperationKey> = Vec::new();
    loop {
        let got = q
            .receive(10, Duration::from_millis(10), Duration::from_secs(600))
            .await
            .unwrap();
        if got.is_empty() {
            keys.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
            return keys;
        }
        for d in got {
            q.ack(&d.receipt).await.unwrap();
            keys.push(serde_json::from_str(&d.body).unwrap());
        }
    }
}

fn counts(redriven: usize, failed: usize) -> SweepCounts {
    SweepCounts { redriven, failed }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_corrupt_operation_among_good_ones_when_swept_then_it_is_skipped_and_the_others_re_driven()
 {
    let (h, store) = faulty();
    let mut keys = seed_operations(&h, 5).await;
    let bad = keys.remove(2);
    store.corrupt.lock().unwrap().insert(bad);
    assert_eq!(h.broker.sweep_stalled().await.unwrap(), counts(4, 1));
    assert_eq!(drain(&h.broker.queue).await, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_corrupt_callback_among_good_ones_when_swept_then_it_is_skipped_and_the_others_re_driven()
 {
    let (h, store) = faulty();
    let mut keys = seed_callbacks(&h, 5).await;
    let bad = keys.remove(0);
    store.corrupt.lock().unwrap().insert(bad);
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(4, 1));
    assert_eq!(drain(&h.broker.webhook_queue).await, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_more_stalled_items_than_one_page_when_swept_then_every_page_is_read_a_bounded_page_at_a_time()
 {
    let (h, store) = faulty();
    let n = 2 * SWEEP_PAGE + 5;
    let ops = seed_operations(&h, n).await;
    let cbs = seed_callbacks(&h, n).await;
    let report = h.broker.sweep().await;
    assert_eq!(report.operations.unwrap(), counts(n, 0));
    assert_eq!(report.callbacks.unwrap(), counts(n, 0));
    assert!(
        store.pages.load(Ordering::SeqCst) >= 6,
        "three pages of each"
    );
    assert!(store.max_limit.load(Ordering::SeqCst) <= SWEEP_PAGE);
    assert_eq!(drain(&h.broker.queue).await, ops);
    assert_eq!(drain(&h.broker.webhook_queue).await, cbs);
    // The restart path pages the same way, and re-enqueues everything not final.
    assert_eq!(h.broker.resume_unfinished().await.unwrap(), counts(n, 0));
    assert_eq!(h.broker.resume_callbacks().await.unwrap(), counts(n, 0));
    assert_eq!(drain(&h.broker.queue).await, ops);
    assert_eq!(drain(&h.broker.webhook_queue).await, cbs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_slow_reads_when_swept_then_several_items_are_worked_on_at_once_within_the_bound() {
    let (h, store) = faulty();
    seed_operations(&h, 4 * SWEEP_CONCURRENCY).await;
    store.read_delay_ms.store(20, Ordering::SeqCst);
    assert_eq!(
        h.broker.sweep_stalled().await.unwrap(),
        counts(4 * SWEEP_CONCURRENCY, 0)
    );
    let most = store.max_in_flight.load(Ordering::SeqCst);
    assert!(
        most > 1 && most <= SWEEP_CONCURRENCY,
        "{most} reads at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_re_driven_callback_when_the_next_sweeps_run_then_it_is_not_sent_again_until_the_grace_is_over()
 {
    let h = Harness::new();
    let keys = seed_callbacks(&h, 1).await;
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(1, 0));
    assert_eq!(
        h.broker.sweep_callbacks().await.unwrap(),
        counts(0, 0),
        "right after"
    );
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(
        h.broker.sweep_callbacks().await.unwrap(),
        counts(0, 0),
        "a minute later"
    );
    assert_eq!(
        drain(&h.broker.webhook_queue).await,
        keys,
        "one message, not one a minute"
    );
    let stored = h
        .broker
        .store
        .get_callback(&keys[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.item.next_attempt_at, stored.version),
        (h.clock.now_ms() - 60_000, 2),
        "touched once, due when re-driven"
    );
    // That message was lost too: once the grace is over, the next sweep sends it again, once.
    h.clock.advance(Duration::from_secs(300));
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(1, 0));
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(0, 0));
    assert_eq!(drain(&h.broker.webhook_queue).await, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_sender_that_died_mid_attempt_when_swept_then_the_callback_is_re_driven_once_without_its_lease()
 {
    let h = Harness::new();
    let mut cb = callback("cf1", "i1", "op-sending");
    cb.state = CallbackState::Sending;
    cb.lease_until = Some(h.clock.now_ms() - 400_000);
    h.broker
        .store
        .commit(vec![Write::create(Record::Callback(cb.clone()))])
        .await
        .unwrap();
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(1, 0));
    assert_eq!(h.broker.sweep_callbacks().await.unwrap(), counts(0, 0));
    assert_eq!(drain(&h.broker.webhook_queue).await, vec![cb.key()]);
    let stored = h
        .broker
        .store
        .get_callback(&cb.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.item.lease_until, None);
    assert_eq!(stored.item.next_attempt_at, h.clock.now_ms());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_unreadable_operations_index_when_swept_then_the_callbacks_sweep_still_runs() {
    let (h, store) = faulty();
    seed_operations(&h, 2).await;
    let cbs = seed_callbacks(&h, 2).await;
    store.fail_operations_listing.store(true, Ordering::SeqCst);
    let report = h.broker.sweep().await;
    assert!(report.operations.is_err());
    assert_eq!(report.callbacks.unwrap(), counts(2, 0));
    assert_eq!(drain(&h.broker.webhook_queue).await, cbs);
    assert!(drain(&h.broker.queue).await.is_empty());
}
