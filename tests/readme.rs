//! The README's quickstart curl session, replayed against the quickstart's app: every
//! `$ curl` line of the section must answer exactly the body the README shows under
//! it. (`tests/saas.rs` replays the demo's session of "Try it".)

use actix_web::{test, App};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod curl;
}

#[allow(dead_code, unreachable_pub)]
mod quickstart {
    include!("../examples/quickstart.rs");
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
