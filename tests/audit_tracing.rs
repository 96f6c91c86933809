//! The default sink, `TracingAudit`, writes each decision as a tracing event: `DEBUG`
//! for passes, `INFO` for rejections, and nothing is lost to its fast "nobody
//! listens" check. (Its own test binary: it installs a subscriber.)

#[allow(unreachable_pub)]
mod common {
    pub mod audit;
    pub mod buffer;
}

use common::buffer::Buffer;

fn captured(level: tracing::Level) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        actix_web::rt::System::new().block_on(common::audit::one_pass_and_one_rejection());
    });
    buffer.text()
}

#[test]
fn decisions_reach_a_subscriber_at_their_level() {
    let debug = captured(tracing::Level::DEBUG);
    let decisions: Vec<&str> = debug
        .lines()
        .filter(|l| l.contains("tenancy decision"))
        .collect();
    assert_eq!(decisions.len(), 2, "{debug}");
    assert!(decisions[0].contains("DEBUG") && decisions[0].contains("outcome=\"allowed\""));
    assert!(
        decisions[0].contains("tenant.id=\"acme\""),
        "{}",
        decisions[0]
    );
    assert!(decisions[1].contains("INFO") && decisions[1].contains("tenant_forbidden"));

    // At INFO, the pass is filtered out and the rejection still arrives.
    let info = captured(tracing::Level::INFO);
    let decisions: Vec<&str> = info
        .lines()
        .filter(|l| l.contains("tenancy decision"))
        .collect();
    assert_eq!(decisions.len(), 1, "{info}");
    assert!(decisions[0].contains("tenant_forbidden"));
}
