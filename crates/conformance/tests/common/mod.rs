//! What the conformance tables share: the registry every row runs against, a request,
//! an answer with its audit events, what a row wants, and the check.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tenancy_core::{
    observe::AuditEvent,
    registry::{InMemoryRegistry, Lookup, RegistryError, TenantRegistry},
    Answer, Moment, Principal, TenantId, TenantRecord, TenantStatus,
};

/// The tenants every row runs against, and three that the registry cannot serve.
#[derive(Clone)]
pub struct Registry(Arc<InMemoryRegistry>);

impl Registry {
    pub fn new() -> Self {
        let rec = |id: &str, tier: &str| TenantRecord::new(TenantId::parse(id).unwrap(), tier);
        Self(Arc::new(
            InMemoryRegistry::new()
                .with(rec("acme", "pro"))
                .with(rec("globex", "free").with_status(TenantStatus::Suspended))
                .with(rec("initech", "free").with_status(TenantStatus::ReadOnly))
                .with(rec("hooli", "free").with_status(TenantStatus::Maintenance))
                .with(rec("umbrella", "pro").with_region("us"))
                .with(rec("slowco", "pro"))
                .with(rec("liar", "pro"))
                .with(rec("wonka", "pro"))
                .with(rec("stark", "free")),
        ))
    }
}

impl TenantRegistry for Registry {
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        at: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        match id {
            "broken" => Answer::Now(Err(RegistryError::new("the registry is down"))),
            "panics" => panic!("a registry bug"),
            // Waits, then answers: the adapters' waiting path.
            "slowco" => Answer::later(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(self.0.get(id))
            }),
            // Never answers in time: the adapters' timeout.
            "stuck" => Answer::later(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(None)
            }),
            // Answers with another tenant's record.
            "liar" => Answer::Now(Ok(self.0.get("acme"))),
            _ => self.0.lookup(id, at),
        }
    }
}

/// One request: method, target, headers, and the principal an outer layer attached.
pub struct Req {
    pub method: &'static str,
    pub uri: &'static str,
    pub headers: Vec<(&'static str, &'static [u8])>,
    pub principal: Option<&'static str>,
}

pub fn get_(uri: &'static str) -> Req {
    Req {
        method: "GET",
        uri,
        headers: Vec::new(),
        principal: None,
    }
}

impl Req {
    pub fn h(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value.as_bytes()));
        self
    }

    pub fn raw(mut self, name: &'static str, value: &'static [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }

    pub fn signed_in(mut self, tenant: &'static str) -> Self {
        self.principal = Some(tenant);
        self
    }
}

/// An answer: the status, the headers a rejection carries, the body, and the audit
/// events the adapter reported.
#[derive(Debug, PartialEq, Eq)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub audit: Vec<String>,
}

/// A sink that keeps every event, written out whole.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    pub fn sink(&self) -> impl Fn(&AuditEvent<'_>) + Send + Sync + 'static {
        let events = Arc::clone(&self.0);
        move |e: &AuditEvent<'_>| {
            events.lock().unwrap().push(format!(
                "{} {} tenant={:?} tier={:?} source={:?} {} {} reason={:?} rule={:?} version={:?}",
                e.stage,
                e.outcome.as_str(),
                e.tenant.map(|t| t.as_str()),
                e.tier,
                e.source.map(|s| s.as_str()),
                e.method,
                e.path,
                e.reason,
                e.rule,
                e.policy_version
            ))
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// The quota fields a response carries.
pub const QUOTA_FIELDS: [&str; 4] = [
    "x-quota-remaining",
    "ratelimit-policy",
    "ratelimit",
    "x-quota-shadow",
];

/// The headers compared between the adapters' answers.
pub const COMPARED: [&str; 8] = [
    "content-type",
    "cache-control",
    "retry-after",
    "www-authenticate",
    QUOTA_FIELDS[0],
    QUOTA_FIELDS[1],
    QUOTA_FIELDS[2],
    QUOTA_FIELDS[3],
];

