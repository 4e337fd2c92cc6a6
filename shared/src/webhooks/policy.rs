//! The SSRF policy for platform-supplied webhook URLs: registration checks (pairing, secret length, URL shape,
//! scheme, port allowlist, host names, literal IPs) and the IP block table the sender's resolver applies again
//! at every attempt (webhooks.md §6).
//!
//! # The loopback escape hatch
//!
//! Test receivers and the local runner listen on `127.0.0.1`, which the block table refuses. A policy can let
//! loopback (`127.0.0.0/8` and `::1`, nothing else) through, on any port, but never by accident in production:
//!
//! - in code, only through [`WebhookPolicy::allowing_loopback_for_local_mode`];
//! - in TOML (`[webhooks] allow_loopback = true`), the key is only a *request*: it takes effect when the
//!   loader calls [`WebhookPolicy::validate_for`] with [`Deployment::Local`]. A policy that has not been through
//!   `validate_for` ignores the key (fail-safe), and `validate_for(Deployment::Aws)` refuses any policy that asks
//!   for or has loopback, so the AWS wiring must call it (and so reject a bad config at cold start).

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// The largest secret, in UTF-8 bytes (the OSB #606 proposal).
pub const MAX_SECRET_BYTES: usize = 32;
/// The default and largest accepted webhook URL length, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Where the broker runs: decides whether the loopback escape hatch may be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// Lambda: loopback is the Lambda Runtime API; never allowed.
    Aws,
    /// The local runner and tests: loopback may be allowed when the config asks for it.
    Local,
}

/// The `[webhooks]` section of the broker config. Every field has a safe default.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookPolicy {
    /// Accept `http://` URLs (default false: bind bodies carry credentials).
    pub allow_http: bool,
    /// Ports allowed for `https` (default 443, 8443).
    pub https_ports: Vec<u16>,
    /// Ports allowed for `http` when `allow_http` (default 80, 8080).
    pub http_ports: Vec<u16>,
    /// Longest accepted URL in bytes (default and maximum 2048).
    pub max_url_len: usize,
    /// `allow_loopback` in TOML: a request only, honoured by [`WebhookPolicy::validate_for`] in local mode.
    #[serde(rename = "allow_loopback")]
    loopback_requested: bool,
    /// The effective escape hatch; never deserialised.
    #[serde(skip)]
    loopback: bool,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            allow_http: false,
            https_ports: vec![443, 8443],
            http_ports: vec![80, 8080],
            max_url_len: MAX_URL_LEN,
            loopback_requested: false,
            loopback: false,
        }
    }
}

impl std::fmt::Debug for WebhookPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPolicy")
            .field("allow_http", &self.allow_http)
            .field("https_ports", &self.https_ports)
            .field("http_ports", &self.http_ports)
            .field("max_url_len", &self.max_url_len)
            .field("allow_loopback", &self.loopback)
            .finish()
    }
}

/// A config that cannot be used where it is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookPolicyError {
    #[error("webhooks.allow_loopback is only allowed in local mode")]
    LoopbackOutsideLocalMode,
    #[error("webhooks.max_url_len must be 1 to 2048")]
    MaxUrlLen,
}

/// A validated registration: the normalised URL (`Url::as_str` of the parsed value, which is also what the
/// sender sends) and the secret. `Debug` shows neither the secret nor the URL's path or query.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &redacted(&self.url))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a `webhook`/`secret` pair was refused. The messages are OSB error descriptions (400) and never contain
/// the secret or the URL (at most its scheme or port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookInputError {
    #[error("webhook requires a secret")]
    MissingSecret,
    #[error("secret requires a webhook")]
    MissingWebhook,
    #[error("secret must be 1 to 32 bytes")]
    SecretLength,
    #[error("webhook must be at most {max} bytes")]
    UrlTooLong { max: usize },
    #[error("webhook must be an absolute https URL")]
    Malformed,
    #[error("webhook scheme {scheme} is not allowed")]
    Scheme { scheme: String },
    #[error("webhook must use https")]
    HttpNotAllowed,
    #[error("webhook must not contain user information")]
    Userinfo,
    #[error("webhook must not contain a fragment")]
    Fragment,
    #[error("webhook port {port} is not allowed")]
    Port { port: u16 },
    #[error("webhook host is not a public address")]
    NotPublic,
}

