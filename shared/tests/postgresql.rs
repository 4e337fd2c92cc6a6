//! The PostgreSQL backend through the broker, against the real server `scripts/postgres.sh` starts:
//! every assertion connects with the credentials the broker returned. Isolation between instances, two
//! bindings sharing tables, unbind keeping the data, concurrent binds, deprovision with open sessions,
//! re-provision of an id, a crash between any two steps, the server log holding no binding password,
//! rotation and expiry on real roles, extensions, and the sharing story (a lease's bindings are roles
//! on the owner's database). Without a server see tests/common/pg.rs.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::pg::*;
use common::{Harness, Resp};
use osb_broker::backends::postgresql::{InstanceNames, PostgresBackend};
use osb_broker::catalog::Catalog;
use osb_broker::ids::{BindingId, InstanceId, OperationId};
use osb_broker::ports::backend::Done;
use osb_broker::ports::{Backend, BackendJob, BackendOutcome, Bindings};
use osb_broker::records::OperationKind;
use serde_json::{Value, json};
use std::sync::Arc;

struct Pg {
    env: PgEnv,
    h: Harness,
    prefix: String,
}

fn setup() -> Option<Pg> {
    let env = pg_env()?;
    let prefix = unique_prefix();
    let h = Harness::with_config(|cfg| env.broker_config(&prefix, cfg));
    Some(Pg { env, h, prefix })
}

impl Pg {
    async fn provision(&self, tenant: &str, id: &str, plan: &str, params: Value) -> Resp {
        let service = if plan == SIM_PLAN {
            SIM_SERVICE
        } else {
            PG_SERVICE
        };
        self.h
            .call(
                tenant,
                Method::PUT,
                &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
                Some(
                    json!({"service_id": service, "plan_id": plan, "organization_guid": "org",
                    "space_guid": "space", "parameters": params}),
                ),
            )
            .await
    }

