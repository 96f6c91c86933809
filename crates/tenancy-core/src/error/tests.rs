use super::*;

#[test]
fn retry_after_rounds_up_and_is_at_least_one() {
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
}

#[test]
fn codes_are_unique_and_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for code in ErrorCode::ALL {
        assert!(seen.insert(code.as_str()));
        assert!(code
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_'));
        assert!((400..600).contains(&code.status()), "{code}");
    }
}

#[test]
fn every_problem_body_is_valid_json_in_rfc_order() {
    let with_base = ProblemJson::default().type_base("https://e.example/\"x\\/");
    let blank = ProblemJson::default().about_blank();
    for code in ErrorCode::ALL {
        let err = sample(code);
        assert_eq!(err.code(), code);
        for responder in [&ProblemJson::default(), &with_base, &blank] {
            let problem = responder.problem(&err, None);
            assert_eq!(problem.status(), err.status());
            let v: serde_json::Value = serde_json::from_str(problem.body()).unwrap();
            assert_eq!(v["status"], err.status());
            assert_eq!(v["code"], err.code().as_str());
            let text = problem.body();
            assert!(text.starts_with("{\"type\":"), "{text}");
            assert!(
                text.ends_with("}\n"),
                "one line, ending in a newline: {text}"
            );
            assert!(!text.contains("internal detail"), "{text}");
        }
        let v = |r: &ProblemJson| -> serde_json::Value {
            serde_json::from_str(r.problem(&err, None).body()).unwrap()
        };
        // Each code its own type, documented under its anchor.
        assert_eq!(
            v(&ProblemJson::default())["type"],
            format!("{DEFAULT_TYPE_BASE}{code}")
        );
        assert_eq!(
            v(&with_base)["type"],
            format!("https://e.example/\"x\\/{code}")
        );
        assert_eq!(v(&with_base)["title"], code.title());
        // about:blank: the status's phrase, as RFC 9457 asks.
        let b = v(&blank);
        assert_eq!(b["type"], "about:blank");
        assert_eq!(b["title"], code.phrase());
    }
}

fn sample(code: ErrorCode) -> TenancyError {
    let reason = || Cow::Borrowed("internal detail");
    match code {
        ErrorCode::TenantMissing => TenancyError::TenantMissing,
        ErrorCode::TenantInvalid => TenancyError::TenantInvalid {
            source: SourceKind::Header,
            reason: reason(),
        },
        ErrorCode::TenantConflict => TenancyError::TenantConflict {
            first: SourceKind::Claim,
            second: SourceKind::Header,
        },
        ErrorCode::TenantForbidden => TenancyError::TenantForbidden { reason: reason() },
        ErrorCode::TenantMisdirected => TenancyError::TenantMisdirected,
        ErrorCode::TenantUnavailable => TenancyError::TenantUnavailable {
            retry_after: Some(Duration::from_millis(1500)),
            reason: reason(),
        },
        ErrorCode::TenantReadOnly => TenancyError::TenantReadOnly,
        ErrorCode::Unauthenticated => TenancyError::Unauthenticated { reason: reason() },
        ErrorCode::AuthUnavailable => TenancyError::AuthUnavailable { reason: reason() },
        ErrorCode::PolicyDenied => TenancyError::PolicyDenied { reason: reason() },
        ErrorCode::PolicyUnavailable => TenancyError::PolicyUnavailable { reason: reason() },
        ErrorCode::QuotaExceeded => TenancyError::QuotaExceeded {
            retry_after: None,
            limit: Some("day"),
        },
        ErrorCode::QuotaUnavailable => TenancyError::QuotaUnavailable { reason: reason() },
        ErrorCode::CostInvalid => TenancyError::CostInvalid { reason: reason() },
        ErrorCode::InvalidRequest => TenancyError::InvalidRequest { reason: reason() },
        ErrorCode::Internal => TenancyError::Misconfigured("internal detail"),
    }
}

#[test]
fn problem_body_reveals_no_reason() {
    let err = TenancyError::TenantForbidden {
        reason: "suspended since 2026-01-01 (secret-internal)".into(),
    };
    let problem = ProblemJson::default().problem(&err, None);
    assert_eq!(problem.status(), 403);
    assert!(!problem.body().contains("secret"));
    assert!(problem.body().contains("\"code\":\"tenant_forbidden\""));
}

#[test]
fn instance_is_the_request_id_when_it_is_a_safe_one() {
    let err = TenancyError::TenantMissing;
    let instance = |r: &ProblemJson, id: Option<&[u8]>| -> serde_json::Value {
        let problem = r.problem(&err, id);
        serde_json::from_str::<serde_json::Value>(problem.body()).unwrap()["instance"].clone()
    };
    let p = ProblemJson::default();
    assert_eq!(
        instance(&p, Some(b"4bf92f3577b34da6a3ce929d0e0e4736")),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(instance(&p, Some(b"req-1.a_b~c")), "req-1.a_b~c");
    assert!(instance(&p, None).is_null());
    // Hostile or odd ids are left out, never escaped into the body.
    for id in [
        &b"a\"b"[..],
        b"a\\b",
        b"a b",
        b"/etc/passwd",
        b"x:y",
        b"%2e%2e",
        b"\xff\xfe",
        &[b'a'; 129],
    ] {
        assert!(instance(&p, Some(id)).is_null(), "{id:?}");
    }
    assert_eq!(p.instance_header_name(), Some("x-request-id"));
    assert_eq!(p.clone().no_instance().instance_header_name(), None);
    let other = p.instance_header("X-Correlation-Id");
    assert_eq!(other.instance_header_name(), Some("x-correlation-id"));
}

#[test]
fn a_problem_carries_its_headers() {
    let later = ProblemJson::default().problem(&sample(ErrorCode::TenantUnavailable), None);
    let names = |p: &Problem| {
        p.headers()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&later),
        [
            "content-type: application/problem+json",
            "cache-control: no-store",
            "retry-after: 2"
        ]
    );
    let never = ProblemJson::default().problem(&sample(ErrorCode::QuotaExceeded), None);
    assert!(
        !never.headers().any(|(n, _)| n == "retry-after"),
        "{never:?}"
    );
    let missing = ProblemJson::default().problem(&TenancyError::CredentialMissing, None);
    assert!(names(&missing).contains(&"www-authenticate: Bearer".to_owned()));
    let bad = ProblemJson::default().problem(&sample(ErrorCode::Unauthenticated), None);
    assert!(names(&bad).contains(&"www-authenticate: Bearer error=\"invalid_token\"".to_owned()));
    let denied = ProblemJson::default().problem(&sample(ErrorCode::PolicyDenied), None);
    assert!(!denied.headers().any(|(n, _)| n == "www-authenticate"));
}
