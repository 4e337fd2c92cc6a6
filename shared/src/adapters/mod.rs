//! Embedded adapters of the ports, first-class for local mode: SQLite store (feature `embedded`),
//! in-process queue, the local record-key sealer.

pub mod local_key;
pub mod memqueue;
#[cfg(feature = "embedded")]
pub mod sqlite;

pub use memqueue::MemoryQueue;
#[cfg(feature = "embedded")]
pub use sqlite::SqliteStore;