    async fn ok_provision(&self, tenant: &str, id: &str) {
        let r = self.provision(tenant, id, PG_PLAN, json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }

    async fn bind_with(
        &self,
        tenant: &str,
        iid: &str,
        bid: &str,
        plan: &str,
        extra: Value,
    ) -> Resp {
        let mut body = json!({"service_id": PG_SERVICE, "plan_id": plan, "bind_resource": {"app_guid": "app"}});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        self.h
            .call(
                tenant,
                Method::PUT,
                &format!(
                    "/v2/service_instances/{iid}/service_bindings/{bid}?accepts_incomplete=true"
                ),
                Some(body),
            )
            .await
    }

    /// Binds and returns the credentials' uri.
    async fn bind(&self, tenant: &str, iid: &str, bid: &str) -> String {
        let r = self.bind_with(tenant, iid, bid, PG_PLAN, json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        uri(&r.body)
    }

    async fn unbind(&self, tenant: &str, iid: &str, bid: &str, plan: &str) -> Resp {
        self.h
            .call(
                tenant,
                Method::DELETE,
                &format!("/v2/service_instances/{iid}/service_bindings/{bid}?service_id={PG_SERVICE}&plan_id={plan}&accepts_incomplete=true"),
                None,
            )
            .await
    }

    async fn deprovision(&self, tenant: &str, iid: &str, plan: &str) -> Resp {
        self.h
            .call(
                tenant,
                Method::DELETE,
                &format!("/v2/service_instances/{iid}?service_id={PG_SERVICE}&plan_id={plan}&accepts_incomplete=true"),
                None,
            )
            .await
    }

    /// The names of the instance's current life (its generation read from the store).
    async fn names(&self, tenant: &str, iid: &str) -> InstanceNames {
        let read = self
            .h
            .broker
            .store
            .get_instance_with_bindings(tenant, &InstanceId::parse(iid).unwrap(), Bindings::All)
            .await
            .unwrap();
        let generation = read.instance.expect("the instance exists").item.generation;
        InstanceNames::new(&self.prefix, tenant, iid, generation)
    }
}

/// Connects with a binding's uri, or panics with the SQLSTATE.
async fn login(uri: &str) -> tokio_postgres::Client {
    connect(uri)
        .await
        .unwrap_or_else(|e| panic!("login failed: {} {e}", sqlstate(&e)))
}

/// The error of a login that must be refused.
async fn refused(uri: &str, why: &str) -> tokio_postgres::Error {
    match connect(uri).await {
        Ok(_) => panic!("a login succeeded that must not: {why}"),
        Err(e) => e,
    }
}

/// The uri pointed at another database (same user and password).
fn to_database(uri: &str, db: &str) -> String {
    let (base, _) = uri.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

async fn one_string(c: &tokio_postgres::Client, sql: &str) -> String {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_binding_reaches_its_own_database_only_as_the_owner_role() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "a").await;
    pg.ok_provision("cf1", "b").await;
    let a = pg.bind("cf1", "a", "ba").await;
    let b = pg.bind("cf1", "b", "bb").await;
    let (na, nb) = (pg.names("cf1", "a").await, pg.names("cf1", "b").await);
    assert!(a.ends_with(&format!("/{}", na.database)), "{a}");

    let ca = login(&a).await;
    // Objects a binding creates belong to the owner role (SET ROLE by default).
    assert_eq!(one_string(&ca, "SELECT current_user::text").await, na.owner);
    let session_user = one_string(&ca, "SELECT session_user::text").await;
    assert!(
        session_user.starts_with(&na.binding_prefix),
        "{session_user}"
    );
    assert!(
        a.starts_with(&format!("postgresql://{session_user}:")),
        "{a}"
    );
    assert_eq!(one_string(&ca, "SHOW statement_timeout").await, "5s");
    ca.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        one_string(
            &ca,
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 't'"
        )
        .await,
        na.owner
    );
    let owner_of_public: String = one_string(
        &ca,
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'",
    )
    .await;
    assert_eq!(owner_of_public, na.owner);

    // A's binding cannot connect to B's database, nor to the maintenance database; and the other way round.
    for (uri, db) in [
        (&a, &nb.database),
        (&b, &na.database),
        (&a, &"postgres".to_owned()),
    ] {
        let e = refused(&to_database(uri, db), "refused").await;
        assert_eq!(sqlstate(&e), "42501", "{e}");
    }
    // The admin role the broker uses is not a superuser.
    let admin = pg.env.admin().await;
    let row = admin
        .query_one(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        (false, true, true)
    );
}

#[tokio::test]
async fn two_bindings_share_tables_and_an_unbind_keeps_the_data_and_ends_its_sessions() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "i").await;
    let b1 = pg.bind("cf1", "i", "b1").await;
    let b2 = pg.bind("cf1", "i", "b2").await;
    let c1 = login(&b1).await;
    c1.batch_execute("CREATE TABLE shared (v text); INSERT INTO shared VALUES ('from b1')")
        .await
        .unwrap();
    let c2 = login(&b2).await;
    c2.batch_execute("INSERT INTO shared VALUES ('from b2'); CREATE TABLE mine (x int)")
        .await
        .unwrap();
    assert_eq!(
        one_string(&c1, "SELECT string_agg(v, ',' ORDER BY v) FROM shared").await,
        "from b1,from b2"
    );

    let r = pg.unbind("cf1", "i", "b1", PG_PLAN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // b1's open session was ended and it can no longer log in.
    assert!(c1.simple_query("SELECT 1").await.is_err());
    let e = refused(&b1, "b1 is gone").await;
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // b2 keeps working, and the data b1 wrote stays.
    assert_eq!(
        one_string(&c2, "SELECT string_agg(v, ',' ORDER BY v) FROM shared").await,
        "from b1,from b2"
    );
    let c2b = login(&b2).await;
    c2b.batch_execute("INSERT INTO shared VALUES ('later')")
        .await
        .unwrap();
    let (_, roles) = pg.env.resources(&pg.prefix).await;
    assert_eq!(roles.len(), 2, "owner and b2 remain: {roles:?}");
}

