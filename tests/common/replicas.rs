//! Several replicas of one service as separate OS processes, sharing one Redis (and,
//! when asked, one PostgreSQL registry), for the tests that need real replicas.
//!
//! No second binary: the test binary starts copies of itself (`current_exe()`) that
//! run only the test named [`ENTRY`], with the replica's [`ReplicaConfig`] as JSON in
//! the environment variable [`CONFIG_VAR`]. A test file that uses this harness must
//! hold that entry point:
//!
//! ```ignore
//! /// The replicas' entry point, not a test of behaviour: it serves only when started
//! /// by `common::replicas::Replicas::start`, and otherwise returns at once.
//! #[test]
//! #[ignore = "the replicas' entry point: serves only when the harness starts it"]
//! fn replica_server() {
//!     common::replicas::serve_if_asked();
//! }
//! ```
//!
//! Each replica builds a full `Tenancy` stack in an `actix_web::HttpServer` on
//! `127.0.0.1:0`: JWT sessions with `RedisRevocations`, `RedisQuota` (the plan and the
//! failure mode from the config, for tier [`TIER`]) and a registry (PostgreSQL behind
//! its NOTIFY-driven cache, or in memory). It prints [`READY`] and the address it bound
//! on a line of its stdout once it serves (after the invalidation listener listens),
//! and exits when its stdin closes, so a replica never outlives the test that started
//! it, however that test ends. Routes:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health` | `200 ok`, no tenant |
//! | `POST /login?tenant=T&user=U` | `200` and an access token for `U` of `T` (no registry check) |
//! | `POST /logout` (bearer) | `204`: the token is revoked |
//! | `GET /me` | `200` and the tenant's id (a bearer token's tenant, or `X-Tenant-ID`) |
//!
//! The parent talks to them with [`Conn`], a small keep-alive HTTP/1.1 client.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The name of the test function that runs a replica (see the module docs).
pub const ENTRY: &str = "replica_server";
/// The environment variable that carries a replica's [`ReplicaConfig`] (JSON).
pub const CONFIG_VAR: &str = "TENANCY_REPLICA_CONFIG";
/// What a replica prints before the address it serves on.
pub const READY: &str = "tenancy-replica listening on ";
/// The tier of every tenant the replicas know; the plan applies to it.
pub const TIER: &str = "pro";

/// The session settings every replica shares, so a token from one verifies on all.
const ISSUER: &str = "https://replicas.test";
const AUDIENCE: &str = "replicas-api";
const SECRET: &[u8; 32] = b"replicas-test-secret-32-bytes-ok";

/// How long [`Replicas::start`] waits for a replica to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request may take before [`Conn`] gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What each replica runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaConfig {
    /// The Redis of the quota and the revocations.
    pub redis_url: String,
    /// The key prefix in Redis (unique per test run): the quota's keys are under
    /// `{prefix}:quota`, the revocations' under `{prefix}:rev:`.
    pub prefix: String,
    /// The rate of tier [`TIER`].
    pub rate: Rate,
    /// What the quota does when Redis fails.
    pub failure: Failure,
    /// The bound on every Redis call (quota and revocations), in milliseconds.
    pub redis_timeout_ms: u64,
    /// Where the tenants are.
    pub registry: Registry,
    /// HTTP workers per replica.
    pub workers: usize,
}

impl ReplicaConfig {
    /// A replica on `redis_url` under `prefix`, with `registry`: `rate`, fail closed,
    /// a 2 s Redis timeout (a loaded test machine, not production), one worker.
    pub fn new(redis_url: &str, prefix: &str, registry: Registry, rate: Rate) -> Self {
        Self {
            redis_url: redis_url.to_owned(),
            prefix: prefix.to_owned(),
            rate,
            failure: Failure::FailClosed,
            redis_timeout_ms: 2_000,
            registry,
            workers: 1,
        }
    }
}

/// `amount` units per `per_ms` milliseconds, with a burst of `burst`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rate {
    pub amount: u32,
    pub per_ms: u64,
    pub burst: u32,
}

/// The quota's `FailureMode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Failure {
    FailClosed,
    FallbackLocal { replicas: u32 },
}

