use std::{fmt, path::Path, sync::Arc};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use serde::Deserialize;

use super::{Lookup, RegistryError, TenantRecord, TenantRegistry};
use crate::{Answer, ConfigError, Moment, TenantId};

/// A registry held in memory: built in code, or loaded from a JSON or TOML document.
///
/// Lookups never wait, so the resolver answers them on its synchronous fast path.
/// Changes ([`insert`](Self::insert), [`remove`](Self::remove)) take effect for the
/// next request; when the registry sits behind a [`CachedRegistry`](super::CachedRegistry), call its
/// [`invalidate`](super::CachedRegistry::invalidate) too.
///
/// ```
/// use tenancy_core::registry::{InMemoryRegistry, TenantRecord, TenantStatus};
///
/// let registry = InMemoryRegistry::from_json_str(r#"{ "tenants": [
///     { "id": "acme",    "tier": "pro" },
///     { "id": "initech", "tier": "pro", "status": "suspended" },
///     { "id": "umbrella", "tier": "enterprise", "region": "eu" }
/// ] }"#).unwrap();
/// assert_eq!(registry.len(), 3);
/// ```
///
/// The document is `{ "tenants": [record, ...] }`; a record has `id` and `tier`, and
/// optionally `status` (default `active`), `region`, `parent` and `attributes`. Unknown
/// fields, invalid ids and duplicate ids are errors. TOML (feature `toml`) uses
/// `[[tenants]]` tables with the same fields.
#[derive(Default)]
pub struct InMemoryRegistry {
    tenants: DashMap<TenantId, Arc<TenantRecord>, RandomState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    tenants: Vec<TenantRecord>,
}

impl InMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding `records`; a later record with an id already seen replaces
    /// the earlier one.
    pub fn from_records(records: impl IntoIterator<Item = TenantRecord>) -> Self {
        let reg = Self::new();
        for r in records {
            reg.insert(r);
        }
        reg
    }

    /// Adds a record, builder style.
    #[must_use]
    pub fn with(self, record: TenantRecord) -> Self {
        self.insert(record);
        self
    }

    /// Adds or replaces a record; returns the previous one.
    pub fn insert(&self, record: TenantRecord) -> Option<Arc<TenantRecord>> {
        self.tenants.insert(record.id().clone(), Arc::new(record))
    }

    /// Removes a tenant; returns its record.
    pub fn remove(&self, id: &str) -> Option<Arc<TenantRecord>> {
        self.tenants.remove(id).map(|(_, r)| r)
    }

    /// The record of `id`, if known.
    pub fn get(&self, id: &str) -> Option<Arc<TenantRecord>> {
        self.tenants.get(id).map(|r| Arc::clone(r.value()))
    }

    /// How many tenants are known.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether no tenant is known.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    fn from_document(doc: Document) -> Result<Self, ConfigError> {
        let reg = Self::new();
        for rec in doc.tenants {
            let id = rec.id().clone();
            if reg.insert(rec).is_some() {
                return Err(ConfigError::Duplicate {
                    what: "tenant",
                    value: id.as_str().to_owned(),
                });
            }
        }
        Ok(reg)
    }

    /// Loads a JSON document.
    pub fn from_json_str(json: &str) -> Result<Self, ConfigError> {
        let doc: Document =
            serde_json::from_str(json).map_err(|e| ConfigError::InvalidDocument {
                of: "registry",
                reason: e.to_string(),
            })?;
        Self::from_document(doc)
    }

    /// Loads a JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_json_str(&read(path.as_ref())?)
    }

    /// Loads a TOML document (feature `toml`).
    ///
    /// ```
    /// # #[cfg(feature = "toml")] {
    /// use tenancy_core::registry::InMemoryRegistry;
    ///
    /// let registry = InMemoryRegistry::from_toml_str(r#"
    ///     [[tenants]]
    ///     id = "acme"
    ///     tier = "pro"
    ///
    ///     [[tenants]]
    ///     id = "globex"
    ///     tier = "free"
    ///     status = "read_only"
    /// "#).unwrap();
    /// assert_eq!(registry.len(), 2);
    /// # }
    /// ```
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let doc: Document = toml::from_str(text).map_err(|e| ConfigError::InvalidDocument {
            of: "registry",
            reason: e.to_string(),
        })?;
        Self::from_document(doc)
    }

    /// Loads a TOML file (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read(path.as_ref())?)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::UnreadableFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl fmt::Debug for InMemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRegistry")
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

impl TenantRegistry for InMemoryRegistry {
    #[inline]
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::Now(Ok(self.get(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantStatus;

    #[test]
    fn json_document_loads_and_rejects_mistakes() {
        let reg = InMemoryRegistry::from_json_str(
            r#"{"tenants":[{"id":"acme","tier":"pro","parent":"org","attributes":{"seats":5}}]}"#,
        )
        .unwrap();
        let acme = reg.get("acme").unwrap();
        assert_eq!(acme.parent().unwrap().as_str(), "org");
        assert_eq!(acme.attribute("seats"), Some(&serde_json::json!(5)));

        for bad in [
            r#"{"tenants":[{"id":"acme","tier":"pro"},{"id":"acme","tier":"free"}]}"#,
            r#"{"tenants":[{"id":"ACME","tier":"pro"}]}"#,
            r#"{"tenants":[{"id":"acme"}]}"#,
            r#"{"tenants":[{"id":"acme","tier":"pro","status":"zombie"}]}"#,
            r#"{"tenant":[]}"#,
            "not json",
        ] {
            assert!(InMemoryRegistry::from_json_str(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_document_loads() {
        let reg = InMemoryRegistry::from_toml_str(
            "[[tenants]]\nid = \"acme\"\ntier = \"pro\"\nstatus = \"maintenance\"\n",
        )
        .unwrap();
        assert_eq!(reg.get("acme").unwrap().status(), TenantStatus::Maintenance);
        assert!(
            InMemoryRegistry::from_toml_str("[[tenants]]\nid = \"../x\"\ntier = \"a\"\n").is_err()
        );
    }

    #[test]
    fn missing_file_is_a_config_error() {
        let err = InMemoryRegistry::from_json_file("/nonexistent/tenants.json").unwrap_err();
        assert!(matches!(err, ConfigError::UnreadableFile { .. }), "{err:?}");
        let _ = TenantStatus::Active;
    }
}