#[tokio::test]
async fn ten_concurrent_binds_on_one_instance_all_succeed() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "busy").await;
    // Concurrent binds of one instance contend for its record in the broker's store: each one that loses a
    // round re-reads and tries again (jittered), so all ten are created in one request each.
    let binds = (0..10).map(|n| {
        let pg = &pg;
        async move {
            pg.bind_with("cf1", "busy", &format!("c{n}"), PG_PLAN, json!({}))
                .await
        }
    });
    let answers = futures_join_all(binds).await;
    let mut users = std::collections::BTreeSet::new();
    for r in &answers {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let c = login(&uri(&r.body)).await;
        assert_eq!(one_string(&c, "SELECT 'ok'::text").await, "ok");
        users.insert(
            r.body["credentials"]["username"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(users.len(), 10);
    let (_, roles) = pg.env.resources(&pg.prefix).await;
    assert_eq!(
        roles.len(),
        11,
        "the owner and ten binding roles: {roles:?}"
    );
}

#[tokio::test]
async fn ten_concurrent_binds_on_the_backend_all_succeed_at_once() {
    let Some(env) = pg_env() else { return };
    let prefix = unique_prefix();
    let backend = PostgresBackend::new(
        Arc::new(Catalog::new(catalog("test")).unwrap()),
        env.server_config(&prefix).validate("test").unwrap(),
        [3u8; 32],
    )
    .unwrap();
    let provision = backend_job(
        OperationKind::Provision,
        "01JF0000000000000000000001",
        "many",
    );
    assert!(matches!(
        backend.start(&provision).await.unwrap(),
        BackendOutcome::Done(_)
    ));
    let jobs: Vec<BackendJob> = (0..10)
        .map(|n| {
            binding_job(
                &provision,
                OperationKind::Bind,
                &format!("01JF00000000000000000001{n:02}"),
                &format!("b{n}"),
            )
        })
        .collect();
    let outcomes = futures_join_all(jobs.iter().map(|j| backend.start(j))).await;
    for o in outcomes {
        let BackendOutcome::Done(Done::Binding(b)) = o.unwrap() else {
            panic!("a bind answers a binding")
        };
        login(b.credentials.unwrap().0["uri"].as_str().unwrap()).await;
    }
}

/// Runs the futures concurrently (no extra crate: one task per future on the test runtime's thread).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut pending: Vec<_> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                outs[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outs.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn a_binding_opens_at_most_its_connection_limit() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "lim").await;
    let b = pg.bind("cf1", "lim", "b").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(login(&b).await);
    }
    let e = refused(&b, "the fourth is refused").await;
    assert_eq!(sqlstate(&e), "53300", "{e}");
}

#[tokio::test]
async fn deprovision_with_open_sessions_removes_the_database_and_every_role() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "gone").await;
    let b1 = pg.bind("cf1", "gone", "b1").await;
    let b2 = pg.bind("cf1", "gone", "b2").await;
    let c1 = login(&b1).await;
    let c2 = login(&b2).await;
    c1.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    let r = pg.deprovision("cf1", "gone", PG_PLAN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(c1.simple_query("SELECT 1").await.is_err());
    assert!(c2.simple_query("SELECT 1").await.is_err());
    assert_eq!(
        pg.env.resources(&pg.prefix).await,
        (vec![], vec![]),
        "no database or role left"
    );
    assert!(connect(&b1).await.is_err());
}

#[tokio::test]
async fn a_re_provisioned_id_is_a_new_empty_database_and_old_credentials_stop_working() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "again").await;
    let old = pg.bind("cf1", "again", "b").await;
    login(&old)
        .await
        .batch_execute("CREATE TABLE old_life (x int)")
        .await
        .unwrap();
    assert_eq!(
        pg.unbind("cf1", "again", "b", PG_PLAN).await.status,
        StatusCode::OK
    );
    assert_eq!(
        pg.deprovision("cf1", "again", PG_PLAN).await.status,
        StatusCode::OK
    );
    pg.ok_provision("cf1", "again").await;
    let new = pg.bind("cf1", "again", "b").await;
    assert_ne!(new, old);
    let c = login(&new).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'old_life'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the new life starts empty");
    assert!(connect(&old).await.is_err());
    let (dbs, _) = pg.env.resources(&pg.prefix).await;
    assert_eq!(dbs, vec![pg.names("cf1", "again").await.database]);
}