/// Where a replica's tenants are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Registry {
    /// The `tenants` table in `schema` (first on the `search_path`), behind a
    /// `CachedRegistry` whose entries live `ttl_ms` and an invalidation listener on
    /// `channel` (feature `postgres`).
    Postgres {
        url: String,
        schema: String,
        channel: String,
        ttl_ms: u64,
    },
    /// These tenants, active, on tier [`TIER`], in memory.
    Memory { tenants: Vec<String> },
}

// -------------------------------------------------------------------------------
// The parent's side
// -------------------------------------------------------------------------------

/// One replica process.
#[derive(Debug)]
struct Replica {
    child: Child,
    /// Held open: the replica exits when it closes.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

/// Running replicas; dropping this (also while a test panics) kills them all.
#[derive(Debug)]
pub struct Replicas {
    replicas: Vec<Replica>,
}

impl Replicas {
    /// Starts `n` replicas with `config` and waits (at most 60 s) until each listens.
    /// Panics if one exits or stays silent; those already started are killed.
    pub fn start(config: &ReplicaConfig, n: usize) -> Replicas {
        let json = serde_json::to_string(config).expect("the config serialises");
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut started = Replicas {
            replicas: Vec::with_capacity(n),
        };
        // All at once, then wait for each: start-up overlaps.
        let mut pending = Vec::with_capacity(n);
        for i in 0..n {
            let mut child = Command::new(&exe)
                .args(["--ignored", "--exact", ENTRY, "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CONFIG_VAR, &json)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start replica {i}: {e}"));
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped stdout");
            pending.push((child, stdin, address_of(i, stdout)));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut waits = Vec::with_capacity(n);
        for (child, stdin, rx) in pending {
            // Kept before waiting, so a failure below kills every replica.
            started.replicas.push(Replica {
                child,
                stdin,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            });
            waits.push(rx);
        }
        for (i, rx) in waits.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(addr)) => started.replicas[i].addr = addr,
                Ok(Err(why)) => panic!("replica {i} did not start: {why}"),
                Err(_) => {
                    panic!("replica {i} did not say where it listens within {START_TIMEOUT:?}")
                }
            }
        }
        started
    }

    /// Where each replica listens, in start order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    /// How many replicas run.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Kills replica `i` now (the others keep running); its address stops answering.
    pub fn kill(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        r.stdin = None;
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
    }
}

/// Reads a replica's stdout on a thread of its own: the address from its [`READY`]
/// line, then everything else, unread (so the replica never blocks on a full pipe).
fn address_of(
    i: usize,
    stdout: std::process::ChildStdout,
) -> mpsc::Receiver<Result<SocketAddr, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            // Not necessarily at the start: libtest may have written `test NAME ... `.
            if let Some((_, addr)) = line.split_once(READY) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(
                        addr.trim()
                            .parse()
                            .map_err(|e| format!("bad address {addr:?}: {e}")),
                    );
                }
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(format!("replica {i} exited before listening")));
        }
    });
    rx
}

// -------------------------------------------------------------------------------
// A small HTTP/1.1 client
// -------------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The problem body's `code`, if the body is one.
    pub fn code(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()?
            .get("code")?
            .as_str()
            .map(str::to_owned)
    }
}

