use std::time::Duration;

use actix_web::{
    body::MessageBody as _,
    http::header::{HeaderName, HeaderValue},
    ResponseError as _,
};

use super::*;
use crate::core::SourceKind;

/// Rejections with each header and member a problem can carry.
fn samples() -> Vec<TenancyError> {
    vec![
        TenancyError::TenantMissing,
        TenancyError::CredentialMissing,
        TenancyError::Unauthenticated {
            reason: "expired".into(),
        },
        TenancyError::TenantInvalid {
            source: SourceKind::Header,
            reason: "bad".into(),
        },
        TenancyError::TenantUnavailable {
            retry_after: Some(Duration::from_millis(1500)),
            reason: "down".into(),
        },
        TenancyError::QuotaExceeded {
            retry_after: Some(Duration::from_secs(30)),
            limit: Some("day"),
        },
        TenancyError::CapabilityDenied {
            capability: "model",
            reason: "not on this tier".into(),
        },
        TenancyError::Misconfigured("a stage is missing"),
    ]
}

#[test]
fn every_code_has_its_anchor_in_the_table_the_problem_type_points_at() {
    let docs = include_str!("mod.rs");
    for code in ErrorCode::ALL {
        assert!(
            docs.contains(&format!(
                "<a id=\"{code}\"></a>`{code}` | {} |",
                code.status()
            )),
            "the module's table has no row for {code} with its status"
        );
    }
}

#[test]
fn every_codes_status_and_phrase_are_the_ones_http_knows() {
    // The core keeps its own small table (it names no framework); actix's is the oracle.
    for code in ErrorCode::ALL {
        let status = actix_web::http::StatusCode::from_u16(code.status()).unwrap();
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{code}"
        );
        assert_eq!(Some(code.phrase()), status.canonical_reason(), "{code}");
    }
}

#[test]
fn a_problem_as_data_is_the_response_actix_sends() {
    for err in samples() {
        for responder in [ProblemJson::default(), ProblemJson::default().about_blank()] {
            let problem = responder.problem(&err, Some(b"r-1"));
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
            assert_eq!(sent, data, "{err:?}");
            let body = res.into_body().try_into_bytes().ok().unwrap();
            assert_eq!(&body[..], problem.body().as_bytes(), "{err:?}");
        }
        // A handler's `Err(TenancyError)` answers the same, without an instance.
        assert_eq!(err.status_code().as_u16(), err.status());
        let res = err.error_response();
        let body = res.into_body().try_into_bytes().ok().unwrap();
        assert_eq!(
            &body[..],
            ProblemJson::default().problem(&err, None).body().as_bytes()
        );
    }
}

#[test]
fn the_default_responder_reads_the_request_id_header_it_is_told_to() {
    let err = TenancyError::TenantMissing;
    let instance = |r: &ProblemJson, name: &str, id: &[u8]| -> serde_json::Value {
        let req = actix_web::test::TestRequest::default()
            .insert_header((name, HeaderValue::from_bytes(id).unwrap()))
            .to_http_request();
        let res = r.respond(&err, &req);
        let body = res.into_body().try_into_bytes().ok().unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["instance"].clone()
    };
    let p = ProblemJson::default();
    assert_eq!(instance(&p, "x-request-id", b"req-1"), "req-1");
    assert!(instance(&p, "x-request-id", b"a\"b").is_null());
    assert!(instance(&p.clone().no_instance(), "x-request-id", b"abc").is_null());
    // An actix `HeaderName`, as before, or a plain name in any case.
    let other = p
        .clone()
        .instance_header(HeaderName::from_static("x-correlation-id"));
    assert!(instance(&other, "x-request-id", b"abc").is_null());
    assert_eq!(instance(&other, "x-correlation-id", b"abc"), "abc");
    let other = p.clone().instance_header("X-Correlation-Id");
    assert_eq!(instance(&other, "x-correlation-id", b"abc"), "abc");
    // A name no header can have is never found: no instance, no panic.
    let odd = p.instance_header("x request\nid");
    assert!(instance(&odd, "x-request-id", b"abc").is_null());
}
