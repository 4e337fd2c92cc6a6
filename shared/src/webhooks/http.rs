//! The guarded `reqwest` adapter of [`WebhookSender`]: exactly one POST per call, no redirects, no proxies,
//! no retries, bounded time, and only vetted addresses dialled (webhooks.md §5, §6).
//!
//! - The URL is checked again before every attempt ([`WebhookPolicy::check_url`]); a literal IP host (which
//!   never reaches a resolver) must pass [`WebhookPolicy::allows_ip`].
//! - Names go through [`GuardedResolver`]: it resolves with a timeout, drops every address the policy blocks
//!   and fails with [`GuardError::Blocked`] when none remain. The connector dials only what it returns, so a
//!   rebinding DNS server gets no second lookup.
//! - The response body is never read: the status line and headers are all we use.
//! - TLS: rustls with aws-lc-rs; the trust roots are the Mozilla set compiled in (`webpki-root-certs`), so the
//!   Lambda image needs no CA files.

use super::policy::{WebhookInputError, WebhookPolicy};
use super::schedule::parse_retry_after;
use crate::ports::{AttemptOutcome, AttemptReport, WebhookRequest, WebhookSender};
use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Timeouts of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// DNS lookup (inside the resolver). Default 2 s.
    pub dns_timeout: Duration,
    /// TCP connect (and DNS). Default 5 s.
    pub connect_timeout: Duration,
    /// The whole attempt up to the response headers. Default 15 s.
    pub timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            dns_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// Why the guarded resolver produced no address. Found in a `reqwest::Error`'s source chain to classify the
/// attempt. The messages never name the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("every address of the destination is blocked")]
    Blocked,
    #[error("the name did not resolve")]
    NotFound,
    #[error("name resolution timed out")]
    Timeout,
}

/// Keeps the addresses `policy` allows; [`GuardError::Blocked`] if there were some but none is allowed,
/// [`GuardError::NotFound`] if there were none.
pub fn filter_addrs(
    policy: &WebhookPolicy,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, GuardError> {
    let mut seen = false;
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .inspect(|_| seen = true)
        .filter(|a| policy.allows_ip(a.ip()))
        .collect();
    match (kept.is_empty(), seen) {
        (false, _) => Ok(kept),
        (true, true) => Err(GuardError::Blocked),
        (true, false) => Err(GuardError::NotFound),
    }
}

/// A `reqwest` resolver that only ever hands the connector addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<WebhookPolicy>,
    timeout: Duration,
}