/// One keep-alive connection to a replica, reopened when the server has closed it.
/// Every request is bounded (10 s).
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    /// `GET path` with `headers`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    /// `POST path` with `headers` and no body.
    pub fn post(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("POST", path, headers)
    }

    /// Sends a request without a body. A connection that was reused and failed before
    /// any answer (the server closed it while idle) is reopened once; any other
    /// failure panics.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers) {
            Ok(res) => res,
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, headers)
                    .unwrap_or_else(|e| panic!("{method} {path} to {}: {e}", self.addr))
            }
            Err(e) => panic!("{method} {path} to {}: {e}", self.addr),
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT)?;
            stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let result = (|| {
            let reader = self.stream.as_mut().expect("opened above");
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("Content-Length: 0\r\n\r\n");
            reader.get_mut().write_all(head.as_bytes())?;
            read_response(reader)
        })();
        match result {
            Ok((res, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(res)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads one response; also whether the connection stays open.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before answering",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("closed in the headers"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v): &(String, String)| v.to_ascii_lowercase())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| bad(format!("bad chunk size: {e}")))?;
            let mut chunk = vec![0; size + 2]; // and its CRLF
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        body
    } else {
        let length: usize = match find("content-length") {
            Some(v) => v.parse().map_err(|e| bad(format!("bad length: {e}")))?,
            None => 0,
        };
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    let keep = find("connection").is_none_or(|v| !v.contains("close"));
    let res = Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    Ok((res, keep))
}

// -------------------------------------------------------------------------------
// A PostgreSQL schema of a test's own (feature `postgres`)
// -------------------------------------------------------------------------------

/// A schema created for one test, with the registry's table migrated in it, dropped
/// when this is dropped (also when the test fails). Its name is also the replicas'
/// NOTIFY channel, so parallel tests never hear each other.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct TestSchema {
    pub url: String,
    pub name: String,
    /// A registry on the schema (the back office's: admin operations notify).
    pub registry: actix_tenancy::registry::postgres::PostgresRegistry,
}

#[cfg(feature = "postgres")]
impl TestSchema {
    /// Creates the schema `tenancy_{test}_{pid}_{nanos}` in the database at `url` and
    /// migrates the registry into it. Inside a Tokio runtime.
    pub async fn create(url: &str, test: &str) -> TestSchema {
        use sqlx::postgres::PgPoolOptions;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tenancy_{test}_{}_{nanos}", std::process::id());
        assert!(name.len() <= 63, "schema name too long: {name}");
        let base: sqlx::postgres::PgConnectOptions = url.parse().expect("DATABASE_URL parses");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(&format!("create schema {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(base.options([("search_path", name.as_str())]))
            .await
            .unwrap();
        let registry = actix_tenancy::registry::postgres::PostgresRegistry::builder(pool)
            .channel(name.as_str())
            .build()
            .unwrap();
        let schema = TestSchema {
            url: url.to_owned(),
            name,
            registry,
        };
        schema.registry.migrate().await.expect("migrate");
        schema
    }

    /// The replicas' registry: this schema, its channel, entries kept `ttl`.
    pub fn registry_config(&self, ttl: Duration) -> Registry {
        Registry::Postgres {
            url: self.url.clone(),
            schema: self.name.clone(),
            channel: self.name.clone(),
            ttl_ms: ttl.as_millis() as u64,
        }
    }
}

/// Drops the schema on a thread of its own (this may run while a test unwinds,
/// inside or outside a runtime).
#[cfg(feature = "postgres")]
impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("drop schema if exists {} cascade", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}", self.name);
        }
    }
}

// -------------------------------------------------------------------------------
// The replica's side
// -------------------------------------------------------------------------------

/// The replica entry point: serves with the [`ReplicaConfig`] in [`CONFIG_VAR`] until
/// stdin closes (then exits the process); returns at once when the variable is unset.
pub fn serve_if_asked() {
    let Ok(json) = std::env::var(CONFIG_VAR) else {
        return;
    };
    let config: ReplicaConfig = serde_json::from_str(&json).expect("a replica config");
    // The parent holds our stdin: when it closes (the parent dropped its handle, or
    // died), this replica is not wanted any more.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    if let Err(e) = actix_web::rt::System::new().block_on(server::run(config)) {
        panic!("replica failed: {e}");
    }
}

mod server {
    use std::{error::Error, sync::Arc, time::Duration};

    use actix_tenancy::{
        prelude::*,
        quota::{FailureMode, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota},
        registry::TenantRegistry,
        session::{
            Grant, Key, KeySet, RedisRevocations, SessionConfig, SessionManager, TenantAuth,
        },
    };
    use actix_web::{web, App, HttpResponse, HttpServer};
    use jsonwebtoken::Algorithm;
    use serde::Deserialize;

    use super::{Failure, Registry, ReplicaConfig, AUDIENCE, ISSUER, READY, SECRET, TIER};

    type Guard = Option<Box<dyn std::any::Any>>;

