//! Test support: a moto server (DynamoDB, SQS, Secrets Manager protocols) on a free loopback port,
//! started once per test process from the project's `.venv` (installed by `scripts/test-tools.sh`),
//! and SDK clients pointed at it. The server exits with the test process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Moto {
    pub endpoint: String,
    /// The watchdog shell; it ends, and stops moto, when this process is gone.
    _watchdog: std::process::Child,
}

fn workspace_root() -> PathBuf {
    // shared/ is one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The moto server of this test process.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = workspace_root().join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test-tools.sh (the README's test command does)",
            bin.display()
        );
        let port = free_port();
        // A watchdog shell stops moto when this test process (its parent) is gone.
        let script = format!(
            "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m",
            bin.display(),
            parent = std::process::id()
        );
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .spawn()
            .expect("start moto");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _watchdog: watchdog,
        }
    })
}

impl Moto {
    /// SDK configuration for the moto endpoint with dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }
}

/// A new symmetric KMS key on moto (its id), for the KMS sealer.
pub async fn kms_key(sdk: &aws_config::SdkConfig) -> String {
    let out = aws_sdk_kms::Client::new(sdk)
        .create_key()
        .description("osb-broker test key")
        .send()
        .await
        .expect("create a KMS key on moto");
    out.key_metadata
        .map(|m| m.key_id)
        .expect("the new key's id")
}

/// A KMS sealer on moto with a key of its own.
pub async fn kms_sealer(sdk: &aws_config::SdkConfig) -> std::sync::Arc<super::KmsSealer> {
    let key = kms_key(sdk).await;
    std::sync::Arc::new(super::KmsSealer::new(aws_sdk_kms::Client::new(sdk), key))
}

/// A name no other test of this run uses.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}
