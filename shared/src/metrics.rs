//! The broker's metrics, one set per process: requests by endpoint and status class, operation durations by
//! kind, plan and outcome, webhook attempts by outcome, sweep re-drives, backend errors by backend. Labels are
//! bounded by construction: route templates (never a path with ids), status classes, catalog plan ids,
//! enumerated outcomes; no instance, binding or operation id is ever a label.
//!
//! Two renderings of the same counters: the Prometheus text format (local mode: `GET /metrics` on the admin
//! listener) and CloudWatch Embedded Metric Format lines (Lambda: `flush_emf` after each invocation prints
//! what changed since the last flush, to stdout, which CloudWatch Logs turns into metrics).
//!
//! Hand-written on purpose: a few counters and one histogram family, rendered two ways from one store; the
//! metrics crates render one format each, and the API Lambda package has no room to spare.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the operation duration histogram.
pub const DURATION_BUCKETS: [f64; 10] =
    [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0];

/// CloudWatch namespace of the EMF metrics.
pub const EMF_NAMESPACE: &str = "OsbBroker";

#[derive(Debug, Default, Clone, PartialEq)]
struct Histogram {
    /// Count per bucket of `DURATION_BUCKETS` (not cumulative), plus one for `+Inf`.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let at = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[at] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// (endpoint template, method, status class "2xx".."5xx")
    requests: BTreeMap<(String, String, &'static str), u64>,
    /// (kind, plan id, outcome)
    operations: BTreeMap<(&'static str, String, &'static str), Histogram>,
    /// attempt outcome
    webhook_attempts: BTreeMap<String, u64>,
    /// "operations" | "callbacks"
    sweep_redrives: BTreeMap<&'static str, u64>,
    /// backend name
    backend_errors: BTreeMap<&'static str, u64>,
}

/// The process's metrics: totals since start (Prometheus) and what changed since the last EMF flush.
#[derive(Debug, Default)]
pub struct Metrics {
    total: Mutex<Counts>,
    since_flush: Mutex<Counts>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    fn both(&self, f: impl Fn(&mut Counts)) {
        for m in [&self.total, &self.since_flush] {
            if let Ok(mut c) = m.lock() {
                f(&mut c);
            }
        }
    }

    /// One answered request: `endpoint` is the route template (`/v2/service_instances/{instance_id}`) or
    /// `unmatched`.
    pub fn request(&self, endpoint: &str, method: &str, status: u16) {
        let key = (endpoint.to_owned(), method.to_owned(), status_class(status));
        self.both(|c| *c.requests.entry(key.clone()).or_default() += 1);
    }

    /// One operation made final: its kind, plan, outcome (`succeeded` / `failed`) and duration.
    pub fn operation(&self, kind: &'static str, plan_id: &str, outcome: &'static str, secs: f64) {
        let key = (kind, plan_id.to_owned(), outcome);
        self.both(|c| c.operations.entry(key.clone()).or_default().observe(secs));
    }

    /// One webhook delivery attempt and its outcome (`ok`, `http_status`, `timeout`, …).
    pub fn webhook_attempt(&self, outcome: &str) {
        self.both(|c| *c.webhook_attempts.entry(outcome.to_owned()).or_default() += 1);
    }

    /// One item the sweep re-drove (`operations` or `callbacks`).
    pub fn sweep_redrive(&self, listing: &'static str) {
        self.both(|c| *c.sweep_redrives.entry(listing).or_default() += 1);
    }

    /// One backend call that failed with an error (not an operation the backend reported failed).
    pub fn backend_error(&self, backend: &'static str) {
        self.both(|c| *c.backend_errors.entry(backend).or_default() += 1);
    }

