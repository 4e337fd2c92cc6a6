//! Names of what the PostgreSQL backend creates, derived from a resource's identity only (never from user
//! input), at most 63 bytes, and the quoting of identifiers and literals in SQL text.

use sha2::{Digest, Sha256};

/// PostgreSQL's limit on identifiers (NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest database name prefix a server may configure (so every derived name stays within 63 bytes).
pub const MAX_PREFIX_BYTES: usize = 20;

const INSTANCE_HASH_HEX: usize = 24;
const BINDING_HASH_HEX: usize = 16;

/// The names of one instance's database and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNames {
    /// The database: `<prefix><24 hex>`.
    pub database: String,
    /// The NOLOGIN role owning the database and everything the bindings create: `<database>_owner`.
    pub owner: String,
    /// What every binding role's name starts with: `<database>_b`.
    pub binding_prefix: String,
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(n)
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect()
}

/// Each part is length-prefixed, so no two identities share an input.
fn digest(label: &str, parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

impl InstanceNames {
    /// The names of instance `(tenant, instance_id, generation)` under `prefix` (validated by the server
    /// configuration: lowercase letters, digits and `_`, at most [`MAX_PREFIX_BYTES`]).
    pub fn new(prefix: &str, tenant: &str, instance_id: &str, generation: u64) -> Self {
        let d = digest(
            "osb-broker postgresql instance",
            &[tenant, instance_id, &generation.to_string()],
        );
        let database = format!("{prefix}{}", hex_prefix(&d, INSTANCE_HASH_HEX));
        InstanceNames {
            owner: format!("{database}_owner"),
            binding_prefix: format!("{database}_b"),
            database,
        }
    }

    /// The LOGIN role of binding `(binding_id, binding_generation)` of this instance.
    pub fn binding_role(&self, binding_id: &str, binding_generation: u64) -> String {
        let d = digest(
            "osb-broker postgresql binding",
            &[binding_id, &binding_generation.to_string()],
        );
        format!(
            "{}{}",
            self.binding_prefix,
            hex_prefix(&d, BINDING_HASH_HEX)
        )
    }
}

/// Quotes an identifier as PostgreSQL's `quote_ident` does (always quoted: `"` doubled inside).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal as PostgreSQL's `quote_literal` does: `'` doubled, and when the text holds a
/// backslash the `E'…'` form with backslashes doubled, so the result means the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(text: &str) -> String {
    let body = text.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct_per_identity() {
        let prefix = "a".repeat(MAX_PREFIX_BYTES);
        let n = InstanceNames::new(&prefix, "cf1", &"i".repeat(255), u64::MAX);
        let role = n.binding_role(&"b".repeat(255), u64::MAX);
        assert!(n.database.len() <= MAX_NAME_BYTES);
        assert!(n.owner.len() <= MAX_NAME_BYTES);
        assert!(role.len() <= MAX_NAME_BYTES, "{role}");
        assert!(role.starts_with(&n.binding_prefix));
        assert_eq!(
            n,
            InstanceNames::new(&prefix, "cf1", &"i".repeat(255), u64::MAX)
        );
        let other_gen = InstanceNames::new("p_", "cf1", "x", 2);
        assert_ne!(other_gen, InstanceNames::new("p_", "cf1", "x", 1));
        // Tenant and id are separated: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            InstanceNames::new("p_", "ab", "c", 1).database,
            InstanceNames::new("p_", "a", "bc", 1).database
        );
        let i = InstanceNames::new("p_", "t", "i", 1);
        assert_ne!(i.binding_role("b", 1), i.binding_role("b", 2));
        assert!(
            i.database
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }

    #[test]
    fn quoting_doubles_quotes_and_escapes_backslashes() {
        assert_eq!(quote_ident("db"), "\"db\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }
}
