//! `[upstream_brokers.NAME]`: an existing OSB broker this broker fronts. Validated once at start-up; every
//! error names the field (`upstream_brokers.NAME.url: …`) and never shows the password.

use crate::tenants::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The OSB version sent when the configuration names none.
pub const DEFAULT_API_VERSION: &str = "2.17";

/// Longest a synchronous platform request waits for an upstream that went asynchronous: below the 60 s a
/// Cloud Foundry platform gives a request.
pub const MAX_SYNC_WAIT_SECS: u64 = 55;

/// An upstream broker as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the broker (`http://` or `https://`, no credentials, query or fragment).
    pub url: String,
    /// HTTP Basic user name.
    pub username: String,
    /// HTTP Basic password (or `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (trailing newline ignored); relative to the configuration file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `X-Broker-API-Version` sent to the upstream (`2.13` or later).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline of one upstream request (connect, send, response).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a request without `accepts_incomplete=true` waits for an upstream that answered 202.
    #[serde(default = "default_sync_wait_seconds")]
    pub sync_wait_seconds: u64,
    /// Only these offerings (by upstream name) are imported; all when empty.
    #[serde(default)]
    pub include: Vec<String>,
    /// These offerings (by upstream name) are not imported.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Put before (after) each imported offering's name.
    #[serde(default)]
    pub name_prefix: String,
    #[serde(default)]
    pub name_suffix: String,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.into()
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_sync_wait_seconds() -> u64 {
    45
}

/// A validated upstream broker.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// Base URL without a trailing `/`.
    pub base_url: String,
    /// The URL's host, redacted from descriptions shown to platforms.
    pub host: String,
    pub username: String,
    pub password: Secret,
    pub api_version: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub sync_wait: Duration,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub name_prefix: String,
    pub name_suffix: String,
}

/// A bad `[upstream_brokers.NAME]` entry.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("upstream_brokers.{name}.{field}: {reason}")]
pub struct UpstreamConfigError {
    pub name: String,
    pub field: &'static str,
    pub reason: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl UpstreamConfig {
    /// Resolves a relative `password_file` against the configuration file's folder.
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let Some(f) = &self.password_file
            && f.is_relative()
        {
            self.password_file = Some(dir.join(f));
        }
    }

    pub fn validate(&self, name: &str) -> Result<Upstream, UpstreamConfigError> {
        let err = |field: &'static str, reason: String| UpstreamConfigError {
            name: name.to_owned(),
            field,
            reason,
        };
        if !valid_name(name) {
            return Err(err(
                "name",
                "must be 1-63 characters of a-z, 0-9, '-' and '_'".into(),
            ));
        }
        let url = url::Url::parse(&self.url).map_err(|e| err("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("url", "must be http:// or https://".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "url",
                "must not carry credentials (use username and password)".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err("url", "must not have a query or a fragment".into()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("url", "has no host".into()))?
            .to_owned();
        if self.username.trim().is_empty() {
            return Err(err("username", "must not be empty".into()));
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "password",
                    "give either password or password_file, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    "password",
                    "password or password_file is required".into(),
                ));
            }
            (Some(p), None) => p.clone(),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    err(
                        "password_file",
                        format!("cannot read {}: {}", f.display(), e.kind()),
                    )
                })?;
                Secret::new(text.trim_end_matches(['\n', '\r']).to_owned())
            }
        };
        if password.expose().is_empty() {
            return Err(err("password", "must not be empty".into()));
        }
        let version_ok = self
            .api_version
            .split_once('.')
            .and_then(|(ma, mi)| Some((ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?)))
            .is_some_and(|(ma, mi)| ma == 2 && mi >= 13);
        if !version_ok {
            return Err(err(
                "api_version",
                format!(
                    "'{}' is not an OSB version 2.13 or later (e.g. 2.17)",
                    self.api_version
                ),
            ));
        }
        for (field, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if ms == 0 || ms > 600_000 {
                return Err(err(
                    field,
                    "must be between 1 and 600000 milliseconds".into(),
                ));
            }
        }
        if self.sync_wait_seconds > MAX_SYNC_WAIT_SECS {
            return Err(err(
                "sync_wait_seconds",
                format!("must be at most {MAX_SYNC_WAIT_SECS} (platforms time out at 60 s)"),
            ));
        }
        if let Some(both) = self.include.iter().find(|i| self.exclude.contains(i)) {
            return Err(err(
                "exclude",
                format!("'{both}' is both included and excluded"),
            ));
        }
        Ok(Upstream {
            name: name.to_owned(),
            base_url: self.url.trim_end_matches('/').to_owned(),
            host,
            username: self.username.clone(),
            password,
            api_version: self.api_version.clone(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            sync_wait: Duration::from_secs(self.sync_wait_seconds),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            name_prefix: self.name_prefix.clone(),
            name_suffix: self.name_suffix.clone(),
        })
    }
}

