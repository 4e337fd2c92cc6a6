//! The steps of provision, update, bind, unbind and deprovision. Each step first reads what exists and
//! does only what is missing, so the same job run again after a crash between any two statements
//! completes; every step runs under the server's admin lock.

use super::conn::{Session, StepError, exec};
use super::names::{InstanceNames, quote_ident, quote_literal};
use super::{PostgresBackend, PostgresPlan, StepOutcome};
use crate::model::responses::BindingResult;
use crate::model::{Credentials, Object};
use crate::ports::backend::{Done, InstanceResult};
use crate::ports::{BackendJob, iso8601_millis};
use crate::records::OperationKind;
use serde_json::json;
use tokio_postgres::Client;

/// What a binding role's comment starts with; the rest is the bind's operation id.
const BINDING_COMMENT: &str = "osb-broker binding, created by operation ";

type Step<T> = Result<T, StepOutcome>;

impl PostgresBackend {
    /// Runs the job under the server's admin lock.
    pub(super) async fn run(
        &self,
        job: &BackendJob,
        plan: &PostgresPlan,
        exts: &[String],
    ) -> Step<Done> {
        let session = self.pool.session().await?;
        let names = self.names(job);
        let result = match (job.kind, &job.binding_id) {
            (OperationKind::Provision, _) => self
                .provision(&session, &names, job, exts)
                .await
                .map(|()| Done::Instance(InstanceResult::default())),
            (OperationKind::Update, _) => self
                .update(&session, &names, exts)
                .await
                .map(|()| Done::Instance(InstanceResult::default())),
            (OperationKind::Deprovision, _) => self
                .deprovision(&session, &names)
                .await
                .map(|()| Done::Deleted),
            (OperationKind::Bind, Some(b)) => {
                let role = names.binding_role(&binding_identity(job, b), job.binding_generation);
                self.bind(&session, &names, &role, job, plan)
                    .await
                    .map(Done::Binding)
            }
            (OperationKind::Unbind, Some(b)) => {
                let role = names.binding_role(&binding_identity(job, b), job.binding_generation);
                self.unbind(&session, &names, &role)
                    .await
                    .map(|()| Done::Deleted)
            }
            (OperationKind::Bind | OperationKind::Unbind, None) => Err(StepOutcome::Failed(
                "a binding job without a binding id".into(),
            )),
        };
        // After a failed statement the connection is dropped (closing it releases the lock).
        if result.is_ok() || matches!(result, Err(StepOutcome::Failed(_))) {
            session.release().await;
        }
        result
    }

    /// After a step: stops here when the test fault hook says so.
    fn after(&self, step: &str) -> Step<()> {
        match &self.fault {
            Some(f) if f(step) => Err(StepOutcome::Retry(StepError(format!(
                "injected fault after step '{step}'"
            )))),
            _ => Ok(()),
        }
    }

    async fn exec(&self, client: &Client, step: &str, sql: &str) -> Step<()> {
        exec(&self.server().name, client, step, sql, false).await?;
        self.after(step)
    }

    async fn exists(&self, client: &Client, what: &str, sql: &str, name: &str) -> Step<bool> {
        client
            .query_opt(sql, &[&name])
            .await
            .map(|r| r.is_some())
            .map_err(|e| super::conn::describe(&self.server().name, what, &e, false).into())
    }

    async fn role_exists(&self, client: &Client, role: &str) -> Step<bool> {
        self.exists(
            client,
            "look for a role",
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            role,
        )
        .await
    }

    async fn database_exists(&self, client: &Client, db: &str) -> Step<bool> {
        self.exists(
            client,
            "look for a database",
            "SELECT 1 FROM pg_database WHERE datname = $1",
            db,
        )
        .await
    }

