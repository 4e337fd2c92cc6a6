//! TEMPORARY placeholder until the webhook-core branch merges.
pub mod policy;
pub mod schedule;
pub mod sign;
