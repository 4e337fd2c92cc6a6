//! Reading a secret's text from AWS Secrets Manager, for every secret the functions read at cold start
//! (tenants, sharing token keys, the PostgreSQL admin secret). Errors name the secret's role and the
//! service's error code, never the text.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretReadError {
    #[error("cannot read the {0} secret: {1}")]
    Read(&'static str, String),
    #[error("the {0} secret has no string value")]
    NotAString(&'static str),
}

/// A secret's text (`what`: which secret, for errors; the text is never in one).
pub async fn load_text(
    client: &Client,
    secret_id: &str,
    what: &'static str,
) -> Result<String, SecretReadError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            SecretReadError::Read(
                what,
                e.as_service_error()
                    .and_then(|s| s.code())
                    .unwrap_or("request failed")
                    .to_owned(),
            )
        })?;
    Ok(out
        .secret_string()
        .ok_or(SecretReadError::NotAString(what))?
        .to_owned())
}
