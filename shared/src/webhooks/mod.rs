//! Webhook callbacks for async provision and bind (OSB #606): signatures, the SSRF policy for
//! platform-supplied URLs, the retry schedule, and (feature `webhook-sender`) the guarded reqwest sender.
//!
//! - [`sign`]: `x-osb-signature` and Standard Webhooks `webhook-signature`, plus a constant-time verifier.
//! - [`policy`]: registration checks (`webhook`/`secret` → [`WebhookTarget`] or a 400 description), the IP
//!   block table, the loopback escape hatch for local mode, and log redaction helpers.
//! - [`schedule`]: the retry schedule with jitter, `Retry-After` parsing and clamping, the horizon.
//! - `http` (feature `webhook-sender`): [`HttpSender`], one attempt per call, no redirects, no proxies, DNS
//!   answers filtered by the policy so only vetted addresses are dialled.

#[cfg(feature = "webhook-sender")]
pub mod http;
pub mod policy;
pub mod schedule;
pub mod sign;

#[cfg(feature = "webhook-sender")]
pub use http::{
    GuardError, GuardedResolver, HttpSender, SenderBuildError, SenderConfig, filter_addrs,
};
pub use policy::{
    Deployment, WebhookInputError, WebhookPolicy, WebhookPolicyError, WebhookTarget, is_blocked_ip,
    redacted, url_sha256,
};
pub use schedule::{RetryPolicy, parse_retry_after};
pub use sign::{osb_signature, standard_signature, verify_osb_signature};
