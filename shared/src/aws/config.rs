//! Typed configuration of the Lambda functions, read once from the environment at cold start. Every
//! missing or invalid variable is named in the one error.

use std::path::PathBuf;

/// Environment variable names.
pub const TABLE: &str = "OSB_TABLE_NAME";
pub const OPERATIONS_QUEUE: &str = "OSB_OPERATIONS_QUEUE_URL";
pub const TENANTS_SECRET: &str = "OSB_TENANTS_SECRET_ID";
pub const SHARING_KEYS_SECRET: &str = "OSB_SHARING_KEYS_SECRET_ID";
pub const CATALOG_FILE: &str = "OSB_CATALOG_FILE";
pub const WEBHOOK_QUEUE: &str = "OSB_WEBHOOK_QUEUE_URL";
pub const WEBHOOK_DLQ: &str = "OSB_WEBHOOK_DLQ_URL";
pub const WEBHOOK_ALLOW_HTTP: &str = "OSB_WEBHOOK_ALLOW_HTTP";
pub const POSTGRES_SECRET: &str = "OSB_POSTGRES_SECRET_ID";
pub const KMS_KEY: &str = "OSB_KMS_KEY_ID";
pub const ADMIN_SECRET: &str = "OSB_ADMIN_SECRET_ID";

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub table: String,
    /// The KMS key whose data keys seal the stored secrets (id, ARN or alias).
    pub kms_key_id: String,
    pub operations_queue_url: String,
    /// Where finished operations' webhook callbacks are queued.
    pub webhook_queue_url: String,
    /// Where the webhook sender moves a callback's message when delivery gives up (its DLQ).
    pub webhook_dlq_url: Option<String>,
    /// Whether plain-http webhook URLs are accepted (default: https only).
    pub webhook_allow_http: bool,
    /// Needed by the API function only.
    pub tenants_secret_id: Option<String>,
    /// The sharing token keys' secret; needed by the API function only.
    pub sharing_keys_secret_id: Option<String>,
    /// The catalog JSON; the demo catalog when unset.
    pub catalog_file: Option<PathBuf>,
    /// The Secrets Manager secret of the PostgreSQL server (`aws::postgres`); no PostgreSQL plans without it.
    pub postgres_secret_id: Option<String>,
    /// The admin API's credentials `{"username", "password"}`; without it the API serves no admin routes.
    pub admin_secret_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct EnvError(pub Vec<String>);

impl AwsConfig {
    /// Reads the configuration through `get` (the process environment in production).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        needs_tenants: bool,
    ) -> Result<Self, EnvError> {
        let mut problems = Vec::new();
        let mut required = |name: &str| match get(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => v,
            None => {
                problems.push(format!("{name} is not set"));
                String::new()
            }
        };
        let table = required(TABLE);
        let kms_key_id = required(KMS_KEY);
        let operations_queue_url = required(OPERATIONS_QUEUE);
        let webhook_queue_url = required(WEBHOOK_QUEUE);
        let tenants_secret_id = if needs_tenants {
            Some(required(TENANTS_SECRET))
        } else {
            get(TENANTS_SECRET)
        };
        let sharing_keys_secret_id = if needs_tenants {
            Some(required(SHARING_KEYS_SECRET))
        } else {
            get(SHARING_KEYS_SECRET)
        };
        for (name, url) in [
            (OPERATIONS_QUEUE, &operations_queue_url),
            (WEBHOOK_QUEUE, &webhook_queue_url),
        ] {
            if !url.is_empty() && !url.starts_with("http") {
                problems.push(format!("{name} must be a queue URL (https://sqs…)"));
            }
        }
        let webhook_allow_http = match get(WEBHOOK_ALLOW_HTTP).as_deref().map(str::trim) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                problems.push(format!("{WEBHOOK_ALLOW_HTTP} must be true or false"));
                false
            }
        };
        if !problems.is_empty() {
            return Err(EnvError(problems));
        }
        Ok(AwsConfig {
            table,
            kms_key_id,
            operations_queue_url,
            webhook_queue_url,
            webhook_dlq_url: get(WEBHOOK_DLQ).filter(|v| !v.trim().is_empty()),
            webhook_allow_http,
            tenants_secret_id,
            sharing_keys_secret_id,
            catalog_file: get(CATALOG_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            postgres_secret_id: get(POSTGRES_SECRET).filter(|v| !v.trim().is_empty()),
            admin_secret_id: get(ADMIN_SECRET).filter(|v| !v.trim().is_empty()),
        })
    }

    pub fn from_env(needs_tenants: bool) -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok(), needs_tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn names_every_missing_or_invalid_variable() {
        let env: HashMap<&str, &str> = HashMap::from([
            (OPERATIONS_QUEUE, "queue-name"),
            (WEBHOOK_ALLOW_HTTP, "yes"),
        ]);
        let err = AwsConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()), true)
            .expect_err("incomplete");
        let text = err.to_string();
        assert!(text.contains(TABLE), "{text}");
        assert!(text.contains(KMS_KEY), "{text}");
        assert!(text.contains(TENANTS_SECRET), "{text}");
        assert!(text.contains(SHARING_KEYS_SECRET), "{text}");
        assert!(text.contains("must be a queue URL"), "{text}");
        assert!(text.contains(WEBHOOK_QUEUE), "{text}");
        assert!(text.contains(WEBHOOK_ALLOW_HTTP), "{text}");
    }

    #[test]
    fn reads_a_complete_environment() {
        let env: HashMap<&str, &str> = HashMap::from([
            (TABLE, "t"),
            (KMS_KEY, "alias/osb"),
            (OPERATIONS_QUEUE, "https://sqs.us-east-1.amazonaws.com/1/q"),
            (WEBHOOK_QUEUE, "https://sqs.us-east-1.amazonaws.com/1/w"),
            (TENANTS_SECRET, "arn:secret"),
            (SHARING_KEYS_SECRET, "arn:keys"),
            (CATALOG_FILE, "/var/task/catalog.json"),
        ]);
        let cfg =
            AwsConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()), true).expect("valid");
        assert_eq!(cfg.table, "t");
        assert_eq!(cfg.sharing_keys_secret_id.as_deref(), Some("arn:keys"));
        assert_eq!(
            cfg.catalog_file,
            Some(PathBuf::from("/var/task/catalog.json"))
        );
    }
}