impl Upstream {
    /// Whether an offering of this upstream (by its upstream name) is imported.
    pub fn imports(&self, offering: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|i| i == offering))
            && !self.exclude.iter().any(|e| e == offering)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> UpstreamConfig {
        toml::from_str(toml_text).unwrap()
    }

    const OK: &str = "url = 'http://127.0.0.1:9000/'\nusername = 'u'\npassword = 'hunter2'\n";

    #[test]
    fn a_good_entry_gets_the_defaults() {
        let u = parse(OK).validate("up").unwrap();
        assert_eq!(u.base_url, "http://127.0.0.1:9000");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.api_version, "2.17");
        assert_eq!(u.request_timeout, Duration::from_secs(30));
        assert!(u.imports("anything"));
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn every_bad_field_is_named_and_the_password_never_shown() {
        let cases = [
            (
                "url = 'ftp://x'\nusername = 'u'\npassword = 'hunter2'",
                "url",
            ),
            (
                "url = 'http://a:b@x'\nusername = 'u'\npassword = 'hunter2'",
                "url",
            ),
            (
                "url = 'http://x?a=1'\nusername = 'u'\npassword = 'hunter2'",
                "url",
            ),
            (
                "url = 'http://x'\nusername = ' '\npassword = 'hunter2'",
                "username",
            ),
            ("url = 'http://x'\nusername = 'u'", "password"),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\npassword_file = '/nonexistent'",
                "password",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword_file = '/nonexistent/pw'",
                "password_file",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\napi_version = '2.12'",
                "api_version",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\napi_version = 'latest'",
                "api_version",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\nrequest_timeout_ms = 0",
                "request_timeout_ms",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\nconnect_timeout_ms = 0",
                "connect_timeout_ms",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\nsync_wait_seconds = 90",
                "sync_wait_seconds",
            ),
            (
                "url = 'http://x'\nusername = 'u'\npassword = 'hunter2'\ninclude = ['a']\nexclude = ['a']",
                "exclude",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).validate("up").unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("upstream_brokers.up.{field}:")),
                "{shown}"
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(parse(OK).validate("Bad Name").unwrap_err().field, "name");
        assert!(
            toml::from_str::<UpstreamConfig>("url = 'http://x'\nusername = 'u'\ncolour = 1")
                .is_err()
        );
    }

    #[test]
    fn the_password_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let mut c = parse("url = 'https://broker.example'\nusername = 'u'\npassword_file = 'pw'");
        c.resolve_paths(dir.path());
        assert_eq!(c.validate("up").unwrap().password.expose(), "s3cret");
    }

    #[test]
    fn include_and_exclude_select_offerings() {
        let u = parse(&format!("{OK}include = ['a', 'b']\nexclude = ['c']"))
            .validate("up")
            .unwrap();
        assert!(u.imports("a") && u.imports("b"));
        assert!(!u.imports("c") && !u.imports("d"));
        let u = parse(&format!("{OK}exclude = ['c']"))
            .validate("up")
            .unwrap();
        assert!(u.imports("d") && !u.imports("c"));
    }
}
