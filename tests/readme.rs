//! The README's quickstart curl session, replayed against the quickstart's app: every
//! `$ curl` line of the section must answer exactly the body the README shows under
//! it. (`tests/saas.rs` replays the demo's session of "Try it" against the actix demo;
//! the last test here replays it against the demo on axum.)

use actix_web::{test, App};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod curl;
}

#[allow(dead_code, unreachable_pub)]
mod quickstart {
    include!("../examples/quickstart.rs");
}

#[allow(dead_code, unreachable_pub)]
mod quickstart_axum {
    include!("../crates/tower-tenancy/examples/axum_quickstart.rs");
}

#[allow(dead_code, unreachable_pub)]
mod saas_axum {
    include!("../crates/tower-tenancy/examples/axum_saas.rs");
}

#[actix_web::test]
async fn readme_quickstart_session_answers_as_shown() {
    let readme = include_str!("../README.md");
    let session = common::curl::exchanges(readme, "The quickstart");
    assert!(
        session.len() >= 8,
        "the README's quickstart session went missing"
    );

    let app = test::init_service(
        App::new()
            .wrap(quickstart::resolver().unwrap())
            .configure(quickstart::routes),
    )
    .await;
    for ex in session {
        let body = test::call_and_read_body(&app, common::curl::request(&ex).to_request()).await;
        assert_eq!(std::str::from_utf8(&body).unwrap(), ex.body(), "{ex:?}");
    }
}

/// Replays the README's `section` against an axum `app`: the same bytes for every
/// line.
async fn replay_on_axum(app: axum::Router, section: &str, at_least: usize) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let session = common::curl::exchanges(include_str!("../README.md"), section);
    assert!(
        session.len() >= at_least,
        "the README's {section} session went missing"
    );
    for ex in session {
        let mut req = axum::http::Request::builder()
            .method(ex.method.as_str())
            .uri(&ex.path)
            .header("host", &ex.host);
        for (name, value) in &ex.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(std::str::from_utf8(&body).unwrap(), ex.body(), "{ex:?}");
    }
}

/// The same session against the quickstart on axum (tower-tenancy's example): the
/// same bytes for every line.
#[actix_web::test]
async fn readme_quickstart_session_answers_the_same_on_axum() {
    replay_on_axum(quickstart_axum::app().unwrap(), "The quickstart", 8).await;
}

/// The README's "Try it" session (the SaaS demo's) against the demo on axum
/// (tower-tenancy's `axum_saas` example): the same bytes for every line, policy and
/// quota answers included.
#[actix_web::test]
async fn readme_saas_session_answers_the_same_on_axum() {
    replay_on_axum(saas_axum::app().unwrap(), "Try it", 12).await;
}
