//! The upstream backend against a scripted upstream broker (a small axum server on loopback, in this test):
//! the faults a real broker rarely produces on demand. Each orphan-mitigation row of the OSB spec checks
//! whether the upstream received the DELETE; the forwarding rules check what each request carried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use osb_broker::backends::upstream::{UpstreamBackend, UpstreamConfig, import};
use osb_broker::catalog::{Catalog, CatalogConfig};
use osb_broker::identity::OriginatingIdentity;
use osb_broker::ids::{BindingId, InstanceId, OperationId};
use osb_broker::ports::backend::Done;
use osb_broker::ports::{Backend, BackendJob, BackendOutcome};
use osb_broker::records::OperationKind;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PLAN: &str = "our-plan";

/// One request the scripted upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Option<Value>,
}

/// What the scripted upstream answers.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    retry_after: Option<u64>,
    delay: Duration,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        retry_after: None,
        delay: Duration::ZERO,
    }
}

fn raw(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.into(),
        retry_after: None,
        delay: Duration::ZERO,
    }
}

type Script = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Serves `script(request, number of earlier requests with the same method and path)`.
    async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Upstream {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Script = Arc::new(script);
        let (log, s) = (seen.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (log, s) = (log.clone(), s.clone());
                async move {
                    let req = Seen {
                        method,
                        path: uri.path().to_owned(),
                        query: uri.query().unwrap_or_default().to_owned(),
                        headers,
                        body: serde_json::from_slice(&body).ok(),
                    };
                    let n = {
                        let mut l = log.lock().unwrap();
                        let n = l
                            .iter()
                            .filter(|r| r.method == req.method && r.path == req.path)
                            .count();
                        l.push(req.clone());
                        n
                    };
                    let r = s(&req, n);
                    tokio::time::sleep(r.delay).await;
                    let mut resp: Response = (
                        StatusCode::from_u16(r.status).unwrap(),
                        [("content-type", "application/json")],
                        r.body,
                    )
                        .into_response();
                    if let Some(ra) = r.retry_after {
                        resp.headers_mut()
                            .insert("retry-after", ra.to_string().parse().unwrap());
                    }
                    resp
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn deletes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|r| r.method == Method::DELETE)
            .collect()
    }
}

fn backend_for(url: &str, extra: &str) -> UpstreamBackend {
    let cfg: UpstreamConfig = toml::from_str(&format!(
        "url = '{url}'\nusername = 'proxy'\npassword = 'upstream-pw'\nrequest_timeout_ms = 500\nconnect_timeout_ms = 500\nsync_wait_seconds = 5\n{extra}"
    ))
    .unwrap();
    let catalog: CatalogConfig = serde_json::from_value(json!({"services": [{
        "id": "our-svc", "name": "db", "description": "d", "bindable": true,
        "plans": [{"id": PLAN, "name": "p", "description": "d",
            "backend": {"type": "upstream", "broker": "up", "service_id": "up-svc", "plan_id": "up-plan"}}]}]}))
    .unwrap();
    UpstreamBackend::new(
        Arc::new(Catalog::new(catalog).unwrap()),
        cfg.validate("up").unwrap(),
    )
    .unwrap()
}

fn job(kind: OperationKind, accepts_incomplete: bool) -> BackendJob {
    BackendJob {
        kind,
        operation_id: OperationId::parse("01JF0000000000000000000001").unwrap(),
        tenant: "cf".into(),
        instance_id: InstanceId::parse("i-1").unwrap(),
        generation: 1,
        binding_id: kind.is_binding().then(|| BindingId::parse("b-1").unwrap()),
        binding_generation: if kind.is_binding() { 1 } else { 0 },
        lease: None,
        service_id: "our-svc".into(),
        plan_id: PLAN.into(),
        parameters: None,
        started_at: 1,
        context: None,
        originating_identity: None,
        accepts_incomplete,
        bind_resource: None,
        organization_guid: None,
        space_guid: None,
    }
}

