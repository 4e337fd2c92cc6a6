//! Contract suites for the store and queue ports. Every adapter runs the same cases; adding an adapter
//! is one line in its test file:
//!
//! ```ignore
//! osb_broker::store_contract!(async { Arc::new(MyStore::new().await) as Arc<dyn Store> });
//! osb_broker::queue_contract!(async { Arc::new(MyQueue::new().await) as Arc<dyn Queue> });
//! ```

pub mod backend;
pub mod faults;
pub mod queue;
pub mod store;

/// Expands to one `#[tokio::test]` per store contract case; `$factory` is an expression giving a future
/// of a fresh, empty `Arc<dyn Store>`.
#[macro_export]
macro_rules! store_contract {
    ($factory:expr) => {
        $crate::store_contract!(@cases $factory;
            created_records_read_back_at_version_one,
            expectations_guard_every_write,
            a_failed_batch_writes_nothing,
            bindings_are_listed_per_instance_only,
            tenants_do_not_share_ids,
            unfinished_operations_are_listed_until_final,
            concurrent_writers_of_one_version_have_one_winner,
            callbacks_round_trip_and_are_pending_until_final,
            index_listings_page_through_more_keys_than_one_page,
            sharing_records_are_read_by_key_in_one_batch,
            a_lease_and_an_owner_delete_racing_have_one_winner,
            the_inventory_lists_a_tenants_records_of_one_kind_newest_first,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::store::$case($factory.await).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per queue contract case; `$factory` is an expression giving a future
/// of a fresh, empty `Arc<dyn Queue>`.
#[macro_export]
macro_rules! queue_contract {
    ($factory:expr) => {
        $crate::queue_contract!(@cases $factory;
            sent_messages_are_received_once_acknowledged,
            delayed_messages_stay_invisible_until_due,
            unacknowledged_messages_come_back_after_visibility_timeout,
            receive_returns_at_most_max,
            receive_on_an_empty_queue_waits_then_returns_nothing,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::queue::$case($factory.await).await;
            }
        )*
    };
}
