//! Wiring of the API Lambda, kept in a library so that event-fixture tests drive the same code.

pub mod app {
    use osb_broker::aws::{self, AwsConfig};
    #[cfg(feature = "embedded")]
    use osb_broker::config::BrokerConfig;
    use osb_broker::http::DEFAULT_BODY_LIMIT;
    #[cfg(feature = "embedded")]
    use std::path::PathBuf;

    /// Builds the router from the environment. With `OSB_TABLE_NAME` set: DynamoDB + SQS + tenants from
    /// Secrets Manager (every missing variable named at start-up). Otherwise the embedded adapters with
    /// `OSB_CONFIG` (a TOML file) or the demo defaults, data in `OSB_DATA_DIR` (default `/tmp/osb-broker`).
    pub async fn from_env() -> Result<axum::Router, lambda_http::Error> {
        if cfg!(not(feature = "embedded")) || std::env::var_os(aws::config::TABLE).is_some() {
            let cfg = AwsConfig::from_env(true)?;
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            return Ok(aws::api_router(&cfg, &sdk, DEFAULT_BODY_LIMIT).await?);
        }
        embedded_from_env()
    }

    #[cfg(not(feature = "embedded"))]
    fn embedded_from_env() -> Result<axum::Router, lambda_http::Error> {
        Err(
            "built without the embedded store: set OSB_TABLE_NAME and the other OSB_* variables"
                .into(),
        )
    }

    #[cfg(feature = "embedded")]
    fn embedded_from_env() -> Result<axum::Router, lambda_http::Error> {
        let mut cfg = match std::env::var_os("OSB_CONFIG") {
            Some(p) => BrokerConfig::load(&PathBuf::from(p))?,
            None => BrokerConfig::default(),
        };
        if let Some(d) = std::env::var_os("OSB_DATA_DIR") {
            cfg.data_dir = PathBuf::from(d);
        } else if std::env::var_os("OSB_CONFIG").is_none() {
            cfg.data_dir = PathBuf::from("/tmp/osb-broker");
        }
        build(&cfg)
    }

    /// The router on the embedded adapters.
    #[cfg(feature = "embedded")]
    pub fn build(cfg: &BrokerConfig) -> Result<axum::Router, lambda_http::Error> {
        let embedded = osb_broker::embedded::build_default(cfg)?;
        Ok(osb_broker::http::router(embedded.state))
    }
}