fn failed(outcome: &BackendOutcome) -> &str {
    match outcome {
        BackendOutcome::Failed(d) => d,
        other => panic!("expected Failed, got {other:?}"),
    }
}

async fn start(b: &UpstreamBackend, j: &BackendJob) -> BackendOutcome {
    b.start(j).await.expect("no backend error")
}

fn is_instance_put(r: &Seen) -> bool {
    r.method == Method::PUT && !r.path.contains("service_bindings")
}

// --- orphan mitigation (spec table): provision ---

#[tokio::test]
async fn provision_answering_500_is_deleted_upstream_and_fails_with_the_redacted_description() {
    let up = Upstream::start(|r, _| {
        if is_instance_put(r) {
            reply(500, json!({"description": "db at https://10.0.0.5:5432/x on pg-7.prod.internal is down"}))
        } else {
            reply(200, json!({}))
        }
    })
    .await;
    let b = backend_for(&up.url, "");
    let d = failed(&start(&b, &job(OperationKind::Provision, false)).await).to_owned();
    assert!(d.contains("500"), "{d}");
    assert!(d.contains("orphan mitigation"), "{d}");
    assert!(
        !d.contains("10.0.0.5") && !d.contains("pg-7.prod.internal") && !d.contains("127.0.0.1"),
        "{d}"
    );
    let deletes = up.deletes();
    assert_eq!(deletes.len(), 1);
    let put = up.seen().into_iter().find(is_instance_put).unwrap();
    assert_eq!(
        deletes[0].path, put.path,
        "the DELETE targets the instance the PUT created"
    );
    assert!(
        deletes[0].query.contains("service_id=up-svc")
            && deletes[0].query.contains("plan_id=up-plan")
    );
}