    /// The resolver, and what must live as long as it (the invalidation listener).
    async fn resolver(registry: &Registry) -> Result<(TenantResolver, Guard), Box<dyn Error>> {
        fn build(registry: impl TenantRegistry) -> Result<TenantResolver, Box<dyn Error>> {
            Ok(TenantResolver::builder(registry)
                .source(Source::claim())
                .source(Source::header())
                .exempt("/health")
                .exempt("/login")
                .build()?)
        }
        match registry {
            Registry::Memory { tenants } => {
                let mut memory = InMemoryRegistry::new();
                for t in tenants {
                    memory = memory.with(TenantRecord::new(TenantId::parse(t)?, TIER));
                }
                Ok((build(memory)?, None))
            }
            #[cfg(feature = "postgres")]
            Registry::Postgres {
                url,
                schema,
                channel,
                ttl_ms,
            } => {
                use actix_tenancy::registry::postgres::PostgresRegistry;
                let options: sqlx::postgres::PgConnectOptions = url.parse()?;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(options.options([("search_path", schema.as_str())]))
                    .await?;
                let (cache, listener) = PostgresRegistry::builder(pool)
                    .channel(channel.as_str())
                    .build()?
                    .cached(CacheConfig::default().ttl(Duration::from_millis(*ttl_ms)))?;
                // Serving before the listener listens would miss changes.
                tokio::time::timeout(Duration::from_secs(10), listener.ready())
                    .await
                    .map_err(|_| "the invalidation listener did not start within 10 s")?;
                Ok((build(Arc::clone(&cache))?, Some(Box::new(listener))))
            }
            #[cfg(not(feature = "postgres"))]
            Registry::Postgres { .. } => Err("built without the `postgres` feature".into()),
        }
    }

    #[derive(Deserialize)]
    struct Login {
        tenant: String,
        user: String,
    }

    async fn login(
        sessions: web::Data<SessionManager>,
        q: web::Query<Login>,
    ) -> Result<HttpResponse, TenancyError> {
        let tenant = TenantId::parse(&q.tenant).map_err(|_| TenancyError::InvalidRequest {
            reason: "bad tenant".into(),
        })?;
        let pair = sessions
            .issue(&tenant, &q.user, Grant::new())
            .map_err(|e| TenancyError::AuthUnavailable {
                reason: e.to_string().into(),
            })?;
        Ok(HttpResponse::Ok().body(pair.access_token))
    }

    async fn logout(
        sessions: web::Data<SessionManager>,
        user: Principal,
    ) -> Result<HttpResponse, TenancyError> {
        sessions
            .logout(&user)
            .await
            .map_err(|e| TenancyError::AuthUnavailable {
                reason: e.to_string().into(),
            })?;
        Ok(HttpResponse::NoContent().finish())
    }

    pub(super) async fn run(config: ReplicaConfig) -> Result<(), Box<dyn Error>> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let keys = KeySet::signing(Key::hmac("replicas", Algorithm::HS256, SECRET)?)?;
        let revocations = RedisRevocations::with_options(
            &config.redis_url,
            &format!("{}:rev:", config.prefix),
            timeout,
        )?;
        let sessions =
            SessionManager::new(SessionConfig::new(ISSUER, AUDIENCE), keys).with_store(revocations);
        let rate = config.rate;
        let plan =
            QuotaPlan::rate(rate.amount, Duration::from_millis(rate.per_ms)).burst(rate.burst);
        let mode = match config.failure {
            Failure::FailClosed => FailureMode::FailClosed,
            Failure::FallbackLocal { replicas } => FailureMode::FallbackLocal {
                replicas: std::num::NonZeroU32::new(replicas).ok_or("replicas must be > 0")?,
            },
        };
        let quota = RedisQuota::builder(
            config.redis_url.as_str(),
            QuotaPlans::builder().tier(TIER, plan).build()?,
        )
        .prefix(format!("{}:quota", config.prefix))
        .timeout(timeout)
        .failure_mode(mode)
        .build()?;
        let (resolver, _listener) = resolver(&config.registry).await?;
        let tenancy = Tenancy::builder()
            .auth(
                TenantAuth::builder(sessions.clone())
                    .allow_anonymous(true)
                    .build()?,
            )
            .resolver(resolver)
            .quota(TenantQuota::new(quota))
            .build()?;
        let sessions = web::Data::new(sessions);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(sessions.clone())
                .wrap(tenancy.clone())
                .route("/health", web::get().to(|| async { "ok" }))
                .route("/login", web::post().to(login))
                .route("/logout", web::post().to(logout))
                .route(
                    "/me",
                    web::get().to(|t: Tenant| async move { t.id().to_string() }),
                )
        })
        .workers(config.workers)
        .bind(("127.0.0.1", 0))?;
        let addr = server.addrs()[0];
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{READY}{addr}")?;
            out.flush()?;
        }
        server.run().await?;
        Ok(())
    }
}
