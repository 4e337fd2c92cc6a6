//! The randomized invariant run (`e2e::chaos`), short and bounded: two tenants, two clients each, the
//! broker killed with SIGKILL every 0.7–2 s for 20 s. The seed is printed (and `CHAOS_SEED` replays it).
//! The soak, longer, is the `chaos-soak` benchmark (docs/benchmarks.md).

use e2e::chaos::{ChaosConfig, run};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_with_kills_and_restarts_keep_every_invariant() {
    let seed = ChaosConfig::seed_from_env();
    println!("chaos seed: {seed} (replay with CHAOS_SEED={seed})");
    let report = tokio::time::timeout(
        Duration::from_secs(240),
        run(ChaosConfig {
            seed,
            duration: Duration::from_secs(20),
            tenants: vec!["cf1", "cf2"],
            clients_per_tenant: 2,
            instances_per_client: 3,
            bindings_per_instance: 3,
            kill_every_ms: (700, 2000),
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the chaos run did not end (seed {seed})"));
    println!(
        "chaos: {} requests ({:.0}/s), {} unanswered, {} kills, {} webhooks expected / {} delivered, {} ledger entries",
        report.requests,
        report.requests_per_sec(),
        report.unanswered,
        report.kills,
        report.webhooks_expected,
        report.webhooks_delivered,
        report.ledger_entries
    );
    assert!(report.kills >= 5, "too few kills: {}", report.kills);
    assert!(
        report.requests >= 100,
        "too few requests: {}",
        report.requests
    );
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {} violations:\n{}",
        report.violations.len(),
        report.violations.join("\n")
    );
}
