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
        assert!(!code.status().is_success());
    }
}

#[test]
fn every_problem_body_is_valid_json_in_rfc_order() {
    use actix_web::body::MessageBody as _;
    let with_base = ProblemJson::default().type_base("https://e.example/\"x\\/");
    let blank = ProblemJson::default().about_blank();
    let docs = include_str!("mod.rs");
    for code in ErrorCode::ALL {
        let err = sample(code);
        assert_eq!(err.code(), code);
        for responder in [&ProblemJson::default(), &with_base, &blank] {
            let res = responder.body(&err);
            let body = res.into_body().try_into_bytes().ok().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["status"], err.status().as_u16());
            assert_eq!(v["code"], err.code().as_str());
            let text = std::str::from_utf8(&body).unwrap();
            assert!(text.starts_with("{\"type\":"), "{text}");
            assert!(
                text.ends_with("}\n"),
                "one line, ending in a newline: {text}"
            );
            assert!(!text.contains("internal detail"), "{text}");
        }
        let v = |r: &ProblemJson| -> serde_json::Value {
            let body = r.body(&err).into_body().try_into_bytes().ok().unwrap();
            serde_json::from_slice(&body).unwrap()
        };
        // Each code its own type, documented under its anchor.
        assert_eq!(
            v(&ProblemJson::default())["type"],
            format!("{DEFAULT_TYPE_BASE}{code}")
        );
        assert!(
            docs.contains(&format!("<a id=\"{code}\"></a>`{code}`")),
            "the module's table has no anchor for {code}"
        );
        assert_eq!(
            v(&with_base)["type"],
            format!("https://e.example/\"x\\/{code}")
        );
        assert_eq!(v(&with_base)["title"], code.title());
        // about:blank: the status's phrase, as RFC 9457 asks.
        let b = v(&blank);
        assert_eq!(b["type"], "about:blank");
        assert_eq!(b["title"], code.status().canonical_reason().unwrap());
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
    let res = ProblemJson::default().body(&err);
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    use actix_web::body::MessageBody as _;
    let body = match res.into_body().try_into_bytes() {
        Ok(b) => b,
        Err(_) => panic!("body is not in memory"),
    };
    let text = std::str::from_utf8(&body).unwrap();
    assert!(!text.contains("secret"));
    assert!(text.contains("\"code\":\"tenant_forbidden\""));
}

#[test]
fn instance_is_the_request_id_when_it_is_a_safe_one() {
    use actix_web::body::MessageBody as _;
    let err = TenancyError::TenantMissing;
    let instance = |r: &ProblemJson, id: Option<&[u8]>| -> serde_json::Value {
        let mut req = actix_web::test::TestRequest::default();
        if let Some(id) = id {
            req = req.insert_header(("x-request-id", HeaderValue::from_bytes(id).unwrap()));
        }
        let res = r.respond(&err, &req.to_http_request());
        let body = res.into_body().try_into_bytes().ok().unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["instance"].clone()
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
    assert!(instance(&p.clone().no_instance(), Some(b"abc")).is_null());
    let other = p.instance_header(header::HeaderName::from_static("x-correlation-id"));
    assert!(
        instance(&other, Some(b"abc")).is_null(),
        "another header is read"
    );
}

#[test]
fn a_problem_as_data_is_the_response_actix_sends() {
    use actix_web::body::MessageBody as _;
    for code in ErrorCode::ALL {
        let err = sample(code);
        for responder in [ProblemJson::default(), ProblemJson::default().about_blank()] {
            let problem = responder.problem(&err, Some(b"r-1"));
            assert_eq!(problem.status(), err.status().as_u16());
            let mut res: HttpResponse = problem.clone().into();
            // The challenge the pipeline adds is already there: added once.
            add_challenge(&err, &mut res);
            assert_eq!(res.status().as_u16(), problem.status());
            let mut sent: Vec<(String, String)> = res
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            let mut data: Vec<(String, String)> = problem
                .headers()
                .map(|(n, v)| (n.to_owned(), v.into_owned()))
                .collect();
            sent.sort();
            data.sort();
            assert_eq!(sent, data, "{code}");
            let body = res.into_body().try_into_bytes().ok().unwrap();
            assert_eq!(&body[..], problem.body().as_bytes(), "{code}");
        }
    }
    let later = ProblemJson::default().problem(&sample(ErrorCode::TenantUnavailable), None);
    assert!(
        later.headers().any(|(n, v)| n == "retry-after" && v == "2"),
        "{later:?}"
    );
    let never = ProblemJson::default().problem(&sample(ErrorCode::QuotaExceeded), None);
    assert!(
        !never.headers().any(|(n, _)| n == "retry-after"),
        "{never:?}"
    );
    let denied = ProblemJson::default().problem(&sample(ErrorCode::PolicyDenied), None);
    assert!(!denied.headers().any(|(n, _)| n == "www-authenticate"));
    // A hostile id is left out of the data as it is out of the response.
    let hostile = ProblemJson::default().problem(&sample(ErrorCode::TenantMissing), Some(b"a\"b"));
    assert!(!hostile.body().contains("instance"), "{}", hostile.body());
}
