//! The OSB client of one upstream broker: one request per call (no redirects, no retries, no proxy), HTTP
//! Basic, `X-Broker-API-Version`, and the originating identity only where the caller gives it (mutating
//! requests). Answers are classified once: an answer (status, JSON body if any, `Retry-After`), a request
//! that never left (connect failure: nothing happened upstream), or one whose fate is unknown (timeout or
//! a connection lost after sending: the upstream may have acted). Bodies are read up to a bound and never
//! logged.

use super::config::Upstream;
use crate::identity::OriginatingIdentity;
use crate::ports::BackendError;
use base64::Engine;
use serde_json::Value;
use std::sync::Arc;

/// Largest upstream response body read (a catalog with many schemas fits).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What became of one request. `Debug` never shows a body (a bind's carries credentials).
#[derive(Clone, PartialEq)]
pub enum Sent {
    /// The upstream answered. `body` is `None` when it is not JSON.
    Answer {
        status: u16,
        body: Option<Value>,
        retry_after: Option<u64>,
    },
    /// The request never reached the upstream (connect failure): nothing happened there.
    NotSent(String),
    /// The request may have reached the upstream but no answer came (timeout, connection lost).
    Lost(String),
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sent::Answer {
                status,
                body,
                retry_after,
            } => f
                .debug_struct("Answer")
                .field("status", status)
                .field("json_body", &body.is_some())
                .field("retry_after", retry_after)
                .finish(),
            Sent::NotSent(e) => f.debug_tuple("NotSent").field(e).finish(),
            Sent::Lost(e) => f.debug_tuple("Lost").field(e).finish(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Method {
    Get,
    Put,
    Patch,
    Delete,
}

/// The client of one upstream.
#[derive(Clone)]
pub struct OsbClient {
    http: reqwest::Client,
    pub upstream: Arc<Upstream>,
}

impl std::fmt::Debug for OsbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsbClient")
            .field("upstream", &self.upstream.name)
            .finish()
    }
}

/// The `X-Broker-API-Originating-Identity` value of a parsed identity: `platform base64(json)`.
pub fn identity_header(id: &OriginatingIdentity) -> String {
    let json = serde_json::to_vec(&id.value).unwrap_or_default();
    format!(
        "{} {}",
        id.platform,
        base64::engine::general_purpose::STANDARD.encode(json)
    )
}

impl OsbClient {
    pub fn new(upstream: Arc<Upstream>) -> Result<Self, BackendError> {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .referer(false)
            .connect_timeout(upstream.connect_timeout)
            .timeout(upstream.request_timeout)
            .tls_certs_only(roots)
            .user_agent(concat!("osb-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackendError(format!("cannot build the upstream client: {e}")))?;
        Ok(OsbClient { http, upstream })
    }

    /// One request to `path` (starting with `/v2/`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        identity: Option<&OriginatingIdentity>,
        request_id: Option<&str>,
    ) -> Sent {
        let mut url = match url::Url::parse(&format!("{}{path}", self.upstream.base_url)) {
            Ok(u) => u,
            Err(_) => return Sent::NotSent("the upstream URL cannot take this path".into()),
        };
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let m = match method {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut rb = self
            .http
            .request(m, url)
            .basic_auth(
                &self.upstream.username,
                Some(self.upstream.password.expose()),
            )
            .header("X-Broker-API-Version", &self.upstream.api_version)
            .header("Accept", "application/json");
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        if let Some(id) = identity {
            rb = rb.header("X-Broker-API-Originating-Identity", identity_header(id));
        }
        if let Some(r) = request_id {
            rb = rb.header("X-Broker-API-Request-Identity", r);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return classify(&e),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match read_bounded(resp).await {
            Ok(bytes) => Sent::Answer {
                status,
                body: serde_json::from_slice(&bytes).ok(),
                retry_after,
            },
            Err(e) => Sent::Lost(e),
        }
    }
}

fn classify(e: &reqwest::Error) -> Sent {
    // The error's Display may name the URL; only its kind is kept.
    if e.is_connect() {
        Sent::NotSent("cannot connect to the upstream broker".into())
    } else if e.is_timeout() {
        Sent::Lost("no answer within the request timeout".into())
    } else {
        Sent::Lost("the connection failed before an answer arrived".into())
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY_BYTES {
                    return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) if e.is_timeout() => return Err("no answer within the request timeout".into()),
            Err(_) => return Err("the connection failed while the answer was read".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_body() {
        let s = Sent::Answer {
            status: 201,
            body: Some(serde_json::json!({"credentials": {"password": "hunter2"}})),
            retry_after: None,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn the_identity_header_is_platform_and_base64_json() {
        let id = OriginatingIdentity::parse("cloudfoundry eyJ1c2VyX2lkIjoiYWJjIn0=").unwrap();
        let h = identity_header(&id);
        assert_eq!(OriginatingIdentity::parse(&h).unwrap(), id);
        assert!(h.starts_with("cloudfoundry "));
    }
}
