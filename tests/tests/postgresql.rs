//! The local broker binary serving a PostgreSQL plan on the throw-away server of `scripts/postgres.sh`
//! (`OSB_PG_*`; without it each test prints why and passes, unless `OSB_REQUIRE_POSTGRES=1`, as in
//! `scripts/test.sh`): the broker is killed (SIGKILL) right after accepting an asynchronous provision and
//! restarted; the provision completes, the database is there once, a binding's credentials log in, and
//! deprovision leaves nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::*;
use serde_json::json;

const SERVICE: &str = "3b7d0000-0000-4000-8000-0000000000a1";
const PLAN: &str = "3b7d0000-0000-4000-8000-0000000000b1";

struct Pg {
    host: String,
    port: String,
    user: String,
    password: String,
}

fn pg() -> Option<Pg> {
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
    Some(Pg {
        host,
        port: var("OSB_PG_PORT").expect("OSB_PG_PORT"),
        user: var("OSB_PG_ADMIN_USER").expect("OSB_PG_ADMIN_USER"),
        password: var("OSB_PG_ADMIN_PASSWORD").expect("OSB_PG_ADMIN_PASSWORD"),
    })
}

async fn databases(pg: &Pg, prefix: &str) -> Vec<String> {
    let (c, conn) = tokio_postgres::connect(
        &format!(
            "postgresql://{}:{}@{}:{}/postgres",
            pg.user, pg.password, pg.host, pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the admin connects");
    tokio::spawn(conn);
    c.query(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
        &[&prefix],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn a_provision_interrupted_by_a_kill_completes_after_restart_on_a_real_server() {
    let Some(pg) = pg() else { return };
    bounded(async {
        let prefix = format!("e2e{:06x}_", std::process::id() & 0xff_ffff);
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog.json");
        std::fs::write(
            &catalog,
            json!({"services": [{"id": SERVICE, "name": "pg", "description": "d", "bindable": true, "bindings_retrievable": true,
                "plans": [{"id": PLAN, "name": "p", "description": "d",
                    "backend": {"type": "postgresql", "server": "e2e", "asynchronous": true}}]}]})
            .to_string(),
        )
        .unwrap();
        let extra = format!(
            "catalog_file = {:?}\n\n[postgresql_servers.e2e]\nhost = {:?}\nport = {}\nadmin_user = {:?}\npassword = {:?}\ndatabase_prefix = {:?}\n",
            catalog.to_string_lossy(),
            pg.host,
            pg.port,
            pg.user,
            pg.password,
            prefix
        );
        let mut broker = Broker::start(&extra).await;
        let c = broker.client("cf1");
        let id = unique_id("pg-inst");
        let body = json!({"service_id": SERVICE, "plan_id": PLAN, "organization_guid": "o", "space_guid": "s"});
        let accepted = c
            .put(&format!("{}?accepts_incomplete=true", instance_path(&id)), &body)
            .await;
        accepted.expect(202);
        let op = accepted.operation();
        broker.kill();
        broker.restart().await;
        let c = broker.client("cf1");
        let done = c
            .poll_until_final(&format!("{}?operation={op}", instance_last_op_path(&id)))
            .await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert_eq!(databases(&pg, &prefix).await.len(), 1);

        let bid = unique_id("pg-bind");
        let bound = c
            .put(
                &format!("{}?accepts_incomplete=true", binding_path(&id, &bid)),
                &json!({"service_id": SERVICE, "plan_id": PLAN}),
            )
            .await;
        bound.expect(202);
        let bop = bound.operation();
        let done = c
            .poll_until_final(&format!(
                "{}/last_operation?operation={bop}",
                binding_path(&id, &bid)
            ))
            .await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let got = c.get(&binding_path(&id, &bid)).await;
        got.expect(200);
        let uri = got.json["credentials"]["uri"].as_str().unwrap().to_owned();
        let (app, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls)
            .await
            .expect("the binding logs in");
        tokio::spawn(conn);
        app.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        // Nothing of the password reached the broker's log.
        let password = got.json["credentials"]["password"].as_str().unwrap();
        assert!(!broker.log().contains(password));

        let q = format!("service_id={SERVICE}&plan_id={PLAN}&accepts_incomplete=true");
        let gone = c.delete(&format!("{}?{q}", binding_path(&id, &bid))).await;
        if gone.status == 202 {
            c.poll_until_final(&format!(
                "{}/last_operation?operation={}",
                binding_path(&id, &bid),
                gone.operation()
            ))
            .await;
        }
        let gone = c.delete(&format!("{}?{q}", instance_path(&id))).await;
        if gone.status == 202 {
            c.poll_until_final(&format!(
                "{}?operation={}",
                instance_last_op_path(&id),
                gone.operation()
            ))
            .await;
        }
        assert!(databases(&pg, &prefix).await.is_empty());
        assert!(tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.is_err());
    })
    .await;
}