impl WebhookPolicy {
    /// The same policy with `http://` URLs accepted (on `http_ports`). Outside this module the loopback fields
    /// are private, so struct-update syntax (`..Default::default()`) does not compile there: use this.
    pub fn allowing_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// Turns the loopback escape hatch on: `127.0.0.0/8` and `::1` (only those) become reachable on any port,
    /// and `localhost` names are accepted. **For the local runner and tests only**; the AWS wiring's
    /// [`validate_for`](Self::validate_for) refuses such a policy.
    pub fn allowing_loopback_for_local_mode(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// Whether the loopback escape hatch is on.
    pub fn allows_loopback(&self) -> bool {
        self.loopback
    }

    /// Checks a loaded config for the deployment it runs in, and honours `allow_loopback = true` only for
    /// [`Deployment::Local`]. The AWS wiring must call this: it refuses any policy with loopback requested or
    /// enabled.
    pub fn validate_for(mut self, deployment: Deployment) -> Result<Self, WebhookPolicyError> {
        if self.max_url_len == 0 || self.max_url_len > MAX_URL_LEN {
            return Err(WebhookPolicyError::MaxUrlLen);
        }
        match deployment {
            Deployment::Aws if self.loopback_requested || self.loopback => {
                Err(WebhookPolicyError::LoopbackOutsideLocalMode)
            }
            Deployment::Aws => Ok(self),
            Deployment::Local => {
                self.loopback |= self.loopback_requested;
                Ok(self)
            }
        }
    }

    /// Validates the optional `webhook` and `secret` of a provision or bind request: both or neither (neither
    /// → `Ok(None)`). Returns the normalised URL to store and send.
    pub fn check_registration(
        &self,
        webhook: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<WebhookTarget>, WebhookInputError> {
        let (webhook, secret) = match (webhook, secret) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(WebhookInputError::MissingSecret),
            (None, Some(_)) => return Err(WebhookInputError::MissingWebhook),
            (Some(w), Some(s)) => (w, s),
        };
        if secret.is_empty() || secret.len() > MAX_SECRET_BYTES {
            return Err(WebhookInputError::SecretLength);
        }
        let url = self.check_url(webhook)?;
        Ok(Some(WebhookTarget {
            url: url.as_str().to_owned(),
            secret: secret.to_owned(),
        }))
    }

    /// Parses and checks a webhook URL (everything except DNS): length, syntax, scheme, userinfo, fragment,
    /// host names, literal IPs and the port allowlist. The sender calls this again before every attempt.
    pub fn check_url(&self, raw: &str) -> Result<Url, WebhookInputError> {
        let max = self.max_url_len.min(MAX_URL_LEN);
        if raw.len() > max {
            return Err(WebhookInputError::UrlTooLong { max });
        }
        // WHATWG parsing silently strips tabs/newlines, trims spaces and turns `\` into `/`: refuse all of
        // them so the string we check is the string the platform meant.
        if raw.is_empty()
            || raw
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(WebhookInputError::Malformed);
        }
        let url = Url::parse(raw).map_err(|_| WebhookInputError::Malformed)?;
        let scheme = url.scheme();
        let ports = match scheme {
            "https" => &self.https_ports,
            "http" if self.allow_http => &self.http_ports,
            "http" => return Err(WebhookInputError::HttpNotAllowed),
            other => {
                return Err(WebhookInputError::Scheme {
                    scheme: other.chars().take(16).collect(),
                });
            }
        };
        // `https:x` and `https:///x` parse as `https://x/`; demand exactly `scheme://` followed by the host.
        let rest = raw.get(scheme.len() + 1..).unwrap_or_default();
        if !rest.starts_with("//") || rest.get(2..).is_none_or(|r| r.starts_with('/')) {
            return Err(WebhookInputError::Malformed);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookInputError::Userinfo);
        }
        if url.fragment().is_some() {
            return Err(WebhookInputError::Fragment);
        }
        if url.as_str().len() > max {
            return Err(WebhookInputError::UrlTooLong { max });
        }
        let port = url
            .port_or_known_default()
            .ok_or(WebhookInputError::Malformed)?;
        let loopback_host = match url.host() {
            None => return Err(WebhookInputError::Malformed),
            Some(Host::Domain(d)) => {
                if d.is_empty() {
                    return Err(WebhookInputError::Malformed);
                }
                if is_localhost_name(d) {
                    if !self.loopback {
                        return Err(WebhookInputError::NotPublic);
                    }
                    true
                } else {
                    false
                }
            }
            Some(Host::Ipv4(ip)) => self.check_literal(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_literal(IpAddr::V6(ip))?,
        };
        if !loopback_host && !ports.contains(&port) {
            return Err(WebhookInputError::Port { port });
        }
        Ok(url)
    }

