//! The chaos soak (a benchmark, not part of the test command): the randomized invariant run of
//! `e2e::chaos` for longer, with more clients. Prints requests/s, kills survived and violations found
//! (must be 0); exits 1 on a violation.
//!
//! `cargo run -p e2e --bin chaos-soak -- [seconds] [clients per tenant]` (default 300 s, 3 clients of each
//! of cf1, cf2, ks2); `CHAOS_SEED=n` replays a seed.

use e2e::chaos::{ChaosConfig, run};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let seed = ChaosConfig::seed_from_env();
    println!("chaos soak: {seconds} s, {clients} clients per tenant, seed {seed}");
    let r = run(ChaosConfig {
        seed,
        duration: Duration::from_secs(seconds),
        tenants: vec!["cf1", "cf2", "ks2"],
        clients_per_tenant: clients,
        instances_per_client: 4,
        bindings_per_instance: 3,
        kill_every_ms: (1000, 5000),
    })
    .await;
    println!(
        "requests:            {} ({:.0}/s)",
        r.requests,
        r.requests_per_sec()
    );
    println!("unanswered (down):   {}", r.unanswered);
    println!("kills survived:      {}", r.kills);
    println!(
        "webhooks delivered:  {} of {}",
        r.webhooks_delivered, r.webhooks_expected
    );
    println!("ledger entries:      {}", r.ledger_entries);
    println!("violations:          {}", r.violations.len());
    for v in &r.violations {
        println!("  {v}");
    }
    if !r.violations.is_empty() {
        std::process::exit(1);
    }
}