/// What the table expects: the handler's answer, a rejection's status and code, or
/// the handler's own status.
pub enum Want {
    Served(&'static str),
    Refused(u16, &'static str),
    Status(u16),
}

/// The handler both adapters mount: the tenant's id and the source that named it.
pub fn served(tenant: Option<&tenancy_core::TenantContext>) -> String {
    match tenant {
        Some(t) => format!("{} {}", t.id(), t.source().as_str()),
        None => "no tenant".to_owned(),
    }
}

pub fn principal(tenant: &str) -> Principal {
    Principal::new("alice").with_tenant(TenantId::parse(tenant).unwrap())
}

pub fn check(name: &str, want: &Want, got: &Got, adapter: &str) {
    match want {
        Want::Served(body) => {
            assert_eq!(
                (got.status, got.body.as_str()),
                (200, *body),
                "{name} on {adapter}: {got:?}"
            );
        }
        Want::Status(status) => {
            assert_eq!(got.status, *status, "{name} on {adapter}: {got:?}");
        }
        Want::Refused(status, code) => {
            assert_eq!(got.status, *status, "{name} on {adapter}: {got:?}");
            let needle = format!(r#""code":"{code}""#);
            assert!(got.body.contains(&needle), "{name} on {adapter}: {got:?}");
            assert!(
                got.headers
                    .contains(&("content-type", "application/problem+json".into())),
                "{name} on {adapter}: {got:?}"
            );
        }
    }
}

/// The request as actix's test kit sends it; a principal goes in `x-test-principal`,
/// which the app's outer middleware turns into one.
pub fn actix_request(req: &Req) -> actix_http::Request {
    let mut tr = actix_web::test::TestRequest::default()
        .method(req.method.parse().unwrap())
        .uri(req.uri);
    for (name, value) in &req.headers {
        let value = actix_web::http::header::HeaderValue::from_bytes(value).unwrap();
        tr = tr.append_header((*name, value));
    }
    if let Some(p) = req.principal {
        tr = tr.insert_header(("x-test-principal", p));
    }
    tr.to_request()
}

/// An actix answer, with the audit events the request caused.
pub async fn actix_answer<B>(res: actix_web::dev::ServiceResponse<B>, audit: &Recorder) -> Got
where
    B: actix_web::body::MessageBody,
{
    let status = res.status().as_u16();
    let headers = compared(|n| res.headers().get(n).map(|v| v.as_bytes().to_vec()));
    let body = actix_web::test::read_body(res).await;
    got(status, headers, &body, audit)
}

/// The same request for axum.
pub fn axum_request(req: &Req) -> http::Request<axum::body::Body> {
    let mut b = http::Request::builder().method(req.method).uri(req.uri);
    for (name, value) in &req.headers {
        b = b.header(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    if let Some(p) = req.principal {
        b = b.header("x-test-principal", p);
    }
    b.body(axum::body::Body::empty()).unwrap()
}

/// An axum answer, with the audit events the request caused.
pub async fn axum_answer(res: axum::response::Response, audit: &Recorder) -> Got {
    use http_body_util::BodyExt as _;
    let status = res.status().as_u16();
    let headers = compared(|n| res.headers().get(n).map(|v| v.as_bytes().to_vec()));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    got(status, headers, &body, audit)
}

/// The compared headers an answer carries, by the adapter's lookup.
fn compared(get: impl Fn(&str) -> Option<Vec<u8>>) -> Vec<(&'static str, String)> {
    COMPARED
        .iter()
        .filter_map(|n| get(n).map(|v| (*n, String::from_utf8(v).unwrap())))
        .collect()
}

fn got(status: u16, headers: Vec<(&'static str, String)>, body: &[u8], audit: &Recorder) -> Got {
    Got {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        audit: audit.take(),
    }
}