    /// Ok(true) for an allowed loopback address (any port), Ok(false) for a public one.
    fn check_literal(&self, ip: IpAddr) -> Result<bool, WebhookInputError> {
        if !self.allows_ip(ip) {
            return Err(WebhookInputError::NotPublic);
        }
        Ok(is_loopback(ip.to_canonical()))
    }

    /// Whether the sender may dial `ip`: not in the block table, or loopback with the escape hatch on.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.loopback && is_loopback(ip) {
            return true;
        }
        !is_blocked_ip(ip)
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    }
}

fn is_localhost_name(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, 0, 0), len)
}

/// IPv4 ranges that are never a webhook destination (svix-server's table plus special-purpose registries).
const BLOCKED_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),       // "this network", 0.0.0.0
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // CGNAT
    v4(127, 0, 0, 0, 8),     // loopback (Lambda Runtime API)
    v4(169, 254, 0, 0, 16),  // link-local: IMDS, ECS, Route 53 resolver, time
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // TEST-NET-1
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // TEST-NET-2
    v4(203, 0, 113, 0, 24),  // TEST-NET-3
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, incl. 255.255.255.255
];

/// IPv6 ranges that are never a webhook destination. Everything outside `2000::/3` (global unicast) is
/// refused as well, which covers `::`, `::1`, IPv4-compatible/-mapped, NAT64, discard, ULA, link-local
/// (with or without a zone id), multicast and SRv6.
const BLOCKED_V6: &[Ipv6Net] = &[
    v6(0, 0, 0, 0, 0, 0, 96), // ::/96: unspecified, loopback, IPv4-compatible
    v6(0, 0, 0, 0, 0, 0xffff, 96), // IPv4-mapped (also canonicalised)
    v6(0x64, 0xff9b, 0, 0, 0, 0, 96), // NAT64
    v6(0x64, 0xff9b, 1, 0, 0, 0, 48), // local-use NAT64
    v6(0x100, 0, 0, 0, 0, 0, 64), // discard
    v6(0x2001, 0, 0, 0, 0, 0, 23), // IETF assignments: Teredo 2001::/32, benchmarking, ORCHID
    v6(0x2001, 0xdb8, 0, 0, 0, 0, 32), // documentation
    v6(0x2002, 0, 0, 0, 0, 0, 16), // 6to4 (embeds IPv4)
    v6(0x3fff, 0, 0, 0, 0, 0, 20), // documentation
    v6(0x5f00, 0, 0, 0, 0, 0, 16), // SRv6 SIDs
    v6(0xfc00, 0, 0, 0, 0, 0, 7), // unique local (incl. IMDS fd00:ec2::254)
    v6(0xfe80, 0, 0, 0, 0, 0, 10), // link-local
    v6(0xff00, 0, 0, 0, 0, 0, 8), // multicast
];

