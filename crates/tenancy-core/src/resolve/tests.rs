use super::*;
use crate::TenantId;

fn rule() -> TenantIdRule {
    TenantIdRule::Default
}

fn one(v: &str) -> std::iter::Once<&[u8]> {
    std::iter::once(v.as_bytes())
}

#[test]
fn a_header_names_one_tenant_and_refuses_two_values_and_invisible_bytes() {
    let h = |vals: &[&'static [u8]]| {
        header_tenant(
            vals.iter().copied(),
            "x-tenant-id",
            SourceKind::Header,
            &rule(),
        )
    };
    assert_eq!(h(&[b"acme"]).unwrap().as_deref(), Some("acme"));
    assert_eq!(h(&[]).unwrap(), None);
    assert_eq!(
        h(&[b"acme", b"acme"]).unwrap_err().code().as_str(),
        "tenant_invalid"
    );
    assert_eq!(
        h(&[b"ac\x7fme"]).unwrap_err().code().as_str(),
        "tenant_invalid"
    );
    assert_eq!(
        h(&[b"ac\xc3\xa9"]).unwrap_err().code().as_str(),
        "tenant_invalid"
    );
    assert_eq!(h(&[b"ACME"]).unwrap_err().code().as_str(), "tenant_invalid");
}

#[test]
fn a_host_names_the_label_above_a_base_domain_and_nothing_else() {
    let bases = base_domains(["example.com", "eu.example.com"]).unwrap();
    let h = |host: &'static str| host_tenant(one(host), None, &bases, SourceKind::Host, &rule());
    assert_eq!(h("acme.example.com").unwrap().as_deref(), Some("acme"));
    assert_eq!(h("ACME.Example.COM:8443").unwrap().as_deref(), Some("acme"));
    assert_eq!(h("acme.example.com.").unwrap().as_deref(), Some("acme"));
    assert_eq!(h("acme.eu.example.com").unwrap().as_deref(), Some("acme"));
    assert_eq!(h("example.com").unwrap(), None);
    assert_eq!(h("10.0.0.1:80").unwrap(), None);
    assert_eq!(h("[::1]:80").unwrap(), None);
    assert_eq!(h("acme.example.org").unwrap(), None);
    assert_eq!(
        h("a.b.example.com").unwrap_err().code().as_str(),
        "tenant_invalid"
    );
    assert_eq!(
        h("acme.example.com:x").unwrap_err().code().as_str(),
        "tenant_invalid"
    );
    let two = [b"a.example.com".as_slice(), b"b.example.com"];
    assert!(host_tenant(two.into_iter(), None, &bases, SourceKind::Host, &rule()).is_err());
}

#[test]
fn a_host_that_disagrees_with_the_target_authority_is_refused() {
    let bases = base_domains(["example.com"]).unwrap();
    let auth = Authority {
        full: "evil.example.com",
        host: "evil.example.com",
    };
    let err = host_tenant(
        one("acme.example.com"),
        Some(auth),
        &bases,
        SourceKind::Host,
        &rule(),
    );
    assert_eq!(err.unwrap_err().code().as_str(), "tenant_invalid");
    let same = Authority {
        full: "ACME.example.com",
        host: "ACME.example.com",
    };
    let ok = host_tenant(
        one("acme.example.com"),
        Some(same),
        &bases,
        SourceKind::Host,
        &rule(),
    );
    assert_eq!(ok.unwrap().as_deref(), Some("acme"));
    let alone = host_tenant(
        std::iter::empty(),
        Some(same),
        &bases,
        SourceKind::Host,
        &rule(),
    );
    assert_eq!(alone.unwrap().as_deref(), Some("acme"));
}

#[test]
fn base_domains_and_prefixes_are_checked_when_configured() {
    assert!(base_domains(Vec::<String>::new()).is_err());
    assert!(base_domains(["10.0.0.1"]).is_err());
    assert!(base_domains(["exa mple.com"]).is_err());
    assert!(path_prefix("/t").is_err());
    assert!(path_prefix("t/").is_err());
    assert_eq!(path_prefix("/t/").unwrap(), "/t/");
}

#[test]
fn a_path_names_the_segment_after_its_prefix() {
    let p = |path: &'static str| path_tenant(path, "/t/", SourceKind::Path, &rule());
    assert_eq!(p("/t/acme/items").unwrap().as_deref(), Some("acme"));
    assert_eq!(p("/t/acme").unwrap().as_deref(), Some("acme"));
    assert_eq!(p("/other").unwrap(), None);
    assert_eq!(p("/t//x").unwrap_err().code().as_str(), "tenant_invalid");
}

