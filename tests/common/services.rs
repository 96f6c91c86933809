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