/// Global unicast: the only IPv6 space a webhook may go to.
const GLOBAL_UNICAST_V6: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 3);

/// Whether `ip` is in the block table (webhooks.md §6 item 5), after canonicalising IPv4-mapped IPv6.
/// Loopback is blocked here; [`WebhookPolicy::allows_ip`] applies the escape hatch.
pub fn is_blocked_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => BLOCKED_V4.iter().any(|net| net.contains(&a)),
        IpAddr::V6(a) => {
            !GLOBAL_UNICAST_V6.contains(&a) || BLOCKED_V6.iter().any(|net| net.contains(&a))
        }
    }
}

/// `scheme://host:port` of a URL, for logs (never its path, query or userinfo); `<invalid url>` when it does
/// not parse.
pub fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = match u.host() {
                Some(Host::Ipv6(ip)) => format!("[{ip}]"),
                Some(h) => h.to_string(),
                None => String::new(),
            };
            match u.port_or_known_default() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Lower-case hex SHA-256 of the URL string, to match a URL in logs without revealing it.
pub fn url_sha256(url: &str) -> String {
    Sha256::digest(url.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn strict() -> WebhookPolicy {
        WebhookPolicy::default()
    }

    fn with_http() -> WebhookPolicy {
        WebhookPolicy {
            allow_http: true,
            ..WebhookPolicy::default()
        }
    }

    fn check(p: &WebhookPolicy, url: &str) -> Result<Option<WebhookTarget>, WebhookInputError> {
        p.check_registration(Some(url), Some(SECRET))
    }

    fn assert_no_leak(err: &WebhookInputError, url: &str, secret: &str) {
        let msg = err.to_string();
        assert!(!msg.contains(secret), "{msg}");
        if let Ok(u) = Url::parse(url) {
            let p = u.path();
            if p.len() > 1 {
                assert!(!msg.contains(p), "{msg} leaks path");
            }
            if let Some(q) = u.query() {
                assert!(!msg.contains(q), "{msg} leaks query");
            }
            if let Some(h) = u.host_str().filter(|h| h.len() > 3) {
                assert!(!msg.contains(h), "{msg} leaks host");
            }
        }
        assert!(!msg.contains(url) || url.len() < 6, "{msg} leaks url");
    }

    #[test]
    fn pairing_and_secret() {
        let p = strict();
        let url = "https://example.com/cb";
        assert_eq!(p.check_registration(None, None), Ok(None));
        assert_eq!(
            p.check_registration(Some(url), None),
            Err(WebhookInputError::MissingSecret)
        );
        assert_eq!(
            p.check_registration(None, Some(SECRET)),
            Err(WebhookInputError::MissingWebhook)
        );
        for bad in ["", "0123456789abcdef0123456789abcdefX", &"€".repeat(11)] {
            let err = p.check_registration(Some(url), Some(bad)).unwrap_err();
            assert_eq!(err, WebhookInputError::SecretLength, "{bad:?}");
            assert_no_leak(&err, url, if bad.is_empty() { "\u{0}" } else { bad });
        }
        assert_eq!("€".repeat(11).len(), 33);
        for good in [SECRET, "x", &format!("{}ab", "€".repeat(10))] {
            let t = p
                .check_registration(Some(url), Some(good))
                .unwrap()
                .unwrap();
            assert_eq!(t.secret, good);
            assert_eq!(t.url, url);
        }
    }

    #[test]
    fn malformed_urls() {
        let long = format!("https://example.com/{}", "a".repeat(2049 - 20));
        assert_eq!(long.len(), 2049);
        let exact = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert!(check(&strict(), &exact).is_ok());
        let cases: &[(&str, WebhookInputError)] = &[
            ("not a url", WebhookInputError::Malformed),
            ("https://", WebhookInputError::Malformed),
            ("https:///x", WebhookInputError::Malformed),
            ("https:x", WebhookInputError::Malformed),
            ("https:/x", WebhookInputError::Malformed),
            ("https:\\\\x/", WebhookInputError::Malformed),
            ("http://[::1", WebhookInputError::Malformed),
            ("https://[::1", WebhookInputError::Malformed),
            ("https://exa mple.com", WebhookInputError::Malformed),
            ("/callback", WebhookInputError::Malformed),
            ("callback", WebhookInputError::Malformed),
            ("", WebhookInputError::Malformed),
            (&long, WebhookInputError::UrlTooLong { max: 2048 }),
            (" https://example.com/", WebhookInputError::Malformed),
            ("https://example.com/ ", WebhookInputError::Malformed),
            ("https://example.com/\n", WebhookInputError::Malformed),
            ("\thttps://example.com/", WebhookInputError::Malformed),
            ("https://exam\tple.com/", WebhookInputError::Malformed),
            ("https://example.com:65536/", WebhookInputError::Malformed),
            ("https://example.com:x/", WebhookInputError::Malformed),
        ];
        for (url, want) in cases {
            let err = check(&strict(), url).unwrap_err();
            assert_eq!(&err, want, "{url:?}");
            assert_no_leak(&err, url, SECRET);
        }
        // With http allowed, an unterminated IPv6 literal is a parse error.
        assert_eq!(
            check(&with_http(), "http://[::1"),
            Err(WebhookInputError::Malformed)
        );
    }

    #[test]
    fn schemes() {
        for url in [
            "file:///etc/passwd",
            "ftp://h/",
            "gopher://h/",
            "data:,x",
            "javascript:alert(1)",
            "ws://h/",
            "wss://h/",
            "mailto:a@b",
        ] {
            for p in [strict(), with_http()] {
                let err = check(&p, url).unwrap_err();
                assert!(
                    matches!(err, WebhookInputError::Scheme { .. }),
                    "{url}: {err:?}"
                );
                assert_no_leak(&err, url, SECRET);
            }
        }
        let err = check(&strict(), "http://public.example/").unwrap_err();
        assert_eq!(err, WebhookInputError::HttpNotAllowed);
        assert_eq!(
            check(&with_http(), "http://public.example/")
                .unwrap()
                .unwrap()
                .url,
            "http://public.example/"
        );
        let t = check(&strict(), "HTTPS://Example.COM/").unwrap().unwrap();
        assert_eq!(t.url, "https://example.com/");
        let t = check(&strict(), "https://Example.COM:443/Cb?A=1")
            .unwrap()
            .unwrap();
        assert_eq!(t.url, "https://example.com/Cb?A=1");
    }

    #[test]
    fn userinfo_and_fragment() {
        for (url, want) in [
            ("https://u:p@h.example/", WebhookInputError::Userinfo),
            ("https://u@h.example/", WebhookInputError::Userinfo),
            ("https://:p@h.example/", WebhookInputError::Userinfo),
            ("https://h.example/#xyzzy", WebhookInputError::Fragment),
            ("https://h.example/#", WebhookInputError::Fragment),
        ] {
            let err = check(&strict(), url).unwrap_err();
            assert_eq!(err, want, "{url}");
            assert_no_leak(&err, url, SECRET);
            assert!(!err.to_string().contains("xyzzy"));
        }
    }

    const LITERAL_HOSTS: &[&str] = &[
        "localhost",
        "LOCALHOST.",
        "x.localhost",
        "X.LocalHost..",
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "0177.0.0.1",
        "0.0.0.0",
        "0",
        "[::]",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[::127.0.0.1]",
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.253",
        "[fd00:ec2::254]",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "198.18.0.1",
        "192.0.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "192.88.99.1",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "[fe80::1]",
        "[fc00::1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::1]",
        "[2002:a9fe:a9fe::]",
        "[2001::1]",
        "[2001:db8::1]",
        "[3fff::1]",
        "[5f00::1]",
        "[100::1]",
        "[ff02::1]",
    ];

    #[test]
    fn literal_hosts_are_refused() {
        for host in LITERAL_HOSTS {
            let url = format!("https://{host}/cb?token=abc");
            for p in [strict(), with_http()] {
                let err = check(&p, &url).unwrap_err();
                assert_eq!(err, WebhookInputError::NotPublic, "{url}");
                assert_no_leak(&err, &url, SECRET);
            }
        }
        // A zone id is not valid URL syntax: refused all the same.
        assert!(check(&strict(), "https://[fe80::1%25eth0]/").is_err());
        assert!(check(&strict(), "https://[fe80::1%eth0]/").is_err());
    }

    #[test]
    fn public_literals_are_accepted() {
        for host in [
            "93.184.215.14",
            "8.8.8.8",
            "[2606:4700::1111]",
            "[2a00:1450::1]",
        ] {
            let url = format!("https://{host}/cb");
            assert!(check(&strict(), &url).is_ok(), "{url}");
        }
    }

    #[test]
    fn ports() {
        for port in [22u16, 25, 6379, 0, 80, 8080, 444] {
            let url = format!("https://example.com:{port}/cb");
            let err = check(&strict(), &url).unwrap_err();
            assert_eq!(err, WebhookInputError::Port { port }, "{url}");
            assert_eq!(
                err.to_string(),
                format!("webhook port {port} is not allowed")
            );
        }
        for port in [22u16, 443, 8443, 0] {
            let url = format!("http://example.com:{port}/cb");
            assert_eq!(
                check(&with_http(), &url).unwrap_err(),
                WebhookInputError::Port { port },
                "{url}"
            );
        }
        assert_eq!(
            check(&strict(), "https://example.com:65536/"),
            Err(WebhookInputError::Malformed)
        );
        for url in [
            "https://example.com:443/",
            "https://example.com:8443/",
            "https://example.com/",
        ] {
            assert!(check(&strict(), url).is_ok(), "{url}");
        }
        for url in [
            "http://example.com:80/",
            "http://example.com:8080/",
            "http://example.com/",
            "https://example.com:8443/",
        ] {
            assert!(check(&with_http(), url).is_ok(), "{url}");
        }
        let t = check(&with_http(), "http://example.com:8080/x")
            .unwrap()
            .unwrap();
        assert_eq!(t.url, "http://example.com:8080/x");
    }

    #[test]
    fn no_error_message_leaks_the_secret_or_path() {
        let secret = "s3cr3t-do-not-log";
        let urls = [
            "https://u:s3cr3t@h.example/p4th?q=s3cr3t#frag",
            "https://127.0.0.1/p4th?q=s3cr3t",
            "ftp://h/p4th?q=s3cr3t",
            "https://h.example:22/p4th?q=s3cr3t",
            "http://h.example/p4th?q=s3cr3t",
            "https://h.example/p4th?q=s3cr3t#frag",
        ];
        for url in urls {
            let err = strict()
                .check_registration(Some(url), Some(secret))
                .unwrap_err();
            let msg = err.to_string();
            let dbg = format!("{err:?}");
            for s in [msg, dbg] {
                assert!(!s.contains("s3cr3t"), "{s}");
                assert!(!s.contains("p4th"), "{s}");
                assert!(!s.contains("h.example"), "{s}");
            }
        }
    }

    #[test]
    fn target_debug_is_redacted() {
        let t = check(&strict(), "https://example.com/p4th?token=abc")
            .unwrap()
            .unwrap();
        let dbg = format!("{t:?}");
        assert!(dbg.contains("https://example.com:443"), "{dbg}");
        assert!(
            !dbg.contains("p4th") && !dbg.contains("abc") && !dbg.contains(SECRET),
            "{dbg}"
        );
    }

    #[test]
    fn redaction_helpers() {
        assert_eq!(
            redacted("https://example.com/a?b=c"),
            "https://example.com:443"
        );
        assert_eq!(
            redacted("http://u:p@h.example:8080/x#f"),
            "http://h.example:8080"
        );
        assert_eq!(
            redacted("https://[2001:db8::1]:8443/x"),
            "https://[2001:db8::1]:8443"
        );
        assert_eq!(redacted("not a url"), "<invalid url>");
        let h = url_sha256("https://example.com/a");
        assert_eq!(h.len(), 64);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            url_sha256(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn block_table() {
        let blocked = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.1.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.0.1",
            "192.0.0.8",
            "192.0.2.7",
            "192.88.99.2",
            "192.168.0.1",
            "198.19.255.255",
            "198.51.100.9",
            "203.0.113.9",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "2002:808:808::1",
            "3fff:fff::1",
            "5f00::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff05::1:3",
            "1::1",
            "4000::1",
            "e000::1",
        ];
        for ip in blocked {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_blocked_ip(ip), "{ip}");
            assert!(!strict().allows_ip(ip), "{ip}");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "3fff:1000::1",
        ];
        for ip in public {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_blocked_ip(ip), "{ip}");
            assert!(strict().allows_ip(ip), "{ip}");
        }
    }

    #[test]
    fn loopback_escape_hatch_lets_only_loopback_through() {
        let p = with_http().allowing_loopback_for_local_mode();
        assert!(p.allows_loopback());
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(p.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "fe80::1",
            "fd00::1",
            "192.168.1.1",
        ] {
            assert!(!p.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        // Any port for loopback literals and localhost names; the allowlist still holds elsewhere.
        assert!(check(&p, "http://127.0.0.1:45678/cb").is_ok());
        assert!(check(&p, "https://[::1]:1/cb").is_ok());
        assert!(check(&p, "http://localhost:9000/cb").is_ok());
        assert_eq!(
            check(&p, "http://example.com:9000/cb"),
            Err(WebhookInputError::Port { port: 9000 })
        );
        assert_eq!(
            check(&p, "http://10.0.0.1:80/"),
            Err(WebhookInputError::NotPublic)
        );
        assert!(!strict().allows_loopback());
    }

    #[test]
    fn loopback_from_config_needs_local_mode() {
        let p: WebhookPolicy = toml::from_str("allow_loopback = true\nallow_http = true").unwrap();
        // Not validated yet: the request is ignored.
        assert!(!p.allows_loopback());
        assert!(!p.allows_ip("127.0.0.1".parse().unwrap()));
        assert_eq!(
            p.clone().validate_for(Deployment::Aws),
            Err(WebhookPolicyError::LoopbackOutsideLocalMode)
        );
        let local = p.validate_for(Deployment::Local).unwrap();
        assert!(local.allows_loopback());
        // Enabled in code, still refused on AWS.
        assert_eq!(
            strict()
                .allowing_loopback_for_local_mode()
                .validate_for(Deployment::Aws),
            Err(WebhookPolicyError::LoopbackOutsideLocalMode)
        );
        assert!(strict().validate_for(Deployment::Aws).is_ok());
        assert!(
            !strict()
                .validate_for(Deployment::Local)
                .unwrap()
                .allows_loopback()
        );
    }

    #[test]
    fn config_defaults_and_fields() {
        let p: WebhookPolicy = toml::from_str("").unwrap();
        assert_eq!(p, WebhookPolicy::default());
        assert!(!p.allow_http);
        assert_eq!(p.https_ports, vec![443, 8443]);
        assert_eq!(p.http_ports, vec![80, 8080]);
        assert_eq!(p.max_url_len, 2048);
        let p: WebhookPolicy = toml::from_str("https_ports = [9443]\nmax_url_len = 100").unwrap();
        assert_eq!(p.https_ports, vec![9443]);
        assert!(check(&p, "https://example.com:9443/").is_ok());
        assert!(check(&p, "https://example.com/").is_err());
        assert!(toml::from_str::<WebhookPolicy>("allow_loopbak = true").is_err());
        let too_long = WebhookPolicy {
            max_url_len: 4096,
            ..WebhookPolicy::default()
        };
        assert_eq!(
            too_long.validate_for(Deployment::Aws),
            Err(WebhookPolicyError::MaxUrlLen)
        );
        assert!(!format!("{:?}", WebhookPolicy::default()).is_empty());
    }
}
