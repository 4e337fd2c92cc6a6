//! Wiring of the API Lambda, kept in a library so that event-fixture tests drive the same code.

pub mod app {
    use osb_broker::config::BrokerConfig;
    use std::path::PathBuf;

    /// Builds the router from the environment: `OSB_CONFIG` (a TOML file) or the demo defaults with
    /// the data directory `OSB_DATA_DIR` (default `/tmp/osb-broker`).
    pub fn from_env() -> Result<axum::Router, lambda_http::Error> {
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

    pub fn build(cfg: &BrokerConfig) -> Result<axum::Router, lambda_http::Error> {
        let embedded = osb_broker::embedded::build_default(cfg)?;
        Ok(osb_broker::http::router(embedded.state))
    }
}