#[tokio::test]
async fn an_asynchronous_plan_runs_in_the_worker_and_a_redelivered_message_changes_nothing() {
    let Some(pg) = setup() else { return };
    let r = pg.provision("cf1", "slow", PG_ASYNC, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let key = pg.h.key("cf1", "slow", &r.body["operation"]);
    pg.h.complete(&key, 5).await;
    assert_eq!(pg.h.last_op("cf1", "slow").await.body["state"], "succeeded");
    // The message delivered again: the operation is over, nothing is created twice.
    pg.h.complete(&key, 1).await;
    let r = pg.bind_with("cf1", "slow", "b", PG_ASYNC, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let bkey = pg.h.key("cf1", "slow", &r.body["operation"]);
    pg.h.complete(&bkey, 5).await;
    let got =
        pg.h.call(
            "cf1",
            Method::GET,
            "/v2/service_instances/slow/service_bindings/b",
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    login(&uri(&got.body)).await;
    let (dbs, roles) = pg.env.resources(&pg.prefix).await;
    assert_eq!((dbs.len(), roles.len()), (1, 2));
}

#[tokio::test]
async fn extensions_on_the_plan_list_are_created_others_are_refused_before_anything_exists() {
    let Some(pg) = setup() else { return };
    let r = pg
        .provision("cf1", "ext", PG_PLAN, json!({"extensions": ["pgcrypto"]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let c = login(&pg.bind("cf1", "ext", "b").await).await;
    assert_eq!(
        one_string(&c, "SELECT encode(digest('abc', 'sha256'), 'hex')").await,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let r = pg
        .provision(
            "cf1",
            "ext2",
            PG_PLAN,
            json!({"extensions": ["plpython3u"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("not allowed by this plan"),
        "{}",
        r.body
    );
    // On the list but not installed on the server: the provision fails, nothing is left behind.
    let r = pg
        .provision("cf1", "ext3", PG_PLAN, json!({"extensions": ["postgis"]}))
        .await;
    assert_ne!(r.status, StatusCode::CREATED, "{}", r.body);
    let (dbs, _) = pg.env.resources(&pg.prefix).await;
    assert_eq!(dbs, vec![pg.names("cf1", "ext").await.database]);
    // An update adds an extension of the list.
    let r =
        pg.h.call(
            "cf1",
            Method::PATCH,
            "/v2/service_instances/ext",
            Some(json!({"service_id": PG_SERVICE, "parameters": {"extensions": ["citext"]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        one_string(&c, "SELECT ('ABC'::citext = 'abc'::citext)::text").await,
        "true"
    );
}

#[tokio::test]
async fn rotation_and_expiry_work_with_real_roles() {
    let Some(pg) = setup() else { return };
    let r = pg.provision("cf1", "rot", PG_TTL, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first = pg.bind_with("cf1", "rot", "b1", PG_TTL, json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    // The manual clock is at 1_800_000_000_000 (2027-01-15T08:00:00Z); the plan's credentials live 1 h.
    assert_eq!(
        first.body["metadata"]["expires_at"],
        "2027-01-15T09:00:00.000Z"
    );
    let role = first.body["credentials"]["username"].as_str().unwrap();
    let admin = pg.env.admin().await;
    let valid_until: String = admin
        .query_one(
            "SELECT to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(valid_until, "2027-01-15T09:00:00");
    let second = pg
        .bind_with(
            "cf1",
            "rot",
            "b2",
            PG_TTL,
            json!({"predecessor_binding_id": "b1"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_ne!(uri(&second.body), uri(&first.body));
    login(&uri(&first.body)).await;
    login(&uri(&second.body)).await;
    assert_eq!(
        pg.unbind("cf1", "rot", "b1", PG_TTL).await.status,
        StatusCode::OK
    );
    assert!(connect(&uri(&first.body)).await.is_err());
    login(&uri(&second.body)).await;
    // A role past its VALID UNTIL cannot log in.
    admin
        .batch_execute(&format!(
            "ALTER ROLE \"{}\" VALID UNTIL '2000-01-01'",
            second.body["credentials"]["username"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&refused(&uri(&second.body), "expired").await),
        "28P01"
    );
}

#[tokio::test]
async fn simulated_plans_still_go_to_the_simulated_backend() {
    let Some(pg) = setup() else { return };
    let r = pg.provision("cf1", "sim", SIM_PLAN, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r =
        pg.h.call(
            "cf1",
            Method::PUT,
            "/v2/service_instances/sim/service_bindings/b",
            Some(json!({"service_id": SIM_SERVICE, "plan_id": SIM_PLAN})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(uri(&r.body).contains("simulated.invalid"));
    assert_eq!(pg.env.resources(&pg.prefix).await, (vec![], vec![]));
}

#[tokio::test]
async fn no_binding_password_reaches_the_server_log() {
    let Some(pg) = setup() else { return };
    pg.ok_provision("cf1", "log").await;
    let mut passwords = Vec::new();
    let mut roles = Vec::new();
    for b in ["l1", "l2", "l3"] {
        let r = pg.bind_with("cf1", "log", b, PG_PLAN, json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED);
        passwords.push(
            r.body["credentials"]["password"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        roles.push(
            r.body["credentials"]["username"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        login(&uri(&r.body)).await;
    }
    let log = pg.env.server_log();
    for role in &roles {
        // The statements are logged (so the check below can fail), with a verifier as the password.
        let line = log
            .lines()
            .find(|l| l.contains(&format!("CREATE ROLE \"{role}\"")))
            .unwrap_or_else(|| panic!("CREATE ROLE of {role} is not in the server log"));
        assert!(line.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{line}");
    }
    for p in &passwords {
        assert!(
            !log.contains(p.as_str()),
            "a binding password is in the server log"
        );
    }
}

fn backend_job(kind: OperationKind, op: &str, instance: &str) -> BackendJob {
    BackendJob {
        kind,
        operation_id: OperationId::parse(op).unwrap(),
        tenant: "cf1".into(),
        instance_id: InstanceId::parse(instance).unwrap(),
        generation: 1,
        binding_id: None,
        binding_generation: 0,
        lease: None,
        service_id: PG_SERVICE.into(),
        plan_id: PG_PLAN.into(),
        parameters: json!({"extensions": ["citext"]}).as_object().cloned(),
        started_at: 1_800_000_000_000,
        context: None,
        originating_identity: None,
        accepts_incomplete: false,
        bind_resource: None,
        organization_guid: None,
        space_guid: None,
    }
}

fn binding_job(instance: &BackendJob, kind: OperationKind, op: &str, b: &str) -> BackendJob {
    let mut j = instance.clone();
    j.kind = kind;
    j.operation_id = OperationId::parse(op).unwrap();
    j.binding_id = Some(BindingId::parse(b).unwrap());
    j.binding_generation = 1;
    j.parameters = None;
    j
}

#[tokio::test]
async fn a_crash_between_any_two_steps_is_completed_by_the_next_start_of_the_same_operation() {
    let Some(env) = pg_env() else { return };
    let prefix = unique_prefix();
    let catalog = Arc::new(Catalog::new(catalog("test")).unwrap());
    let backend = |fault: Option<&'static str>| {
        let b = PostgresBackend::new(
            catalog.clone(),
            env.server_config(&prefix).validate("test").unwrap(),
            [5u8; 32],
        )
        .unwrap();
        match fault {
            Some(step) => b.with_fault(Arc::new(move |s: &str| s == step)),
            None => b,
        }
    };
    let healthy = backend(None);
    async fn crash_then_finish(
        faulty: &PostgresBackend,
        healthy: &PostgresBackend,
        job: &BackendJob,
        step: &str,
    ) -> BackendOutcome {
        let e = faulty
            .start(job)
            .await
            .expect_err("the fault stops the job");
        assert!(e.0.contains(step), "{e}");
        let done = healthy.start(job).await.unwrap();
        assert!(matches!(done, BackendOutcome::Done(_)), "{step}: {done:?}");
        done
    }
    let provision_steps = [
        "create the owner role",
        "create the database",
        "restrict the database",
        "prepare the database",
    ];
    for (n, step) in provision_steps.iter().enumerate() {
        let inst = format!("crash-{n}");
        let provision = backend_job(
            OperationKind::Provision,
            "01JE0000000000000000000001",
            &inst,
        );
        crash_then_finish(&backend(Some(step)), &healthy, &provision, step).await;

        // A bind that crashed after creating its role, before the broker's commit: the same
        // operation started again answers credentials that log in.
        let bind = binding_job(
            &provision,
            OperationKind::Bind,
            "01JE0000000000000000000002",
            "b",
        );
        let BackendOutcome::Done(Done::Binding(creds)) = crash_then_finish(
            &backend(Some("create the binding role")),
            &healthy,
            &bind,
            "create the binding role",
        )
        .await
        else {
            panic!("a bind answers a binding")
        };
        let uri = creds.credentials.unwrap().0["uri"]
            .as_str()
            .unwrap()
            .to_owned();
        let c = login(&uri).await;
        c.batch_execute("CREATE TABLE kept (x citext); INSERT INTO kept VALUES ('A')")
            .await
            .unwrap();
        drop(c);
        let keep = binding_job(
            &provision,
            OperationKind::Bind,
            "01JE0000000000000000000003",
            "keep",
        );
        let BackendOutcome::Done(Done::Binding(keep_creds)) = healthy.start(&keep).await.unwrap()
        else {
            panic!("a bind answers a binding")
        };
        let keep_uri = keep_creds.credentials.unwrap().0["uri"]
            .as_str()
            .unwrap()
            .to_owned();

        let unbind_step = [
            "lock the binding role",
            "end the binding's sessions",
            "hand the binding's objects to the owner",
        ][n % 3];
        let unbind = binding_job(
            &provision,
            OperationKind::Unbind,
            "01JE0000000000000000000004",
            "b",
        );
        crash_then_finish(&backend(Some(unbind_step)), &healthy, &unbind, unbind_step).await;
        assert!(connect(&uri).await.is_err(), "the unbound role is gone");
        let kc = login(&keep_uri).await;
        assert_eq!(one_string(&kc, "SELECT x::text FROM kept").await, "A");
        drop(kc);

        let deprovision_step = ["lock the binding roles", "drop the database"][n % 2];
        let deprovision = backend_job(
            OperationKind::Deprovision,
            "01JE0000000000000000000005",
            &inst,
        );
        crash_then_finish(
            &backend(Some(deprovision_step)),
            &healthy,
            &deprovision,
            deprovision_step,
        )
        .await;
    }
    assert_eq!(env.resources(&prefix).await, (vec![], vec![]));
}

async fn get(pg: &Pg, tenant: &str, id: &str) -> Resp {
    pg.h.call(
        tenant,
        Method::GET,
        &format!("/v2/service_instances/{id}"),
        None,
    )
    .await
}

#[tokio::test]
async fn the_sharing_story_on_a_real_server() {
    let Some(pg) = setup() else { return };
    // The owner in cf1 provisions and binds.
    pg.ok_provision("cf1", "owner").await;
    let owner_uri = pg.bind("cf1", "owner", "ob").await;
    let owner = login(&owner_uri).await;
    owner
        .batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)")
        .await
        .unwrap();
    // A leaser in cf2 provisions with the owner's sharing token: a lease, no new database.
    let token =
        get(&pg, "cf1", "owner").await.body["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let r = pg
        .provision("cf2", "lease", PG_PLAN, json!({"sharing_token": token}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (dbs, _) = pg.env.resources(&pg.prefix).await;
    assert_eq!(dbs, vec![pg.names("cf1", "owner").await.database]);
    // Its binding is a role on the owner's database: both see each other's tables.
    let lease_bind = pg.bind_with("cf2", "lease", "lb", PG_PLAN, json!({})).await;
    assert_eq!(
        lease_bind.status,
        StatusCode::CREATED,
        "{}",
        lease_bind.body
    );
    let lease_uri = uri(&lease_bind.body);
    assert_ne!(lease_uri, owner_uri);
    assert_eq!(
        lease_bind.body["credentials"]["name"],
        pg.names("cf1", "owner").await.database
    );
    let leaser = login(&lease_uri).await;
    leaser
        .batch_execute("INSERT INTO orders VALUES (2); CREATE TABLE returns (id int)")
        .await
        .unwrap();
    let n: i64 = owner
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    owner
        .batch_execute("INSERT INTO returns VALUES (1)")
        .await
        .unwrap();

    // A lease binding with a binding id the owner already uses, in the same binding generation (the manual
    // clock has not moved): the lease is part of the binding's identity (`BackendJob::lease`), so it gets a
    // role of its own, and the owner's keeps working.
    let same_id = pg.bind_with("cf2", "lease", "ob", PG_PLAN, json!({})).await;
    assert_eq!(same_id.status, StatusCode::CREATED, "{}", same_id.body);
    let same_id_uri = uri(&same_id.body);
    assert_ne!(same_id_uri, owner_uri);
    assert_ne!(
        same_id.body["credentials"]["username"],
        owner_bind_username(&owner_uri)
    );
    login(&same_id_uri).await;
    login(&owner_uri).await;

    // The owner cannot be deleted while leased.
    let r = pg.deprovision("cf1", "owner", PG_PLAN).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // A purge revokes the leaser's role (run by the worker); the owner's binding keeps working.
    let r =
        pg.h.call(
            "cf1",
            Method::PATCH,
            "/v2/service_instances/owner",
            Some(json!({"service_id": PG_SERVICE, "parameters": {"x_osb_cmdb": {"leases": []}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let binding =
        pg.h.broker
            .store
            .get_binding(
                "cf2",
                &InstanceId::parse("lease").unwrap(),
                &BindingId::parse("lb").unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
    let key = osb_broker::records::OperationKey {
        tenant: "cf2".into(),
        instance_id: InstanceId::parse("lease").unwrap(),
        operation_id: binding.item.last_operation.clone().unwrap(),
    };
    pg.h.complete(&key, 5).await;
    assert!(
        leaser.simple_query("SELECT 1").await.is_err(),
        "its session was ended"
    );
    let e = refused(&lease_uri, "the leaser can no longer log in").await;
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let again = login(&owner_uri).await;
    let n: i64 = again
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the data the leaser wrote stays");
    // With no lease left, the owner can be deleted; the database and every role go.
    drop((owner, again));
    assert_eq!(
        pg.unbind("cf1", "owner", "ob", PG_PLAN).await.status,
        StatusCode::OK
    );
    let r = pg.deprovision("cf1", "owner", PG_PLAN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(pg.env.resources(&pg.prefix).await, (vec![], vec![]));
}

#[test]
fn the_example_configuration_of_the_readme_loads_and_names_fields_when_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pw = dir.path().join("pg-admin-password");
    std::fs::write(&pw, "example-secret\n").unwrap();
    let text = std::fs::read_to_string(root.join("docs/examples/postgresql.toml"))
        .unwrap()
        .replace("@PORT@", "5432")
        .replace("@PASSWORD_FILE@", pw.to_str().unwrap());
    std::fs::write(dir.path().join("broker.toml"), &text).unwrap();
    std::fs::copy(
        root.join("docs/examples/postgresql-catalog.json"),
        dir.path().join("catalog.json"),
    )
    .unwrap();
    let mut cfg = osb_broker::config::BrokerConfig::load(&dir.path().join("broker.toml")).unwrap();
    cfg.data_dir = dir.path().join("data");
    let servers = cfg.postgresql_servers().unwrap();
    assert_eq!(servers[0].password.expose(), "example-secret");
    assert!(!format!("{servers:?}").contains("example-secret"));
    // Building the broker connects to nothing: it starts even while the server is down.
    osb_broker::embedded::build_default(&cfg).unwrap();

    // A plan naming a server the configuration lacks stops start-up, naming both.
    let mut unknown = cfg.clone();
    unknown.postgresql_servers.clear();
    let e = osb_broker::embedded::build_default(&unknown)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("backend.server 'local'") && e.contains("0c5a1e0e-8f1b-4d52-9a0e-5b0f6c2d7a11"),
        "{e}"
    );
    // A bad server field is named.
    let mut bad = cfg.clone();
    bad.postgresql_servers
        .get_mut("local")
        .unwrap()
        .database_prefix = "Has-Caps".into();
    let e = osb_broker::embedded::build_default(&bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("postgresql_servers.local.database_prefix"),
        "{e}"
    );
    assert!(!e.contains("example-secret"));
}

/// The user name in a `postgresql://user:password@…` URI.
fn owner_bind_username(uri: &str) -> String {
    uri.trim_start_matches("postgresql://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The three TLS modes against the test server (which has a certificate for 127.0.0.1 signed by a
/// throw-away CA): `require` and `verify-full` with that CA provision and deprovision; `verify-full`
/// with a CA that signed nothing is refused before anything is created.
#[tokio::test]
async fn tls_modes_connect_as_configured() {
    let Some(env) = pg_env() else { return };
    let ca = std::env::var("OSB_PG_CA_FILE").expect("OSB_PG_CA_FILE (scripts/postgres.sh sets it)");
    let other = std::env::var("OSB_PG_OTHER_CA_FILE").expect("OSB_PG_OTHER_CA_FILE");
    let backend_with = |tls: &str, prefix: &str| {
        let cfg: osb_broker::backends::postgresql::ServerConfig = toml::from_str(&format!(
            "host = \"{}\"\nport = {}\nadmin_user = \"{}\"\npassword = \"{}\"\ndatabase_prefix = \"{prefix}\"\n{tls}",
            env.host, env.port, env.admin_user, env.admin_password
        ))
        .unwrap();
        PostgresBackend::new(
            Arc::new(Catalog::new(catalog("test")).unwrap()),
            cfg.validate("test").unwrap(),
            [5u8; 32],
        )
        .unwrap()
    };
    for tls in [
        "tls = \"require\"".to_owned(),
        format!("tls = \"verify-full\"\nca_file = \"{ca}\""),
    ] {
        let prefix = unique_prefix();
        let backend = backend_with(&tls, &prefix);
        let provision = backend_job(
            OperationKind::Provision,
            "01JG0000000000000000000001",
            "tls",
        );
        assert!(
            matches!(backend.start(&provision).await, Ok(BackendOutcome::Done(_))),
            "{tls}"
        );
        assert_eq!(env.resources(&prefix).await.0.len(), 1, "{tls}");
        let mut deprovision = provision.clone();
        deprovision.kind = OperationKind::Deprovision;
        deprovision.parameters = None;
        assert!(matches!(
            backend.start(&deprovision).await,
            Ok(BackendOutcome::Done(Done::Deleted))
        ));
        assert_eq!(env.resources(&prefix).await, (vec![], vec![]), "{tls}");
    }
    let prefix = unique_prefix();
    let untrusted = backend_with(
        &format!("tls = \"verify-full\"\nca_file = \"{other}\""),
        &prefix,
    );
    let provision = backend_job(
        OperationKind::Provision,
        "01JG0000000000000000000002",
        "tls",
    );
    let e = untrusted
        .start(&provision)
        .await
        .expect_err("a certificate its CA did not sign");
    assert!(!e.0.contains(&env.admin_password), "{e}");
    assert_eq!(env.resources(&prefix).await, (vec![], vec![]));
}
