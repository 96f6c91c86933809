//! One request through a test service, answered as its status and body text.

use actix_web::{body::MessageBody, dev::ServiceResponse, test};

/// The status and body of `req` sent to `app`.
pub async fn send<S, B>(app: &S, req: test::TestRequest) -> (u16, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}
