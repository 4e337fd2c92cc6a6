//! The PostgreSQL backend on the AWS wiring: the admin secret read from Secrets Manager (moto on
//! loopback) by `aws::api_state` and `aws::with_postgres`, DynamoDB and SQS on moto, the database on the
//! throw-away server of `scripts/postgres.sh` (`OSB_PG_*`; without it the test prints why and passes, unless
//! `OSB_REQUIRE_POSTGRES=1`, as in `scripts/test.sh`). A provision and a bind through the API's router, the
//! credentials used for real, then the worker's broker (built the same way) sees the same server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use osb_broker::aws::testing::{moto, unique_name};
use osb_broker::aws::{self, AwsConfig, SqsQueue};
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "7f2c0000-0000-4000-8000-0000000000a1";
const PLAN: &str = "7f2c0000-0000-4000-8000-0000000000b1";

fn pg() -> Option<(String, String, String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(host) = var("OSB_PG_HOST") else {
        assert_ne!(
            var("OSB_REQUIRE_POSTGRES").as_deref(),
            Some("1"),
            "OSB_REQUIRE_POSTGRES=1 but OSB_PG_HOST is not set: run through scripts/postgres.sh run"
        );
        eprintln!("skipped: no PostgreSQL server (OSB_PG_HOST unset); see scripts/postgres.sh");
        return None;
    };
    assert!(
        host.starts_with("127."),
        "only a loopback server, not {host}"
    );
    Some((
        host,
        var("OSB_PG_PORT").unwrap(),
        var("OSB_PG_ADMIN_USER").unwrap(),
        var("OSB_PG_ADMIN_PASSWORD").unwrap(),
    ))
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let auth = base64::engine::general_purpose::STANDARD.encode("cf1-user:cf1-pass");
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Basic {auth}"))
        .header("x-broker-api-version", "2.17");
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    let resp = router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_secret_comes_from_secrets_manager_and_bindings_are_real_roles() {
    let Some((host, port, user, password)) = pg() else {
        return;
    };
    let sdk = moto().sdk_config().await;
    let table = unique_name("osb");
    let kms_key_id = osb_broker::aws::testing::kms_key(&sdk).await;
    aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &table,
        osb_broker::aws::testing::kms_sealer(&sdk).await,
    )
    .create_table()
    .await
    .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ops = SqsQueue::create(&sqs, &unique_name("ops")).await.unwrap();
    let hooks = SqsQueue::create(&sqs, &unique_name("hooks")).await.unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let tenants = unique_name("tenants");
    secrets
        .create_secret()
        .name(&tenants)
        .secret_string(
            json!({"name": "cf1", "username": "cf1-user", "password": "cf1-pass"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    // The shape RDS writes, plus the broker's own keys.
    let prefix = format!("aws{:06x}_", std::process::id() & 0xff_ffff);
    let admin = unique_name("pgadmin");
    secrets
        .create_secret()
        .name(&admin)
        .secret_string(
            json!({"username": user, "password": password, "engine": "postgres", "host": host,
                "port": port.parse::<u16>().unwrap(), "dbname": "postgres", "name": "rds", "tls": "disable",
                "database_prefix": prefix})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let sharing_keys = unique_name("sharing-keys");
    secrets
        .create_secret()
        .name(&sharing_keys)
        .secret_string(r#"{"current": "k1", "k1": "aws-postgres-test-sharing-key-material"}"#)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        json!({"services": [{"id": SERVICE, "name": "pg", "description": "d", "bindable": true,
            "plans": [{"id": PLAN, "name": "p", "description": "d",
                "backend": {"type": "postgresql", "server": "rds"}}]}]})
        .to_string(),
    )
    .unwrap();
    let mut cfg = AwsConfig {
        table,
        kms_key_id,
        operations_queue_url: ops,
        webhook_queue_url: hooks,
        webhook_dlq_url: None,
        webhook_allow_http: false,
        tenants_secret_id: Some(tenants),
        sharing_keys_secret_id: Some(sharing_keys),
        catalog_file: Some(catalog),
        postgres_secret_id: Some(admin),
        admin_secret_id: None,
    };
    let state = aws::api_state(&cfg, &sdk, osb_broker::http::DEFAULT_BODY_LIMIT)
        .await
        .unwrap();
    let router = osb_broker::http::router(state.clone());
    let (s, b) = call(
        &router,
        Method::PUT,
        "/v2/service_instances/i1",
        Some(json!({"service_id": SERVICE, "plan_id": PLAN, "organization_guid": "o", "space_guid": "s"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = call(
        &router,
        Method::PUT,
        "/v2/service_instances/i1/service_bindings/b1",
        Some(json!({"service_id": SERVICE, "plan_id": PLAN})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let uri = b["credentials"]["uri"].as_str().unwrap();
    assert!(
        b["credentials"]["name"]
            .as_str()
            .unwrap()
            .starts_with(&prefix)
    );
    let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).ends_with("_owner"));
    drop(client);

    // The worker's broker reads the same secret: it deletes what the API made (same names, same server).
    let worker = aws::with_postgres(aws::broker(&cfg, &sdk).unwrap(), &cfg, &sdk)
        .await
        .unwrap();
    let router = osb_broker::http::router(osb_broker::http::AppState::new(
        worker,
        state.tenants.clone(),
        osb_broker::http::DEFAULT_BODY_LIMIT,
    ));
    let (s, _) = call(
        &router,
        Method::DELETE,
        &format!(
            "/v2/service_instances/i1/service_bindings/b1?service_id={SERVICE}&plan_id={PLAN}"
        ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &router,
        Method::DELETE,
        &format!("/v2/service_instances/i1?service_id={SERVICE}&plan_id={PLAN}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        tokio_postgres::connect(uri, tokio_postgres::NoTls)
            .await
            .is_err()
    );

    // Without the secret, a catalog with PostgreSQL plans stops the cold start, naming the plan.
    cfg.postgres_secret_id = None;
    let e = aws::with_postgres(aws::broker(&cfg, &sdk).unwrap(), &cfg, &sdk)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(PLAN) && e.contains("'rds'"), "{e}");
}
