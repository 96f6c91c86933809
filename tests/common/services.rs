//! The services some tests need: their URL from the environment, or a skip. Under
//! `CI=true` a missing service fails the test instead, so a green CI always means the
//! backend tests ran.

/// The URL in `var` (`REDIS_URL`, `DATABASE_URL`); `None` (the test skips) when it is
/// unset or empty outside CI. Panics under `CI=true`.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but {var} is not set: the tests that need it cannot be skipped in CI"
            );
            eprintln!("{var} is not set: skipping a test that needs it");
            None
        }
    }
}

/// A key prefix no other test or run shares, under `area`.
pub fn unique_prefix(area: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tenancy-test:{area}{test}:{nanos}")
}

/// Starts a `redis-server` of the test's own with `args` and waits until `port`
/// answers; `None` (the test skips) when there is no `redis-server` outside CI.
/// Panics under `CI=true`, or when the server does not come up within 10 s.
pub fn spawn_redis(args: &[&str], port: u16) -> Option<std::process::Child> {
    use std::{process::Stdio, time::Duration};
    let child = std::process::Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but redis-server cannot start: {e}"
            );
            eprintln!("no redis-server ({e}): skipping a test that starts its own");
            return None;
        }
    };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("redis-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}
