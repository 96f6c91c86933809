//! SQL helpers of the PostgreSQL backends: the registry and tenant data.

use crate::error::ConfigError;

/// The error for a `name` that is not a PostgreSQL name this crate writes into SQL.
pub(crate) fn bad_name(setting: &'static str, name: impl Into<String>) -> ConfigError {
    ConfigError::invalid(
        setting,
        name,
        "not 1 to 63 bytes of [a-z0-9_] starting with a letter or '_'",
    )
}

/// Whether `name` is a PostgreSQL name (a channel, a role, a schema) this crate
/// writes into SQL without quoting: `[a-z_][a-z0-9_]{0,62}`.
pub fn is_sql_identifier(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::is_sql_identifier;

    #[test]
    fn only_names_that_need_no_quoting_pass() {
        for ok in [
            "tenancy",
            "_x",
            "app_role_2",
            "actix_tenancy_tenants",
            &"a".repeat(63),
        ] {
            assert!(is_sql_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "Tenancy",
            "9x",
            "a-b",
            "a b",
            "a\"b",
            "x\"; drop",
            &"a".repeat(64),
        ] {
            assert!(!is_sql_identifier(bad), "{bad}");
        }
    }
}
