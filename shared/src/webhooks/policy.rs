//! TEMPORARY placeholder until the webhook-core branch merges.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => "<invalid url>".into(),
    }
}
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct WebhookPolicy {
    #[serde(default)]
    pub allow_http: bool,
}
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct WebhookInputError;
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}
impl WebhookPolicy {
    pub fn check_registration(
        &self,
        webhook: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<WebhookTarget>, WebhookInputError> {
        Ok(webhook.zip(secret).map(|(u, s)| WebhookTarget {
            url: u.into(),
            secret: s.into(),
        }))
    }
}
