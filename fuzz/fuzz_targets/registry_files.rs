//! The registry file loaders on arbitrary documents: never a panic; a document loads
//! whole or not at all (ids are validated as they are read).
#![no_main]

use actix_tenancy::registry::InMemoryRegistry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for loaded in [
        InMemoryRegistry::from_json_str(text),
        InMemoryRegistry::from_toml_str(text),
    ] {
        if let Ok(registry) = loaded {
            // Only documents that name tenants as `id = ...` can hold any.
            assert!(registry.len() == 0 || text.contains("id"));
        }
    }
});
