//! With no tracing subscriber, `TracingAudit`'s decisions still reach a `log` logger
//! through tracing's `log` fallback, which actix-web builds with: the sink's fast
//! "nobody listens" check asks `log` too. (Its own test binary: it installs the
//! process's one logger, and no subscriber may be set.)

use std::sync::Mutex;

#[allow(unreachable_pub)]
mod common {
    pub mod audit;
}

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("actix_tenancy") || record.target() == "tenancy::audit" {
            let line = record.args().to_string();
            LINES.lock().unwrap().push((record.level(), line));
        }
    }
    fn flush(&self) {}
}

#[actix_web::test]
async fn decisions_reach_a_log_logger_without_a_subscriber() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Debug);

    common::audit::one_pass_and_one_rejection().await;

    let lines = LINES.lock().unwrap().clone();
    let decisions: Vec<_> = lines
        .iter()
        .filter(|(_, l)| l.contains("tenancy decision"))
        .collect();
    assert_eq!(decisions.len(), 2, "{lines:?}");
    assert_eq!(decisions[0].0, log::Level::Debug);
    assert!(decisions[0].1.contains("allowed"), "{}", decisions[0].1);
    assert_eq!(decisions[1].0, log::Level::Info);
    assert!(
        decisions[1].1.contains("tenant_forbidden"),
        "{}",
        decisions[1].1
    );
}
