//! `examples/sessions.rs` end to end: login → token → tenant-scoped call → refresh →
//! logout, through the example's own app.

use actix_web::{http::header, test, web, App};
use serde_json::{json, Value};

#[allow(dead_code, unreachable_pub)]
mod sessions {
    include!("../examples/sessions.rs");
}

#[actix_web::test]
async fn login_token_tenant_scoped_call_refresh_logout() {
    let manager = sessions::sessions().unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(manager.clone()))
            .wrap(sessions::tenancy(&manager).unwrap())
            .configure(sessions::routes),
    )
    .await;
    let login = |body: Value| {
        test::TestRequest::post()
            .uri("/login")
            .set_json(body)
            .to_request()
    };

    // Wrong password and unknown tenant get the same answer.
    for bad in [
        json!({"tenant": "acme", "username": "ada", "password": "nope"}),
        json!({"tenant": "nowhere", "username": "ada", "password": "lovelace"}),
        json!({"tenant": "../x", "username": "ada", "password": "lovelace"}),
    ] {
        let res = test::call_service(&app, login(bad)).await;
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        assert_eq!(body["code"], "unauthenticated", "{body}");
        assert!(
            !body.to_string().contains("credentials"),
            "no reason for the client"
        );
    }

    let res = test::call_service(
        &app,
        login(json!({"tenant": "acme", "username": "ada", "password": "lovelace"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let pair: Value = test::read_body_json(res).await;
    assert_eq!(pair["token_type"], "Bearer");
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let bearer = |t: &str| (header::AUTHORIZATION, format!("Bearer {t}"));

    let notes = |t: &str| {
        test::TestRequest::get()
            .uri("/notes")
            .insert_header(bearer(t))
    };
    let body: Value = test::call_and_read_body_json(&app, notes(&access).to_request()).await;
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["user"], "ada");

    // The token is for acme: asking for globex with it is a conflict.
    let res = test::call_service(
        &app,
        notes(&access)
            .insert_header(("x-tenant-id", "globex"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 403);
    // No token: 401.
    let res = test::call_service(&app, test::TestRequest::get().uri("/notes").to_request()).await;
    assert_eq!(res.status(), 401);

    // Refresh, then log out: the revoked token stops working at once.
    let req = test::TestRequest::post()
        .uri("/refresh")
        .set_json(json!({"refresh_token": pair["refresh_token"]}))
        .to_request();
    let next: Value = test::call_and_read_body_json(&app, req).await;
    let access2 = next["access_token"].as_str().unwrap().to_owned();
    let req = test::TestRequest::post()
        .uri("/logout")
        .insert_header(bearer(&access2))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 204);
    let res = test::call_service(&app, notes(&access2).to_request()).await;
    assert_eq!(res.status(), 401);
    // The first access token is of the same family but was not revoked by the logout.
    let res = test::call_service(&app, notes(&access).to_request()).await;
    assert_eq!(res.status(), 200);
}
