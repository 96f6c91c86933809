//! The id rule: never a panic; an accepted id is exactly the input, within the default
//! rule's alphabet, and the hard floor holds for any custom rule.
#![no_main]

use actix_tenancy::{TenantId, TenantIdRule, MAX_TENANT_ID_LEN};

/// The floor no rule can lift: at most 255 bytes (`TenantIdRule`'s docs).
const HARD_MAX_TENANT_ID_LEN: usize = 255;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = TenantId::parse(s) {
        assert_eq!(id.as_str(), s, "never normalised");
        assert!((1..=MAX_TENANT_ID_LEN).contains(&s.len()));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
        assert!(s.as_bytes()[0].is_ascii_alphanumeric());
    }
    // A rule that accepts everything still cannot lift the floor.
    if let Ok(id) = TenantIdRule::custom(|_| true).parse(s) {
        assert_eq!(id.as_str(), s);
        assert!((1..=HARD_MAX_TENANT_ID_LEN).contains(&s.len()));
        assert!(s.bytes().all(|b| b.is_ascii_graphic()));
    }
});
