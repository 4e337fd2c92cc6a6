//! The domain crate of the serverless Open Service Broker: the OSB model, catalog, tenants, instances,
//! bindings and operations, the ports the domain needs, the embedded adapters, and the one HTTP router.

pub mod adapters;
#[cfg(feature = "aws")]
pub mod aws;
pub mod backends;
pub mod broker;
pub mod catalog;
pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod records;
pub mod sealing;
pub mod sharing;
pub mod tenants;
pub mod webhooks;

/// Contract suites every store and queue adapter must pass (see `store_contract!`, `queue_contract!`).
pub mod contract;
