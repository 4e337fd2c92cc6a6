//! The webhook sender port: one HTTP POST attempt of a signed callback to a platform's URL. The guarded
//! `reqwest` adapter (`webhooks::http`, feature `webhook-sender`) enforces the SSRF policy at connect time;
//! the domain (`broker::webhooks`) decides what an outcome means (delivered, retry, final).

use async_trait::async_trait;
use bytes::Bytes;
use std::net::IpAddr;
use std::time::Duration;

/// One attempt to send: the exact bytes and headers. The URL was validated when it was registered and is
/// checked again by the sender (literal IPs before the request, names in the resolver).
#[derive(Clone)]
pub struct WebhookRequest {
    pub url: String,
    /// Header names in lower case; values never logged.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL's path/query, the body or the signature headers.
        f.debug_struct("WebhookRequest")
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// The receiver answered 410 Gone: stop.
    Gone,
    /// A 3xx: never followed; counted as a failed attempt.
    Redirect { status: u16 },
    /// Any other status; `retry_after` from the receiver's `Retry-After` header, when valid.
    HttpStatus {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No response within the attempt's deadline (connect, TLS, upload or response headers).
    Timeout,
    /// Connection refused or reset.
    ConnectError,
    /// The name did not resolve (NXDOMAIN, resolver timeout).
    DnsError,
    /// TLS handshake or certificate failure.
    TlsError,
    /// Every address of the destination is blocked by the SSRF policy: nothing was dialled.
    BlockedDestination,
    /// The URL no longer passes validation.
    InvalidUrl,
}

impl AttemptOutcome {
    /// The outcome class recorded with each attempt.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Gone => "gone",
            AttemptOutcome::Redirect { .. } => "redirect",
            AttemptOutcome::HttpStatus { .. } => "http_status",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::DnsError => "dns_error",
            AttemptOutcome::TlsError => "tls_error",
            AttemptOutcome::BlockedDestination => "blocked_destination",
            AttemptOutcome::InvalidUrl => "invalid_url",
        }
    }

    /// The HTTP status, when the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Delivered { status }
            | AttemptOutcome::Redirect { status }
            | AttemptOutcome::HttpStatus { status, .. } => Some(*status),
            AttemptOutcome::Gone => Some(410),
            _ => None,
        }
    }
}

/// What the sender reports about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub duration: Duration,
    /// The vetted address actually dialled, when a connection was made.
    pub remote_ip: Option<IpAddr>,
}

#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// Makes exactly one attempt (no internal retries, no redirects) and never reads more than a small
    /// bound of the response body.
    async fn send(&self, request: &WebhookRequest) -> AttemptReport;
}
