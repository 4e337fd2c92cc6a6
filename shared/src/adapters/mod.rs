//! Embedded adapters of the ports, first-class for local mode: SQLite store, in-process queue.

pub mod memqueue;
pub mod sqlite;

pub use memqueue::MemoryQueue;
pub use sqlite::SqliteStore;
