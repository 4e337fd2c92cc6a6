//! Typed configuration of the Lambda functions, read once from the environment at cold start. Every
//! missing or invalid variable is named in the one error.

use std::path::PathBuf;

/// Environment variable names.
pub const TABLE: &str = "OSB_TABLE_NAME";
pub const OPERATIONS_QUEUE: &str = "OSB_OPERATIONS_QUEUE_URL";
pub const TENANTS_SECRET: &str = "OSB_TENANTS_SECRET_ID";
pub const CATALOG_FILE: &str = "OSB_CATALOG_FILE";

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub table: String,
    pub operations_queue_url: String,
    /// Needed by the API function only.
    pub tenants_secret_id: Option<String>,
    /// The catalog JSON; the demo catalog when unset.
    pub catalog_file: Option<PathBuf>,
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
        let operations_queue_url = required(OPERATIONS_QUEUE);
        let tenants_secret_id = if needs_tenants {
            Some(required(TENANTS_SECRET))
        } else {
            get(TENANTS_SECRET)
        };
        if !operations_queue_url.is_empty() && !operations_queue_url.starts_with("http") {
            problems.push(format!(
                "{OPERATIONS_QUEUE} must be a queue URL (https://sqs…)"
            ));
        }
        if !problems.is_empty() {
            return Err(EnvError(problems));
        }
        Ok(AwsConfig {
            table,
            operations_queue_url,
            tenants_secret_id,
            catalog_file: get(CATALOG_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
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
        let env: HashMap<&str, &str> = HashMap::from([(OPERATIONS_QUEUE, "queue-name")]);
        let err = AwsConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()), true)
            .expect_err("incomplete");
        let text = err.to_string();
        assert!(text.contains(TABLE), "{text}");
        assert!(text.contains(TENANTS_SECRET), "{text}");
        assert!(text.contains("must be a queue URL"), "{text}");
    }

    #[test]
    fn reads_a_complete_environment() {
        let env: HashMap<&str, &str> = HashMap::from([
            (TABLE, "t"),
            (OPERATIONS_QUEUE, "https://sqs.us-east-1.amazonaws.com/1/q"),
            (TENANTS_SECRET, "arn:secret"),
            (CATALOG_FILE, "/var/task/catalog.json"),
        ]);
        let cfg =
            AwsConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()), true).expect("valid");
        assert_eq!(cfg.table, "t");
        assert_eq!(
            cfg.catalog_file,
            Some(PathBuf::from("/var/task/catalog.json"))
        );
    }
}
