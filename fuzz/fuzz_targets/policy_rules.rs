//! The policy rule grammar and documents: never a panic; a rule either parses into a
//! policy that decides, or is refused at load.
#![no_main]

use std::sync::Arc;

use actix_tenancy::{
    policy::{PolicyRequest, PolicySet, RulePolicy, Rules},
    registry::TenantRecord,
    resolve::SourceKind,
    TenantContext, TenantId,
};
use actix_web::http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PolicySet::from_json(text).and_then(RulePolicy::new);
    let _ = PolicySet::from_toml(text).and_then(RulePolicy::new);
    let (route, capability) = text.split_once('\n').unwrap_or((text, text));
    let set = PolicySet::new()
        .tier(
            "pro",
            Rules::new().allow(route).allow_capability(capability),
        )
        .tenant("acme", Rules::new().deny(route).deny_capability(capability));
    if let Ok(policy) = RulePolicy::new(set) {
        let id = TenantId::parse("acme").unwrap();
        let tenant = TenantContext::new(
            id.clone(),
            SourceKind::Header,
            Arc::new(TenantRecord::new(id, "pro")),
            None,
        );
        let req = PolicyRequest::new(Method::GET, route.to_owned()).with_capability(capability);
        let _ = policy.decide(&tenant, &req);
        let _ = policy.can(&tenant, capability);
    }
});