    /// The totals in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let Ok(c) = self.total.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str("# HELP osb_requests_total OSB and admin requests answered, by route template and status class.\n# TYPE osb_requests_total counter\n");
        for ((endpoint, method, class), n) in &c.requests {
            let _ = writeln!(
                out,
                "osb_requests_total{{endpoint=\"{}\",method=\"{}\",status=\"{class}\"}} {n}",
                esc(endpoint),
                esc(method)
            );
        }
        out.push_str("# HELP osb_operation_duration_seconds Operations made final, from start to final commit.\n# TYPE osb_operation_duration_seconds histogram\n");
        for ((kind, plan, outcome), h) in &c.operations {
            let labels = format!(
                "kind=\"{kind}\",plan_id=\"{}\",outcome=\"{outcome}\"",
                esc(plan)
            );
            let mut cumulative = 0;
            for (i, b) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i];
                let _ = writeln!(
                    out,
                    "osb_operation_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "osb_operation_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "osb_operation_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "osb_operation_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP osb_webhook_attempts_total Webhook delivery attempts by outcome.\n# TYPE osb_webhook_attempts_total counter\n");
        for (outcome, n) in &c.webhook_attempts {
            let _ = writeln!(
                out,
                "osb_webhook_attempts_total{{outcome=\"{}\"}} {n}",
                esc(outcome)
            );
        }
        out.push_str("# HELP osb_sweep_redrives_total Operations and callbacks the sweep sent again.\n# TYPE osb_sweep_redrives_total counter\n");
        for (listing, n) in &c.sweep_redrives {
            let _ = writeln!(out, "osb_sweep_redrives_total{{listing=\"{listing}\"}} {n}");
        }
        out.push_str("# HELP osb_backend_errors_total Backend calls that failed with an error, by backend.\n# TYPE osb_backend_errors_total counter\n");
        for (backend, n) in &c.backend_errors {
            let _ = writeln!(out, "osb_backend_errors_total{{backend=\"{backend}\"}} {n}");
        }
        out
    }