impl GuardedResolver {
    pub fn new(policy: Arc<WebhookPolicy>, timeout: Duration) -> Self {
        GuardedResolver { policy, timeout }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let timeout = self.timeout;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| GuardError::Timeout)?
                .map_err(|_| GuardError::NotFound)?;
            let kept = filter_addrs(&policy, found)?;
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The client could not be built (TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("webhook HTTP client could not be built")]
pub struct SenderBuildError(#[source] reqwest::Error);

/// The production [`WebhookSender`].
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    policy: Arc<WebhookPolicy>,
}

impl HttpSender {
    /// Builds the guarded client once (at cold start).
    pub fn new(policy: WebhookPolicy, config: SenderConfig) -> Result<Self, SenderBuildError> {
        let policy = Arc::new(policy);
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .referer(false)
            .dns_resolver(GuardedResolver::new(
                Arc::clone(&policy),
                config.dns_timeout,
            ))
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .https_only(!policy.allow_http)
            .tls_certs_only(roots)
            .user_agent(concat!("osb-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SenderBuildError)?;
        Ok(HttpSender { client, policy })
    }

    /// One attempt to an already checked URL: the resolver is the only guard left for names.
    async fn dispatch(
        &self,
        url: &str,
        request: &WebhookRequest,
    ) -> (AttemptOutcome, Option<std::net::IpAddr>) {
        let Some(headers) = header_map(&request.headers) else {
            // Header names and values are built by the broker; a bad one is a bug, never retried.
            return (AttemptOutcome::InvalidUrl, None);
        };
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let remote_ip = response.remote_addr().map(|a| a.ip());
                let outcome = outcome_of(&response);
                // Dropped without reading the body.
                drop(response);
                (outcome, remote_ip)
            }
            // Never log `err`: its Display and Debug contain the full URL.
            Err(err) => (classify(&err), None),
        }
    }
}

fn header_map(headers: &[(String, String)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = HeaderValue::from_str(value).ok()?;
        map.append(name, value);
    }
    if !map.contains_key(CONTENT_TYPE) {
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Some(map)
}

fn outcome_of(response: &reqwest::Response) -> AttemptOutcome {
    let status = response.status().as_u16();
    match status {
        200..=299 => AttemptOutcome::Delivered { status },
        410 => AttemptOutcome::Gone,
        300..=399 => AttemptOutcome::Redirect { status },
        _ => AttemptOutcome::HttpStatus {
            status,
            retry_after: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        },
    }
}

/// Maps a failed send to an outcome class: our resolver's typed error first, then reqwest's own kinds, then
/// a best-effort look for TLS in the error chain.
fn classify(err: &reqwest::Error) -> AttemptOutcome {
    let mut tls = false;
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(guard) = e.downcast_ref::<GuardError>() {
            return match guard {
                GuardError::Blocked => AttemptOutcome::BlockedDestination,
                GuardError::NotFound | GuardError::Timeout => AttemptOutcome::DnsError,
            };
        }
        let text = e.to_string().to_ascii_lowercase();
        // rustls failures reach us as `io::Error`s of kind InvalidData, or name TLS in their text.
        let invalid_data = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(io_invalid_data);
        if invalid_data
            || text.contains("certificate")
            || text.contains("tls")
            || text.contains("handshake")
        {
            tls = true;
        }
        source = e.source();
    }
    if err.is_timeout() {
        AttemptOutcome::Timeout
    } else if tls {
        AttemptOutcome::TlsError
    } else if err.is_builder() {
        AttemptOutcome::InvalidUrl
    } else {
        AttemptOutcome::ConnectError
    }
}

/// Whether an `io::Error` is, or wraps (`get_ref`, which `source()` skips), one of kind InvalidData.
fn io_invalid_data(io: &std::io::Error) -> bool {
    let mut current = io;
    for _ in 0..8 {
        if current.kind() == std::io::ErrorKind::InvalidData {
            return true;
        }
        match current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        {
            Some(inner) => current = inner,
            None => return false,
        }
    }
    false
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn send(&self, request: &WebhookRequest) -> AttemptReport {
        let started = Instant::now();
        let (outcome, remote_ip) = match self.policy.check_url(&request.url) {
            Ok(url) => self.dispatch(url.as_str(), request).await,
            Err(WebhookInputError::NotPublic) => (AttemptOutcome::BlockedDestination, None),
            Err(_) => (AttemptOutcome::InvalidUrl, None),
        };
        AttemptReport {
            outcome,
            duration: started.elapsed(),
            remote_ip,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const SHORT: Duration = Duration::from_millis(300);
    /// Scheduling slack on a loaded 2-core machine.
    const EPSILON: Duration = Duration::from_millis(1500);

    fn test_config() -> SenderConfig {
        SenderConfig {
            dns_timeout: SHORT,
            connect_timeout: SHORT,
            timeout: SHORT,
        }
    }

    fn loopback_policy() -> WebhookPolicy {
        WebhookPolicy::default()
            .allowing_http()
            .allowing_loopback_for_local_mode()
    }

    fn sender(policy: WebhookPolicy) -> HttpSender {
        HttpSender::new(policy, test_config()).unwrap()
    }

    #[derive(Debug, Clone)]
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        }
    }

    #[derive(Clone, Copy)]
    enum Reply {
        Raw(&'static str),
        /// Writes at once, without reading the request (e.g. to a TLS ClientHello).
        Immediate(&'static str),
        Hang,
        HugeBody,
        EndlessChunked,
    }

    struct Receiver {
        port: u16,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Seen>>>,
    }

    impl Receiver {
        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
        fn requests(&self) -> Vec<Seen> {
            self.requests.lock().unwrap().clone()
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Option<Seen> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut seen = Seen {
            head,
            body: Vec::new(),
        };
        let len: usize = seen
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        seen.body = body;
        Some(seen)
    }

    /// A minimal HTTP/1.1 receiver on 127.0.0.1 that answers every request with `reply`.
    async fn receiver(reply: Reply) -> Receiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    if let Reply::Immediate(text) = reply {
                        let _ = stream.write_all(text.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        return;
                    }
                    let Some(seen) = read_request(&mut stream).await else {
                        return;
                    };
                    r.lock().unwrap().push(seen);
                    match reply {
                        Reply::Immediate(_) => {}
                        Reply::Raw(text) => {
                            let _ = stream.write_all(text.as_bytes()).await;
                            let _ = stream.flush().await;
                            // Keep the connection open briefly so the client reads at its own pace.
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                        Reply::HugeBody => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10485760\r\n\r\n")
                                .await;
                            let block = vec![b'x'; 64 * 1024];
                            for _ in 0..160 {
                                if stream.write_all(&block).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Reply::EndlessChunked => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                                .await;
                            let mut chunk = b"10000\r\n".to_vec();
                            chunk.extend(std::iter::repeat_n(b'y', 0x10000));
                            chunk.extend_from_slice(b"\r\n");
                            while stream.write_all(&chunk).await.is_ok() {}
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            connections,
            requests,
        }
    }

    fn request(url: String) -> WebhookRequest {
        WebhookRequest {
            url,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-osb-signature".into(), "c2lnbmF0dXJl".into()),
                (
                    "webhook-id".into(),
                    "osbop_01J9Z3K7Q4W8E2R6T0Y5U1I3O7".into(),
                ),
                ("x-osb-attempt".into(), "1".into()),
            ],
            body: Bytes::from_static(br#"{"dashboard_url":"https://dash.example.com/i/42"}"#),
        }
    }

    #[tokio::test]
    async fn ok_is_delivered_with_exact_body_and_headers() {
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let req = request(rx.url("/cb?token=abc"));
        let report = sender(loopback_policy()).send(&req).await;
        assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 200 });
        assert_eq!(report.remote_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let seen = rx.requests();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert!(
            s.head.starts_with("POST /cb?token=abc HTTP/1.1\r\n"),
            "{}",
            s.head
        );
        assert_eq!(s.body, req.body.as_ref());
        assert_eq!(
            s.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(s.header("x-osb-signature").as_deref(), Some("c2lnbmF0dXJl"));
        assert_eq!(
            s.header("webhook-id").as_deref(),
            Some("osbop_01J9Z3K7Q4W8E2R6T0Y5U1I3O7")
        );
        assert_eq!(s.header("x-osb-attempt").as_deref(), Some("1"));
        assert_eq!(
            s.header("user-agent"),
            Some(format!("osb-broker/{}", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(s.header("content-length"), Some(req.body.len().to_string()));
        assert_eq!(s.header("proxy-authorization"), None);
    }

    #[tokio::test]
    async fn content_type_defaults_to_json() {
        let rx = receiver(Reply::Raw("HTTP/1.1 204 No Content\r\n\r\n")).await;
        let mut req = request(rx.url("/"));
        req.headers.retain(|(n, _)| n != "content-type");
        let report = sender(loopback_policy()).send(&req).await;
        assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 204 });
        assert_eq!(
            rx.requests()[0].header("content-type").as_deref(),
            Some("application/json")
        );
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        let cases: &[(&'static str, AttemptOutcome)] = &[
            (
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                AttemptOutcome::HttpStatus {
                    status: 500,
                    retry_after: None,
                },
            ),
            (
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
                AttemptOutcome::HttpStatus {
                    status: 429,
                    retry_after: Some(Duration::from_secs(7)),
                },
            ),
            (
                "HTTP/1.1 503 Unavailable\r\nretry-after: soon\r\ncontent-length: 0\r\n\r\n",
                AttemptOutcome::HttpStatus {
                    status: 503,
                    retry_after: None,
                },
            ),
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nnope!",
                AttemptOutcome::HttpStatus {
                    status: 400,
                    retry_after: None,
                },
            ),
            (
                "HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n",
                AttemptOutcome::Gone,
            ),
            (
                "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
                AttemptOutcome::Delivered { status: 202 },
            ),
        ];
        let s = sender(loopback_policy());
        for (raw, want) in cases {
            let rx = receiver(Reply::Raw(raw)).await;
            let report = s.send(&request(rx.url("/"))).await;
            assert_eq!(&report.outcome, want, "{raw}");
            assert_eq!(rx.requests().len(), 1);
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let s = sender(loopback_policy());
        for (raw, status) in [
            (
                "HTTP/1.1 301 Moved\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
                301,
            ),
            (
                "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
                302,
            ),
            (
                "HTTP/1.1 307 Temporary\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
                307,
            ),
            (
                "HTTP/1.1 308 Permanent\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
                308,
            ),
            (
                "HTTP/1.1 302 Found\r\nlocation: /again\r\ncontent-length: 0\r\n\r\n",
                302,
            ),
        ] {
            let rx = receiver(Reply::Raw(raw)).await;
            let report = s.send(&request(rx.url("/"))).await;
            assert_eq!(report.outcome, AttemptOutcome::Redirect { status }, "{raw}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(rx.requests().len(), 1, "{raw}");
            assert_eq!(rx.connections.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn a_hanging_receiver_times_out_within_the_deadline() {
        let rx = receiver(Reply::Hang).await;
        let report = sender(loopback_policy()).send(&request(rx.url("/"))).await;
        assert_eq!(report.outcome, AttemptOutcome::Timeout);
        assert!(report.duration >= SHORT, "{:?}", report.duration);
        assert!(report.duration < SHORT + EPSILON, "{:?}", report.duration);
        assert_eq!(rx.requests().len(), 1);
    }

    #[tokio::test]
    async fn huge_and_endless_bodies_are_not_read() {
        let s = sender(loopback_policy());
        for reply in [Reply::HugeBody, Reply::EndlessChunked] {
            let rx = receiver(reply).await;
            let report = s.send(&request(rx.url("/"))).await;
            assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 200 });
            // Reading the body would have hit the 300 ms total timeout (the chunked one never ends).
            assert!(report.duration < SHORT + EPSILON, "{:?}", report.duration);
        }
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let report = sender(loopback_policy())
            .send(&request(format!("http://127.0.0.1:{port}/")))
            .await;
        assert_eq!(report.outcome, AttemptOutcome::ConnectError);
        assert_eq!(report.remote_ip, None);
    }

    #[tokio::test]
    async fn loopback_is_blocked_without_the_escape_hatch() {
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let strict = WebhookPolicy::default().allowing_http();
        let s = sender(strict);
        for url in [
            rx.url("/"),
            format!("http://[::ffff:127.0.0.1]:{}/", rx.port),
            format!("http://2130706433:{}/", rx.port),
            format!("http://localhost:{}/", rx.port),
        ] {
            let report = s.send(&request(url.clone())).await;
            assert_eq!(report.outcome, AttemptOutcome::BlockedDestination, "{url}");
        }
        // Blocked literals elsewhere are refused before any connect (nothing is dialled).
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
        ] {
            let report = s.send(&request(url.to_owned())).await;
            assert_eq!(report.outcome, AttemptOutcome::BlockedDestination, "{url}");
            assert!(report.duration < SHORT, "{url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_resolver_drops_loopback_answers_for_names() {
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let strict = WebhookPolicy::default().allowing_http();
        // Bypass the pre-check (which refuses `localhost` by name) to exercise the resolver itself.
        let (outcome, ip) = sender(strict)
            .dispatch(
                &format!("http://localhost:{}/", rx.port),
                &request(String::new()),
            )
            .await;
        assert_eq!(outcome, AttemptOutcome::BlockedDestination);
        assert_eq!(ip, None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_with_the_escape_hatch() {
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let report = sender(loopback_policy())
            .send(&request(format!("http://localhost:{}/", rx.port)))
            .await;
        assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 200 });
        assert_eq!(report.remote_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[tokio::test]
    async fn invalid_urls_and_https_only() {
        let s = sender(WebhookPolicy::default());
        for url in [
            "",
            "not a url",
            "ftp://example.com/",
            "https://u:p@example.com/",
        ] {
            let report = s.send(&request(url.to_owned())).await;
            assert_eq!(report.outcome, AttemptOutcome::InvalidUrl, "{url:?}");
        }
        // http with an https-only policy: refused before connecting.
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let s = sender(WebhookPolicy::default().allowing_loopback_for_local_mode());
        let report = s.send(&request(rx.url("/"))).await;
        assert_eq!(report.outcome, AttemptOutcome::InvalidUrl);
        assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn bad_header_is_refused_without_connecting() {
        let rx = receiver(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let mut req = request(rx.url("/"));
        req.headers.push(("x-bad".into(), "a\r\nb".into()));
        let report = sender(loopback_policy()).send(&req).await;
        assert_eq!(report.outcome, AttemptOutcome::InvalidUrl);
        assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn tls_to_a_plain_receiver_is_not_delivered() {
        // An https URL to a plain-HTTP loopback receiver: the handshake fails (no certificate involved).
        let rx = receiver(Reply::Immediate(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ))
        .await;
        let report = sender(loopback_policy())
            .send(&request(format!("https://127.0.0.1:{}/", rx.port)))
            .await;
        assert_eq!(report.outcome, AttemptOutcome::TlsError);
    }

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 0)
    }

    #[test]
    fn filtering_keeps_only_allowed_addresses() {
        let strict = WebhookPolicy::default();
        assert_eq!(
            filter_addrs(&strict, [sa("93.184.215.14"), sa("127.0.0.1")]),
            Ok(vec![sa("93.184.215.14")])
        );
        assert_eq!(
            filter_addrs(&strict, [sa("::1"), sa("2606:4700::1111"), sa("10.0.0.1")]),
            Ok(vec![sa("2606:4700::1111")])
        );
        assert_eq!(
            filter_addrs(
                &strict,
                [
                    sa("127.0.0.1"),
                    sa("10.0.0.1"),
                    sa("169.254.169.254"),
                    sa("fd00:ec2::254")
                ]
            ),
            Err(GuardError::Blocked)
        );
        assert_eq!(filter_addrs(&strict, []), Err(GuardError::NotFound));
        let local = WebhookPolicy::default().allowing_loopback_for_local_mode();
        assert_eq!(
            filter_addrs(&local, [sa("127.0.0.1"), sa("10.0.0.1"), sa("::1")]),
            Ok(vec![sa("127.0.0.1"), sa("::1")])
        );
        assert_eq!(
            filter_addrs(&local, [sa("192.168.0.1")]),
            Err(GuardError::Blocked)
        );
    }

    #[test]
    fn guard_errors_do_not_name_the_host() {
        for e in [
            GuardError::Blocked,
            GuardError::NotFound,
            GuardError::Timeout,
        ] {
            assert!(!e.to_string().contains("localhost"));
        }
    }
}
