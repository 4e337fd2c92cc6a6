//! The worker Lambda (SQS event source): completes asynchronous operations. Wiring only; the logic is
//! `osb_broker::broker::worker`.

fn main() {}