    /// What changed since the last flush as CloudWatch Embedded Metric Format documents (one JSON line
    /// each, one per dimension set), and resets that change. `function` is the Lambda function's role
    /// (`api`, `worker`, `webhooks`), a dimension of every metric.
    pub fn take_emf(&self, function: &str, now_ms: i64) -> Vec<String> {
        let Ok(mut guard) = self.since_flush.lock() else {
            return Vec::new();
        };
        let c = std::mem::take(&mut *guard);
        drop(guard);
        // Each document's metrics under two dimension sets: every dimension, and `rollup` alone (what the
        // template's alarms watch, whatever the function, endpoint or plan).
        let doc = |dims: &[(&str, &str)], rollup: &[&str], metrics: &[(&str, &str, f64)]| {
            let mut d = serde_json::Map::new();
            let mut names: Vec<&str> = vec!["Function"];
            d.insert("Function".into(), function.into());
            for (k, v) in dims {
                names.push(k);
                d.insert((*k).into(), (*v).into());
            }
            let defs: Vec<serde_json::Value> = metrics
                .iter()
                .map(|(name, unit, value)| {
                    d.insert((*name).into(), serde_json::json!(value));
                    serde_json::json!({"Name": name, "Unit": unit})
                })
                .collect();
            d.insert(
                "_aws".into(),
                serde_json::json!({
                    "Timestamp": now_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [names, rollup],
                        "Metrics": defs,
                    }],
                }),
            );
            serde_json::Value::Object(d).to_string()
        };
        let mut out = Vec::new();
        for ((endpoint, method, class), n) in &c.requests {
            out.push(doc(
                &[
                    ("Endpoint", endpoint),
                    ("Method", method),
                    ("StatusClass", class),
                ],
                &["StatusClass"],
                &[("Requests", "Count", *n as f64)],
            ));
        }
        for ((kind, plan, outcome), h) in &c.operations {
            out.push(doc(
                &[("Kind", kind), ("PlanId", plan), ("Outcome", outcome)],
                &["Outcome"],
                &[
                    ("Operations", "Count", h.count as f64),
                    ("OperationSeconds", "Seconds", h.sum / h.count.max(1) as f64),
                ],
            ));
        }
        for (outcome, n) in &c.webhook_attempts {
            out.push(doc(
                &[("Outcome", outcome)],
                &["Outcome"],
                &[("WebhookAttempts", "Count", *n as f64)],
            ));
        }
        for (listing, n) in &c.sweep_redrives {
            out.push(doc(
                &[("Listing", listing)],
                &["Listing"],
                &[("SweepRedrives", "Count", *n as f64)],
            ));
        }
        for (backend, n) in &c.backend_errors {
            out.push(doc(
                &[("Backend", backend)],
                &["Backend"],
                &[("BackendErrors", "Count", *n as f64)],
            ));
        }
        out
    }

    /// Prints `take_emf` to stdout, one line per document (Lambda: CloudWatch Logs extracts the metrics).
    pub fn flush_emf(&self, function: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        for line in self.take_emf(function, now) {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_bounded_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v2/service_instances/{instance_id}", "PUT", 201);
        m.request("/v2/service_instances/{instance_id}", "PUT", 201);
        m.request("/v2/catalog", "GET", 412);
        m.operation("provision", "plan-1", "succeeded", 0.03);
        m.operation("provision", "plan-1", "succeeded", 7.0);
        m.webhook_attempt("http_status");
        m.sweep_redrive("operations");
        m.backend_error("postgresql");
        let text = m.prometheus();
        assert!(text.contains(
            "osb_requests_total{endpoint=\"/v2/service_instances/{instance_id}\",method=\"PUT\",status=\"2xx\"} 2"
        ), "{text}");
        assert!(text.contains("status=\"4xx\"} 1"), "{text}");
        let labels = "kind=\"provision\",plan_id=\"plan-1\",outcome=\"succeeded\"";
        assert!(text.contains(&format!(
            "osb_operation_duration_seconds_bucket{{{labels},le=\"0.01\"}} 0"
        )));
        assert!(text.contains(&format!(
            "osb_operation_duration_seconds_bucket{{{labels},le=\"0.05\"}} 1"
        )));
        assert!(text.contains(&format!(
            "osb_operation_duration_seconds_bucket{{{labels},le=\"30\"}} 2"
        )));
        assert!(text.contains(&format!(
            "osb_operation_duration_seconds_count{{{labels}}} 2"
        )));
        assert!(text.contains("osb_webhook_attempts_total{outcome=\"http_status\"} 1"));
        assert!(text.contains("osb_sweep_redrives_total{listing=\"operations\"} 1"));
        assert!(text.contains("osb_backend_errors_total{backend=\"postgresql\"} 1"));
    }

    #[test]
    fn emf_documents_carry_what_changed_since_the_last_flush() {
        let m = Metrics::default();
        m.request("/v2/catalog", "GET", 200);
        m.operation("bind", "p", "failed", 2.0);
        let docs: Vec<serde_json::Value> = m
            .take_emf("api", 1_700_000_000_000)
            .iter()
            .map(|l| serde_json::from_str(l).expect("an EMF line is JSON"))
            .collect();
        assert_eq!(docs.len(), 2);
        let req = &docs[0];
        assert_eq!(req["Requests"], 1.0);
        assert_eq!(req["Function"], "api");
        assert_eq!(req["StatusClass"], "2xx");
        let cw = &req["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], EMF_NAMESPACE);
        assert_eq!(
            cw["Dimensions"],
            serde_json::json!([
                ["Function", "Endpoint", "Method", "StatusClass"],
                ["StatusClass"]
            ])
        );
        assert_eq!(
            cw["Metrics"][0],
            serde_json::json!({"Name": "Requests", "Unit": "Count"})
        );
        assert_eq!(req["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(docs[1]["Operations"], 1.0);
        assert_eq!(docs[1]["OperationSeconds"], 2.0);
        // Flushed: nothing new, nothing printed; the Prometheus totals stay.
        assert!(m.take_emf("api", 0).is_empty());
        assert!(m.prometheus().contains("status=\"2xx\"} 1"));
    }
}