    /// The extensions of `exts` the server cannot create.
    async fn unavailable(&self, client: &Client, exts: &[String]) -> Step<Vec<String>> {
        if exts.is_empty() {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "SELECT name FROM pg_available_extensions WHERE name = ANY($1)",
                &[&exts],
            )
            .await
            .map_err(|e| {
                super::conn::describe(&self.server().name, "list available extensions", &e, false)
            })?;
        let available: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(exts
            .iter()
            .filter(|e| !available.contains(e))
            .cloned()
            .collect())
    }

    async fn check_available(&self, client: &Client, exts: &[String]) -> Step<()> {
        let missing = self.unavailable(client, exts).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StepOutcome::Failed(format!(
                "extension {} is not available on the database server",
                missing.join(", ")
            )))
        }
    }

    /// Public schema owned by the owner role, and the extensions (created as the owner), in the
    /// instance's database.
    async fn prepare_database(&self, names: &InstanceNames, exts: &[String]) -> Step<()> {
        let db = self.pool.connect(&names.database).await?;
        let owner = quote_ident(&names.owner);
        let mut sql = format!(
            "ALTER SCHEMA public OWNER TO {owner}; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
        );
        if !exts.is_empty() {
            sql.push_str(&format!(" SET LOCAL ROLE {owner};"));
            for e in exts {
                sql.push_str(&format!(
                    " CREATE EXTENSION IF NOT EXISTS {};",
                    quote_ident(e)
                ));
            }
        }
        self.exec(&db, "prepare the database", &sql).await
    }

    async fn provision(
        &self,
        s: &Session<'_>,
        names: &InstanceNames,
        job: &BackendJob,
        exts: &[String],
    ) -> Step<()> {
        let c = s.client()?;
        // Refused before anything is created, so a failed provision leaves nothing behind.
        self.check_available(c, exts).await?;
        let owner = quote_ident(&names.owner);
        let db = quote_ident(&names.database);
        if !self.role_exists(c, &names.owner).await? {
            // One implicit transaction: the role exists with the admin as its member, or not at all.
            self.exec(
                c,
                "create the owner role",
                &format!(
                    "CREATE ROLE {owner} NOLOGIN; GRANT {owner} TO CURRENT_USER; COMMENT ON ROLE {owner} IS {};",
                    quote_literal(&format!(
                        "osb-broker instance {} of tenant {} (generation {})",
                        job.instance_id, job.tenant, job.generation
                    ))
                ),
            )
            .await?;
        }
        if !self.database_exists(c, &names.database).await? {
            // Nobody can connect until PUBLIC's privileges are revoked (next step).
            self.exec(
                c,
                "create the database",
                &format!("CREATE DATABASE {db} OWNER {owner} ALLOW_CONNECTIONS false"),
            )
            .await?;
        }
        self.exec(
            c,
            "restrict the database",
            &format!(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC; ALTER DATABASE {db} ALLOW_CONNECTIONS true;"
            ),
        )
        .await?;
        self.prepare_database(names, exts).await
    }

    async fn update(&self, s: &Session<'_>, names: &InstanceNames, exts: &[String]) -> Step<()> {
        let c = s.client()?;
        if !self.database_exists(c, &names.database).await? {
            return Err(StepOutcome::Failed(
                "the instance's database does not exist on the server".into(),
            ));
        }
        self.check_available(c, exts).await?;
        self.prepare_database(names, exts).await
    }

    async fn deprovision(&self, s: &Session<'_>, names: &InstanceNames) -> Step<()> {
        let c = s.client()?;
        let bindings = self.binding_roles(c, names).await?;
        if !bindings.is_empty() {
            let sql: String = bindings
                .iter()
                .map(|r| format!("ALTER ROLE {} NOLOGIN;", quote_ident(r)))
                .collect();
            self.exec(c, "lock the binding roles", &sql).await?;
        }
        if self.database_exists(c, &names.database).await? {
            self.exec(
                c,
                "drop the database",
                &format!(
                    "DROP DATABASE {} WITH (FORCE)",
                    quote_ident(&names.database)
                ),
            )
            .await?;
        }
        let roles: Vec<String> = bindings
            .iter()
            .chain(std::iter::once(&names.owner))
            .map(|r| quote_ident(r))
            .collect();
        self.exec(
            c,
            "drop the roles",
            &format!("DROP ROLE IF EXISTS {}", roles.join(", ")),
        )
        .await
    }

    /// The binding roles of an instance that exist.
    async fn binding_roles(&self, c: &Client, names: &InstanceNames) -> Step<Vec<String>> {
        let rows = c
            .query(
                "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
                &[&names.binding_prefix],
            )
            .await
            .map_err(|e| {
                super::conn::describe(&self.server().name, "list the binding roles", &e, false)
            })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The comment of a role, `None` when the role does not exist.
    async fn role_comment(&self, c: &Client, role: &str) -> Step<Option<String>> {
        let row = c
            .query_opt(
                "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(|e| super::conn::describe(&self.server().name, "look for a role", &e, false))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The binding's password: derived from the server, the role and the bind's operation id.
    fn password(&self, role: &str, job: &BackendJob) -> String {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let limit = 256 - (256 % ALNUM.len());
        let mut out = String::with_capacity(32);
        let mut counter = 0u32;
        while out.len() < 32 {
            let msg = format!(
                "osb-broker postgresql password\n{counter}\n{}\n{role}\n{}",
                self.server().name,
                job.operation_id
            );
            for byte in crate::sharing::token::hmac_sha256(&self.key, msg.as_bytes()) {
                // Rejection sampling keeps the characters uniform.
                if (byte as usize) < limit && out.len() < 32 {
                    out.push(ALNUM[byte as usize % ALNUM.len()] as char);
                }
            }
            counter += 1;
        }
        out
    }

    async fn bind(
        &self,
        s: &Session<'_>,
        names: &InstanceNames,
        role: &str,
        job: &BackendJob,
        plan: &PostgresPlan,
    ) -> Step<BindingResult> {
        let c = s.client()?;
        if !self.database_exists(c, &names.database).await? {
            return Err(StepOutcome::Failed(
                "the instance's database does not exist on the server".into(),
            ));
        }
        let comment = format!("{BINDING_COMMENT}{}", job.operation_id);
        let password = self.password(role, job);
        // Only the SCRAM-SHA-256 verifier reaches the server (and its statement log).
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let expiry = plan.credential_ttl_seconds.map(|ttl| {
            job.started_at
                .saturating_add((ttl as i64).saturating_mul(1000))
        });
        let valid_until = quote_literal(&match expiry {
            Some(ms) => iso8601_millis(ms),
            None => "infinity".into(),
        });
        let r = quote_ident(role);
        let owner = quote_ident(&names.owner);
        let db = quote_ident(&names.database);
        match self.role_comment(c, role).await? {
            None => {
                let limit = plan.connection_limit.map_or(-1, i64::from);
                let mut sql = format!(
                    "CREATE ROLE {r} LOGIN PASSWORD {} CONNECTION LIMIT {limit} VALID UNTIL {valid_until} IN ROLE {owner};
                     COMMENT ON ROLE {r} IS {};
                     ALTER ROLE {r} IN DATABASE {db} SET role = {};
                     GRANT {r} TO CURRENT_USER;",
                    quote_literal(&verifier),
                    quote_literal(&comment),
                    quote_literal(&names.owner),
                );
                if let Some(ms) = plan.statement_timeout_ms {
                    sql.push_str(&format!(
                        " ALTER ROLE {r} IN DATABASE {db} SET statement_timeout = {ms};"
                    ));
                }
                // One implicit transaction: the role exists complete, or not at all.
                exec(
                    &self.server().name,
                    c,
                    "create the binding role",
                    &sql,
                    true,
                )
                .await?;
                self.after("create the binding role")?;
            }
            Some(existing) if existing == comment => {
                // The same bind again (a crash before the broker's commit): the same password, set again.
                let sql = format!(
                    "ALTER ROLE {r} LOGIN PASSWORD {} VALID UNTIL {valid_until}",
                    quote_literal(&verifier)
                );
                exec(
                    &self.server().name,
                    c,
                    "set the binding password",
                    &sql,
                    true,
                )
                .await?;
            }
            Some(_) => {
                return Err(StepOutcome::Failed(format!(
                    "binding id '{}' is already used by another binding of this database (an owner and a lease that bound the same binding id); bind with another binding id",
                    job.binding_id.as_ref().map_or("", |b| b.as_str())
                )));
            }
        }
        Ok(self.credentials(names, role, &password, job, expiry))
    }

    fn credentials(
        &self,
        names: &InstanceNames,
        role: &str,
        password: &str,
        job: &BackendJob,
        expiry: Option<i64>,
    ) -> BindingResult {
        let server = self.server();
        let (host, port, db) = (&server.public_host, server.public_port, &names.database);
        // Names are hex and '_', passwords alphanumeric: nothing in the URIs needs escaping.
        let mut creds = Object::new();
        creds.insert(
            "uri".into(),
            json!(format!("postgresql://{role}:{password}@{host}:{port}/{db}")),
        );
        creds.insert(
            "jdbcUrl".into(),
            json!(format!(
                "jdbc:postgresql://{host}:{port}/{db}?user={role}&password={password}"
            )),
        );
        creds.insert("hostname".into(), json!(host));
        creds.insert("port".into(), json!(port));
        creds.insert("name".into(), json!(db));
        creds.insert("username".into(), json!(role));
        creds.insert("password".into(), json!(password));
        let metadata = expiry.map(|expires| {
            let renew = job.started_at + (expires - job.started_at) * 4 / 5;
            let mut m = Object::new();
            m.insert("expires_at".into(), json!(iso8601_millis(expires)));
            m.insert("renew_before".into(), json!(iso8601_millis(renew)));
            m
        });
        BindingResult {
            credentials: Some(Credentials(creds)),
            metadata,
            endpoints: Some(vec![
                json!({"host": host, "ports": [port.to_string()], "protocol": "tcp"}),
            ]),
            ..Default::default()
        }
    }

    async fn unbind(&self, s: &Session<'_>, names: &InstanceNames, role: &str) -> Step<()> {
        let c = s.client()?;
        if !self.role_exists(c, role).await? {
            return Ok(());
        }
        let r = quote_ident(role);
        // No new session, then the open ones ended (waiting up to 5 s each).
        self.exec(
            c,
            "lock the binding role",
            &format!("ALTER ROLE {r} NOLOGIN; GRANT {r} TO CURRENT_USER;"),
        )
        .await?;
        c.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .map_err(|e| {
            super::conn::describe(&self.server().name, "end the binding's sessions", &e, false)
        })?;
        self.after("end the binding's sessions")?;
        if self.database_exists(c, &names.database).await? {
            // What the binding made belongs to the owner (the data stays), its privileges go.
            let db = self.pool.connect(&names.database).await?;
            self.exec(
                &db,
                "hand the binding's objects to the owner",
                &format!(
                    "REASSIGN OWNED BY {r} TO {}; DROP OWNED BY {r};",
                    quote_ident(&names.owner)
                ),
            )
            .await?;
        }
        self.exec(
            c,
            "drop the binding role",
            &format!("DROP ROLE IF EXISTS {r}"),
        )
        .await
    }
}

/// The binding's identity within its instance: its id, and for a lease's binding the lease too (so a lease's
/// binding never shares a role with one of the owner's own with the same id and generation). The owner's
/// own bindings keep the names they always had.
fn binding_identity(job: &BackendJob, binding: &crate::ids::BindingId) -> String {
    match &job.lease {
        None => binding.as_str().to_owned(),
        Some((tenant, instance)) => format!(
            "lease\0{tenant}\0{}\0{}",
            instance.as_str(),
            binding.as_str()
        ),
    }
}