#[test]
fn the_routing_path_decodes_as_actix_does() {
    assert!(matches!(routing_path("/t/acme/x"), Cow::Borrowed(_)));
    assert_eq!(routing_path("/t/ac%6De/x"), "/t/acme/x");
    assert_eq!(routing_path("/t/ac%6de/x"), "/t/acme/x");
    // `%2F`, `%25` and `%2B` stay as written: a segment is never split, and nothing
    // decoded twice.
    assert_eq!(routing_path("/t/a%2Fb/x"), "/t/a%2Fb/x");
    assert_eq!(routing_path("/t/a%256De"), "/t/a%256De");
    assert_eq!(routing_path("/t/a%2B"), "/t/a%2B");
    assert_eq!(routing_path("/t/a%"), "/t/a%");
    assert_eq!(routing_path("/t/a%6"), "/t/a%6");
    assert_eq!(routing_path("/t/a%zz"), "/t/a%zz");
    assert_eq!(routing_path("/t/%FF/x"), "/t/\u{fffd}/x");
    let decoded = routing_path("/t/%FF/x");
    assert!(path_tenant(&decoded, "/t/", SourceKind::Path, &rule()).is_err());
}

#[test]
fn a_verified_source_wins_and_a_disagreement_is_a_conflict() {
    let named = |id: &'static str, kind, rank| Named {
        id: Cow::Borrowed(id),
        kind,
        rank,
    };
    let mut n = Naming::new();
    n.add(named("acme", SourceKind::Header, 0));
    n.add(named("acme", SourceKind::Claim, 1));
    assert_eq!(n.finish().unwrap().unwrap().kind, SourceKind::Claim);

    let mut n = Naming::new();
    n.add(named("acme", SourceKind::Header, 0));
    n.add(named("globex", SourceKind::Claim, 1));
    match n.finish() {
        Err(TenancyError::TenantConflict { first, second }) => {
            assert_eq!((first, second), (SourceKind::Claim, SourceKind::Header));
        }
        other => panic!("{other:?}"),
    }
    assert!(Naming::new().finish().unwrap().is_none());
}

#[test]
fn a_claim_is_the_principal_tenant_checked() {
    let p = Principal::new("alice").with_tenant(TenantId::parse("acme").unwrap());
    let got = claim_tenant(Some(&p), SourceKind::Claim, &rule()).unwrap();
    assert_eq!(got.as_deref(), Some("acme"));
    assert_eq!(
        claim_tenant(None, SourceKind::Claim, &rule()).unwrap(),
        None
    );
}

#[test]
fn admission_follows_status_region_and_method() {
    let id = TenantId::parse("acme").unwrap();
    let rec = |s| TenantRecord::new(id.clone(), "pro").with_status(s);
    let a = Admission {
        region: Some("eu".into()),
        ..Admission::default()
    };
    assert!(a.admit(&rec(crate::TenantStatus::Active), false).is_ok());
    let code = |r: Result<(), TenancyError>| r.unwrap_err().code().as_str();
    assert_eq!(
        code(a.admit(&rec(crate::TenantStatus::Suspended), true)),
        "tenant_forbidden"
    );
    let us = rec(crate::TenantStatus::Active).with_region("us");
    assert_eq!(code(a.admit(&us, true)), "tenant_misdirected");
    assert!(is_safe_method("GET") && !is_safe_method("POST") && !is_safe_method("get"));
}

#[test]
fn an_unknown_tenant_is_answered_as_a_suspended_one() {
    let unknown = recognise("acme", Ok(None)).unwrap_err();
    assert_eq!(unknown.code().as_str(), "tenant_forbidden");
    let other = TenantRecord::new(TenantId::parse("globex").unwrap(), "free");
    let wrong = recognise("acme", Ok(Some(Arc::new(other)))).unwrap_err();
    assert_eq!(wrong.code().as_str(), "tenant_unavailable");
}

#[test]
fn a_custom_answer_is_checked_like_any_other() {
    let r = custom_tenant(SourceKind::Custom, &rule(), Ok(Some("acme".into())));
    assert_eq!(r.unwrap().as_deref(), Some("acme"));
    let bad = custom_tenant(SourceKind::Custom, &rule(), Err(SourceError::new("no")));
    assert_eq!(bad.unwrap_err().code().as_str(), "tenant_invalid");
}