#[tokio::test]
async fn provision_with_a_malformed_201_or_another_2xx_is_deleted_upstream() {
    for bad in [
        raw(201, "not json"),
        raw(201, "[1,2]"),
        raw(201, r#"{"dashboard_url": 7}"#),
        raw(204, ""),
        raw(202, "{\"operation\": 12}"),
    ] {
        let status = bad.status;
        let up = Upstream::start(move |r, _| {
            if is_instance_put(r) {
                bad.clone()
            } else {
                reply(410, json!({}))
            }
        })
        .await;
        let b = backend_for(&up.url, "");
        let d = failed(&start(&b, &job(OperationKind::Provision, true)).await).to_owned();
        assert!(d.contains("orphan mitigation"), "{status}: {d}");
        assert_eq!(up.deletes().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn provision_that_times_out_is_deleted_upstream() {
    let up = Upstream::start(|r, _| {
        if is_instance_put(r) {
            Reply {
                delay: Duration::from_secs(3),
                ..reply(201, json!({}))
            }
        } else {
            reply(200, json!({}))
        }
    })
    .await;
    let b = backend_for(&up.url, "");
    let d = failed(&start(&b, &job(OperationKind::Provision, true)).await).to_owned();
    assert!(d.contains("did not answer"), "{d}");
    assert_eq!(up.deletes().len(), 1);
}

#[tokio::test]
async fn provision_answering_400_408_409_or_422_is_not_mitigated() {
    for status in [400u16, 408, 409, 422] {
        let up = Upstream::start(move |_, _| {
            reply(
                status,
                json!({"error": "AsyncRequired", "description": "no"}),
            )
        })
        .await;
        let b = backend_for(&up.url, "");
        let d = failed(&start(&b, &job(OperationKind::Provision, true)).await).to_owned();
        assert!(
            d.contains(&status.to_string()) && !d.contains("orphan"),
            "{d}"
        );
        assert!(up.deletes().is_empty(), "{status}: no DELETE");
    }
}

#[tokio::test]
async fn a_failed_asynchronous_provision_is_deleted_upstream() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => reply(202, json!({"operation": "op-1"})),
        Method::GET => reply(
            200,
            json!({"state": "failed", "description": "quota exceeded"}),
        ),
        _ => reply(200, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Provision, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    assert!(up.deletes().is_empty());
    let d = failed(&b.poll(&j, &handle).await.unwrap()).to_owned();
    assert!(
        d.contains("quota exceeded") && d.contains("orphan mitigation"),
        "{d}"
    );
    assert_eq!(up.deletes().len(), 1);
}

#[tokio::test]
async fn a_mitigation_delete_that_fails_is_retried_with_backoff_until_it_succeeds() {
    let up = Upstream::start(|r, n| match r.method {
        Method::PUT => reply(503, json!({})),
        Method::DELETE if n < 2 => reply(500, json!({})),
        _ => reply(410, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Provision, true);
    let BackendOutcome::InProgress {
        handle,
        retry_after_secs,
    } = start(&b, &j).await
    else {
        panic!()
    };
    assert_eq!(retry_after_secs, 2);
    // The handle is what the operation records: a later poll (another process) continues from it.
    let BackendOutcome::InProgress {
        handle,
        retry_after_secs,
    } = b.poll(&j, &handle).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(retry_after_secs, 4, "backoff grows");
    let d = failed(&b.poll(&j, &handle).await.unwrap()).to_owned();
    assert!(d.contains("503"), "{d}");
    assert_eq!(up.deletes().len(), 3);
}

#[tokio::test]
async fn a_synchronous_request_tries_the_mitigation_a_few_times_then_leaves_it_to_the_worker() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => reply(500, json!({})),
        _ => reply(500, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let out = start(&b, &job(OperationKind::Provision, false)).await;
    assert!(
        matches!(&out, BackendOutcome::InProgress { handle, .. } if handle.contains("mitigating")),
        "{out:?}"
    );
    assert_eq!(
        up.deletes().len(),
        4,
        "one delete, then three more within the request"
    );
}

// --- orphan mitigation: bind ---

#[tokio::test]
async fn bind_answering_500_or_timing_out_deletes_the_binding_upstream() {
    for slow in [false, true] {
        let up = Upstream::start(move |r, _| match r.method {
            Method::PUT if slow => Reply {
                delay: Duration::from_secs(3),
                ..reply(201, json!({}))
            },
            Method::PUT => reply(502, json!({"description": "bad gateway"})),
            _ => reply(200, json!({})),
        })
        .await;
        let b = backend_for(&up.url, "");
        let d = failed(&start(&b, &job(OperationKind::Bind, true)).await).to_owned();
        assert!(d.contains("orphan mitigation"), "{d}");
        let deletes = up.deletes();
        assert_eq!(deletes.len(), 1);
        assert!(
            deletes[0].path.contains("/service_bindings/"),
            "the binding is deleted, not the instance"
        );
    }
}

#[tokio::test]
async fn bind_answering_409_or_422_is_not_mitigated() {
    for status in [409u16, 422] {
        let up = Upstream::start(move |_, _| reply(status, json!({"error": "RequiresApp"}))).await;
        let b = backend_for(&up.url, "");
        failed(&start(&b, &job(OperationKind::Bind, true)).await);
        assert!(up.deletes().is_empty());
    }
}

// --- deletes ---

#[tokio::test]
async fn deprovision_and_unbind_answering_410_succeed() {
    let up = Upstream::start(|_, _| reply(410, json!({}))).await;
    let b = backend_for(&up.url, "");
    for kind in [OperationKind::Deprovision, OperationKind::Unbind] {
        assert_eq!(
            start(&b, &job(kind, true)).await,
            BackendOutcome::Done(Done::Deleted)
        );
    }
    assert!(
        up.deletes()
            .iter()
            .all(|d| d.query.contains("accepts_incomplete=true"))
    );
}

#[tokio::test]
async fn an_asynchronous_delete_whose_poll_answers_410_succeeds() {
    let up = Upstream::start(|r, _| match r.method {
        Method::DELETE => reply(202, json!({"operation": "del-1"})),
        _ => reply(410, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Deprovision, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    assert_eq!(
        b.poll(&j, &handle).await.unwrap(),
        BackendOutcome::Done(Done::Deleted)
    );
}

#[tokio::test]
async fn a_410_while_polling_a_provision_keeps_polling() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => reply(202, json!({"operation": "op"})),
        _ => reply(410, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Provision, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    assert!(matches!(
        b.poll(&j, &handle).await.unwrap(),
        BackendOutcome::InProgress { .. }
    ));
    assert!(up.deletes().is_empty());
}

// --- polling ---

#[tokio::test]
async fn polling_sends_the_upstreams_operation_and_honours_retry_after() {
    let up = Upstream::start(|r, n| match r.method {
        Method::PUT => reply(
            202,
            json!({"operation": "op/A 1", "dashboard_url": "https://dash/1"}),
        ),
        Method::GET if n == 0 => Reply {
            retry_after: Some(7),
            ..reply(200, json!({"state": "in progress"}))
        },
        _ => reply(200, json!({"state": "succeeded"})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Provision, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    let BackendOutcome::InProgress {
        handle,
        retry_after_secs,
    } = b.poll(&j, &handle).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(retry_after_secs, 7);
    let BackendOutcome::Done(Done::Instance(r)) = b.poll(&j, &handle).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        r.dashboard_url.as_deref(),
        Some("https://dash/1"),
        "the 202's dashboard_url is kept"
    );
    let polls: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|r| r.method == Method::GET)
        .collect();
    assert_eq!(polls.len(), 2);
    for p in &polls {
        assert!(p.path.ends_with("/last_operation"));
        let q: Vec<(String, String)> = url::form_urlencoded::parse(p.query.as_bytes())
            .into_owned()
            .collect();
        assert!(q.contains(&("operation".into(), "op/A 1".into())), "{q:?}");
        assert!(q.contains(&("plan_id".into(), "up-plan".into())), "{q:?}");
    }
}

#[tokio::test]
async fn a_202_without_operation_is_polled_without_one() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => reply(202, json!({})),
        _ => reply(200, json!({"state": "succeeded"})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Provision, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    assert!(matches!(
        b.poll(&j, &handle).await.unwrap(),
        BackendOutcome::Done(_)
    ));
    let poll = up
        .seen()
        .into_iter()
        .find(|r| r.method == Method::GET)
        .unwrap();
    assert!(!poll.query.contains("operation="), "{}", poll.query);
}

#[tokio::test]
async fn a_synchronous_request_waits_for_an_upstream_that_went_asynchronous() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => Reply {
            retry_after: Some(1),
            ..reply(202, json!({"operation": "o"}))
        },
        _ => reply(200, json!({"state": "succeeded"})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let out = start(&b, &job(OperationKind::Provision, false)).await;
    assert!(
        matches!(out, BackendOutcome::Done(Done::Instance(_))),
        "{out:?}"
    );
    let put = up.seen().into_iter().find(is_instance_put).unwrap();
    assert!(
        put.query.contains("accepts_incomplete=true"),
        "always sent: {}",
        put.query
    );
}

#[tokio::test]
async fn an_asynchronous_bind_is_polled_then_fetched_and_passes_everything_through() {
    let binding = json!({"credentials": {"uri": "pg://u:p@h/db"}, "metadata": {"expires_at": "2030-01-01T00:00:00Z"},
        "endpoints": [{"host": "h", "ports": ["5432"], "protocol": "tcp"}], "volume_mounts": [{"driver": "d", "container_dir": "/x", "mode": "r", "device_type": "shared", "device": {"volume_id": "v"}}],
        "syslog_drain_url": "syslog://drain", "route_service_url": "https://route"});
    let b2 = binding.clone();
    let up = Upstream::start(move |r, _| match r.method {
        Method::PUT => reply(202, json!({"operation": "bind-op"})),
        Method::GET if r.path.ends_with("/last_operation") => {
            reply(200, json!({"state": "succeeded"}))
        }
        Method::GET => reply(200, b2.clone()),
        _ => reply(200, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "");
    let j = job(OperationKind::Bind, true);
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    let BackendOutcome::Done(Done::Binding(got)) = b.poll(&j, &handle).await.unwrap() else {
        panic!()
    };
    assert_eq!(serde_json::to_value(&got).unwrap(), binding);
}

// --- forwarding ---

#[tokio::test]
async fn context_and_identity_go_with_mutations_only_and_credentials_with_every_request() {
    let up = Upstream::start(|r, _| match r.method {
        Method::PUT => reply(202, json!({"operation": "o"})),
        Method::GET => reply(200, json!({"state": "succeeded"})),
        _ => reply(200, json!({})),
    })
    .await;
    let b = backend_for(&up.url, "api_version = '2.16'");
    let mut j = job(OperationKind::Provision, true);
    j.context =
        json!({"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": "sp-1"})
            .as_object()
            .cloned();
    j.originating_identity =
        Some(OriginatingIdentity::parse("cloudfoundry eyJ1c2VyX2lkIjoiYWJjIn0=").unwrap());
    j.parameters = json!({"size": 3, "x_osb_cmdb": {"sharing_to": []}})
        .as_object()
        .cloned();
    let BackendOutcome::InProgress { handle, .. } = start(&b, &j).await else {
        panic!()
    };
    b.poll(&j, &handle).await.unwrap();
    let mut d = j.clone();
    d.kind = OperationKind::Deprovision;
    d.parameters = None;
    b.start(&d).await.unwrap();
    let seen = up.seen();
    let put = seen.iter().find(|r| r.method == Method::PUT).unwrap();
    let body = put.body.as_ref().unwrap();
    assert_eq!(body["context"]["organization_guid"], "org-1");
    assert_eq!(body["organization_guid"], "org-1");
    assert_eq!(body["service_id"], "up-svc");
    assert_eq!(body["plan_id"], "up-plan");
    assert_eq!(
        body["parameters"],
        json!({"size": 3}),
        "the broker's own keys are not forwarded"
    );
    let id = OriginatingIdentity::parse(
        put.headers
            .get("x-broker-api-originating-identity")
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(id.user(), Some("abc"));
    let del = seen.iter().find(|r| r.method == Method::DELETE).unwrap();
    assert!(
        del.headers
            .contains_key("x-broker-api-originating-identity")
    );
    let poll = seen.iter().find(|r| r.method == Method::GET).unwrap();
    assert!(
        !poll
            .headers
            .contains_key("x-broker-api-originating-identity"),
        "not on polling"
    );
    for r in &seen {
        assert_eq!(r.headers.get("x-broker-api-version").unwrap(), "2.16");
        // Basic proxy:upstream-pw
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            "Basic cHJveHk6dXBzdHJlYW0tcHc="
        );
    }
}

#[tokio::test]
async fn ids_are_derived_per_tenant_generation_and_lease() {
    let up = Upstream::start(|_, _| reply(201, json!({}))).await;
    let b = backend_for(&up.url, "");
    let base = job(OperationKind::Provision, true);
    let mut other_tenant = base.clone();
    other_tenant.tenant = "k8s".into();
    let mut next_life = base.clone();
    next_life.generation = 2;
    for j in [&base, &base, &other_tenant, &next_life] {
        start(&b, j).await;
    }
    let paths: Vec<String> = up.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[0], paths[1], "a repeated step re-sends the same id");
    assert_ne!(
        paths[0], paths[2],
        "two tenants' equal ids never meet upstream"
    );
    assert_ne!(
        paths[0], paths[3],
        "a later life is another upstream instance"
    );
    assert!(
        !paths[0].contains("i-1"),
        "upstream ids are derived, not the platform's"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error_not_a_failure_and_nothing_is_mitigated() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let b = backend_for(&url, "");
    assert!(b.start(&job(OperationKind::Provision, true)).await.is_err());
}

// --- catalog ---

#[tokio::test]
async fn a_slow_catalog_keeps_the_last_good_one_and_a_good_one_replaces_it() {
    let catalog = json!({"services": [{"id": "s", "name": "n", "description": "d", "bindable": true,
        "plans": [{"id": "p", "name": "p", "description": "d"}]}]});
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (s2, c2) = (slow.clone(), catalog.clone());
    let up = Upstream::start(move |_, _| {
        if s2.load(std::sync::atomic::Ordering::SeqCst) {
            Reply {
                delay: Duration::from_secs(3),
                ..reply(200, json!({"services": []}))
            }
        } else {
            reply(200, c2.clone())
        }
    })
    .await;
    let cfg: UpstreamConfig = toml::from_str(&format!(
        "url = '{}'\nusername = 'u'\npassword = 'p'\nrequest_timeout_ms = 300",
        up.url
    ))
    .unwrap();
    let upstream = cfg.validate("up").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = import::cache_path(dir.path(), "up");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"services\": [], \"last\": \"good\"}").unwrap();
    let failures = import::refresh_cache(std::slice::from_ref(&upstream), dir.path()).await;
    assert_eq!(failures.len(), 1);
    assert!(
        std::fs::read_to_string(&path).unwrap().contains("good"),
        "the last good catalog stays"
    );
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        import::refresh_cache(&[upstream], dir.path())
            .await
            .is_empty()
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(kept, catalog);
    let fetched = up.seen();
    assert!(
        fetched.iter().all(|r| r.path == "/v2/catalog"
            && !r.headers.contains_key("x-broker-api-originating-identity"))
    );
}

#[tokio::test]
async fn a_bind_forwards_bind_resource_and_the_deprecated_app_guid() {
    let up = Upstream::start(|_, _| reply(201, json!({"credentials": {"u": "x"}}))).await;
    let b = backend_for(&up.url, "");
    let mut j = job(OperationKind::Bind, true);
    j.bind_resource = json!({"app_guid": "app-1", "route": "r"})
        .as_object()
        .cloned();
    start(&b, &j).await;
    let put = up
        .seen()
        .into_iter()
        .find(|r| r.method == Method::PUT)
        .unwrap();
    let body = put.body.unwrap();
    assert_eq!(
        body["bind_resource"],
        json!({"app_guid": "app-1", "route": "r"})
    );
    assert_eq!(body["app_guid"], "app-1");
    // A provision carries neither.
    start(&b, &job(OperationKind::Provision, true)).await;
    let put = up
        .seen()
        .into_iter()
        .filter(is_instance_put)
        .last()
        .unwrap();
    assert!(put.body.unwrap().get("bind_resource").is_none());
}

#[tokio::test]
async fn a_provision_forwards_the_top_level_organization_and_space_guids_as_sent() {
    let up = Upstream::start(|_, _| reply(201, json!({}))).await;
    let b = backend_for(&up.url, "");
    let mut j = job(OperationKind::Provision, true);
    j.organization_guid = Some("org-top".into());
    j.space_guid = Some("space-top".into());
    start(&b, &j).await;
    // Without them, a Cloud Foundry context's are used.
    let mut k = job(OperationKind::Provision, true);
    k.generation = 2;
    k.context = json!({"platform": "cloudfoundry", "organization_guid": "org-ctx", "space_guid": "space-ctx"})
        .as_object()
        .cloned();
    start(&b, &k).await;
    let bodies: Vec<Value> = up
        .seen()
        .into_iter()
        .filter(is_instance_put)
        .map(|r| r.body.unwrap())
        .collect();
    assert_eq!(bodies[0]["organization_guid"], "org-top");
    assert_eq!(bodies[0]["space_guid"], "space-top");
    assert_eq!(bodies[1]["organization_guid"], "org-ctx");
    assert_eq!(bodies[1]["space_guid"], "space-ctx");
}
