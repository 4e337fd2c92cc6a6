//! The admin's connections to one server: connecting (TLS as configured), a small pool of connections to
//! the admin database, the advisory lock that serialises the broker's admin statements on the server,
//! statements retried on "tuple concurrently updated", and errors reduced to what is safe to show.

use super::config::{Server, TlsMode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// The advisory lock key every broker process takes on a server's admin database before its admin
/// statements (`'osb-broker'` as a number): at most one job changes roles and databases at a time.
const ADMIN_LOCK_KEY: i64 = 0x6f73_622d_6272_6f6b;

/// How often a statement that met "tuple concurrently updated" is tried again at once.
const CONCURRENT_UPDATE_RETRIES: u32 = 5;

/// A step that did not complete; the text holds no secret (never a password, a verifier or the SQL of a
/// statement that carries one).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct StepError(pub String);

/// The text of a failed statement: the step, the SQLSTATE and, unless the statement carries a secret, the
/// server's message.
pub fn describe(server: &str, step: &str, e: &tokio_postgres::Error, secret: bool) -> StepError {
    let detail = match e.as_db_error() {
        Some(db) if secret => format!("SQLSTATE {}", db.code().code()),
        Some(db) => format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        // Connection and protocol errors carry no statement text.
        None => e.to_string(),
    };
    StepError(format!("postgresql server '{server}': {step}: {detail}"))
}

fn concurrently_updated(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code() == &SqlState::INTERNAL_ERROR
            && db.message().contains("tuple concurrently updated")
    })
}

/// Connections to one server.
pub struct Pool {
    pub server: Arc<Server>,
    idle: Mutex<Vec<Client>>,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Pool {
    pub fn new(server: Arc<Server>) -> Result<Self, StepError> {
        let tls = match server.tls {
            TlsMode::Disable => None,
            mode => Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                mode,
                &server.ca_certs,
            )?)),
        };
        Ok(Pool {
            server,
            idle: Mutex::new(Vec::new()),
            tls,
        })
    }

    /// A new admin connection to `database`.
    pub async fn connect(&self, database: &str) -> Result<Client, StepError> {
        let s = &self.server;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&s.host)
            .port(s.port)
            .user(&s.admin_user)
            .password(s.password.expose())
            .dbname(database)
            .application_name("osb-broker")
            .connect_timeout(s.connect_timeout)
            .options(format!(
                "-c lock_timeout={} -c statement_timeout={}",
                s.lock_timeout.as_millis(),
                (s.lock_timeout + Duration::from_secs(30)).as_millis()
            ));
        let fail = |e: tokio_postgres::Error| describe(&s.name, "connect", &e, false);
        let client = match &self.tls {
            None => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
            Some(tls) => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, conn) = cfg.connect(tls.clone()).await.map_err(fail)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
        };
        Ok(client)
    }

    /// A connection to the admin database holding the server's admin lock.
    pub async fn session(&self) -> Result<Session<'_>, StepError> {
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match idle {
            Some(c) => c,
            None => self.connect(&self.server.admin_database).await?,
        };
        client
            .execute("SELECT pg_advisory_lock($1)", &[&ADMIN_LOCK_KEY])
            .await
            .map_err(|e| describe(&self.server.name, "take the admin lock", &e, false))?;
        Ok(Session {
            pool: self,
            client: Some(client),
        })
    }
}

/// A connection to the admin database that holds the server's admin lock. [`Session::release`] unlocks
/// it and keeps the connection; a session dropped otherwise (an error, a cancelled job) closes its
/// connection, which releases the lock on the server.
pub struct Session<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Session<'_> {
    pub fn client(&self) -> Result<&Client, StepError> {
        self.client
            .as_ref()
            .ok_or_else(|| StepError("admin session already released".into()))
    }

    pub fn server(&self) -> &Server {
        &self.pool.server
    }

    /// Unlocks and returns the connection to the pool.
    pub async fn release(mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client
            .execute("SELECT pg_advisory_unlock($1)", &[&ADMIN_LOCK_KEY])
            .await
            .is_err()
        {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.pool.server.admin_connections {
            idle.push(client);
        }
    }
}

/// Runs `sql` (one or more statements: a single implicit transaction), again on "tuple concurrently
/// updated". `secret`: the SQL carries a secret, so the error never includes the server's message.
pub async fn exec(
    server: &str,
    client: &Client,
    step: &str,
    sql: &str,
    secret: bool,
) -> Result<(), StepError> {
    let mut attempt = 0;
    loop {
        match client.batch_execute(sql).await {
            Ok(()) => return Ok(()),
            Err(e) if concurrently_updated(&e) && attempt < CONCURRENT_UPDATE_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(e) => return Err(describe(server, step, &e, secret)),
        }
    }
}

fn tls_config(mode: TlsMode, ca_certs: &[Vec<u8>]) -> Result<rustls::ClientConfig, StepError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StepError(format!("TLS set-up: {e}")))?;
    let config = match mode {
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            for der in ca_certs {
                roots
                    .add(rustls::pki_types::CertificateDer::from(der.clone()))
                    .map_err(|e| StepError(format!("TLS set-up: CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `tls = "require"`: the connection is encrypted and the handshake signatures checked, but the server's
/// certificate is not (the operator chose it knowingly; `verify-full` checks it).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
