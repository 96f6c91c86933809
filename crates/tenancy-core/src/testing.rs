//! A test kit (feature `testing`): a tenant's context for handler tests, a
//! [`FakeClock`] for TTLs, refills, budgets and token expiry without sleeping, and
//! conformance suites to run against your own implementations of the core's traits
//! (the core's own backends pass them in its tests). Each adapter adds its way of
//! putting a context into a request (`actix_tenancy::testing::attach`,
//! `tower_tenancy::testing::attach`) and re-exports the rest.
//!
//! The [`FakeClock`] drives a quota, a registry cache or the sessions past a period
//! without sleeping:
//!
//! ```
//! use std::time::Duration;
//! use tenancy_core::{
//!     quota::{LocalQuota, QuotaManager, QuotaPlan, QuotaPlans},
//!     testing::{self, FakeClock},
//!     Moment,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let time = FakeClock::new();
//! let plans = QuotaPlans::builder()
//!     .tier("free", QuotaPlan::per_minute(1))
//!     .build()
//!     .unwrap();
//! let quota = LocalQuota::with_clock(plans, time.clock());
//! let acme = testing::tenant("acme", "free");
//! assert!(quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! assert!(!quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! time.advance(Duration::from_secs(60)); // no sleep: the minute has passed
//! assert!(quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! # });
//! ```

use std::{sync::Arc, time::Duration};

use crate::{
    quota::{QuotaDecision, QuotaLimit, QuotaManager},
    registry::TenantRegistry,
    Charge, Moment, SourceKind, TenantContext, TenantId, TenantRecord,
};

pub use crate::FakeClock;

/// The context of an active tenant `id` on `tier`, as if named by a header. Panics on
/// an id the default rule refuses (it is for tests).
pub fn tenant(id: &str, tier: &str) -> TenantContext {
    let id = TenantId::parse(id).unwrap_or_else(|e| panic!("testing::tenant({id:?}): {e}"));
    let record = Arc::new(TenantRecord::new(id.clone(), tier));
    TenantContext::new(id, SourceKind::Header, record, None)
}

/// Runs the registry conformance suite against `registry`, which must know `known`
/// and not `unknown`; panics, naming the rule, on the first violation.
///
/// - `lookup(known)` is `Ok(Some(record))` and the record is `known`'s;
/// - `lookup(unknown)` is `Ok(None)`: "not found" is not an error, and never a record;
/// - an answer given now (without waiting) is the same as one waited for;
/// - 64 concurrent lookups of each answer the same.
///
/// For "unavailable is not not-found", see [`registry_unavailable`].
pub async fn registry_conformance<R: TenantRegistry>(
    registry: &R,
    known: &TenantId,
    unknown: &TenantId,
) {
    let moment = || Moment::now();
    match registry.lookup(known, &mut moment()).await {
        Ok(Some(record)) => assert_eq!(
            record.id(),
            known,
            "lookup(known) returned another tenant's record"
        ),
        other => panic!(
            "lookup(known) must be Ok(Some(record)), was {:?}",
            other.map(|r| r.map(|r| r.id().clone()))
        ),
    }
    match registry.lookup(unknown, &mut moment()).await {
        Ok(None) => {}
        other => panic!(
            "lookup(unknown) must be Ok(None), was {:?}",
            other.map(|r| r.map(|r| r.id().clone()))
        ),
    }
    for id in [known, unknown] {
        if let Some(ready) = registry.lookup(id, &mut moment()).now() {
            let ready = ready.unwrap_or_else(|e| panic!("lookup({id}) answered now: {e}"));
            assert_eq!(
                ready.as_ref().map(|r| r.id()),
                (id == known).then_some(known),
                "lookup({id}) answered now disagrees with the answer waited for"
            );
        }
    }
    let lookups = (0..64).map(|i| {
        let id = if i % 2 == 0 { known } else { unknown };
        async move { (id, registry.lookup(id, &mut moment()).await) }
    });
    for (id, answer) in futures_util::future::join_all(lookups).await {
        match answer {
            Ok(Some(r)) if id == known => {
                assert_eq!(r.id(), known, "a concurrent lookup answered another tenant")
            }
            Ok(None) if id == unknown => {}
            other => panic!(
                "a concurrent lookup of {id} answered {:?}",
                other.map(|r| r.map(|r| r.id().clone()))
            ),
        }
    }
}

/// Checks that `registry`, while its backend is down, answers `Err` for `id`: never
/// `Ok(None)` (every tenant would look unknown) and never a record.
pub async fn registry_unavailable<R: TenantRegistry>(registry: &R, id: &TenantId) {
    let answer = registry.lookup(id, &mut Moment::now()).await;
    assert!(
        answer.is_err(),
        "an unavailable registry must answer Err, was {:?}",
        answer.map(|r| r.map(|r| r.id().clone()))
    );
}

async fn checked<Q: QuotaManager>(quota: &Q, t: &TenantContext, cost: u32) -> QuotaDecision {
    quota
        .check(t, cost, &mut Moment::now())
        .await
        .unwrap_or_else(|e| panic!("check({}, {cost}) failed: {e}", t.id()))
}

/// Runs the quota conformance suite against `quota`; panics, naming the rule, on the
/// first violation.
///
/// `rate` is a tenant whose plan admits a burst of exactly `burst` units and refills
/// slowly enough that no unit comes back while the suite runs (a per-minute plan of
/// at most 30, say); `budget`, when given, is another tenant whose plan has `units`
/// left in its budget period and a rate that does not bind first. Use tenants no other
/// test touches: the suite spends their quota.
///
/// - 4 × `burst` concurrent checks of one unit admit exactly `burst`, and the
///   refused ones say when to retry;
/// - a cost above the burst is refused with no retry (it can never pass);
/// - one tenant's exhaustion leaves another's quota alone;
/// - with a budget: 2 × `units` concurrent checks admit exactly `units`, the next is
///   refused by the budget; a refund of a charge made in an earlier period (40 days
///   before the decision's [`charged_at`](QuotaDecision::charged_at)) makes no room,
///   and a refund of a charge of this period (`settle` from 1 to 0) makes room for
///   exactly one more (budgets take refunds; a rate's spent tokens are not given
///   back);
/// - a charge corrected upwards (`settle` from 0 to 1) spends budget: after a refund,
///   a correction up leaves none.
pub async fn quota_conformance<Q: QuotaManager>(
    quota: &Q,
    rate: (&TenantContext, u32),
    budget: Option<(&TenantContext, u64)>,
) {
    let (tenant, burst) = rate;
    assert!(burst > 0, "quota_conformance needs a burst of at least 1");
    let check = |t, cost| checked(quota, t, cost);

    let racing = (0..burst * 4).map(|_| check(tenant, 1));
    let decisions = futures_util::future::join_all(racing).await;
    let admitted = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(
        admitted,
        burst as usize,
        "{} concurrent checks against a burst of {burst} admitted {admitted}",
        burst * 4
    );
    for d in &decisions {
        assert!(!d.would_deny || !d.allowed, "shadow mode is not under test");
        if !d.allowed {
            assert!(
                d.retry_after.is_some_and(|w| w > Duration::ZERO),
                "a refusal by the rate must say when to retry, said {:?}",
                d.retry_after
            );
        }
    }

    assert!(
        !check(tenant, 1).await.allowed,
        "the burst is spent: refused"
    );

    let too_big = check(tenant, burst + 1).await;
    assert!(
        !too_big.allowed && too_big.retry_after.is_none(),
        "a cost above the burst can never pass: refused with no retry, was allowed={} retry={:?}",
        too_big.allowed,
        too_big.retry_after
    );

    let Some((other, units)) = budget else {
        return;
    };
    assert_ne!(
        other.id(),
        tenant.id(),
        "the budget tenant must be another tenant"
    );
    let units32 = u32::try_from(units).expect("a budget test of at most u32::MAX units");
    let racing = (0..units32 * 2).map(|_| check(other, 1));
    let decisions = futures_util::future::join_all(racing).await;
    let admitted = decisions.iter().filter(|d| d.allowed).count() as u64;
    assert!(
        admitted > 0,
        "another tenant is not refused by the first one's exhaustion"
    );
    assert_eq!(
        admitted,
        units,
        "{} concurrent checks against a budget of {units} admitted {admitted}",
        units * 2
    );
    let refused = check(other, 1).await;
    assert!(
        !refused.allowed && matches!(refused.refused_by, Some(QuotaLimit::Budget(_))),
        "the budget is spent: refused by it, was allowed={} by={:?}",
        refused.allowed,
        refused.refused_by
    );
    // A refund of a charge made in an earlier period (settled after midnight, say)
    // gives the current period nothing: that period never carried the charge.
    let last = decisions
        .iter()
        .find(|d| d.allowed)
        .expect("a charge was admitted");
    let now = last
        .charged_at
        .unwrap_or_else(|| crate::Clock::system().unix_secs());
    let earlier = Charge::new(1).at(now.saturating_sub(40 * 86_400));
    quota
        .settle(other, earlier, 0)
        .await
        .unwrap_or_else(|e| panic!("settle(1 -> 0) of an earlier period failed: {e}"));
    assert!(
        !check(other, 1).await.allowed,
        "a refund of a charge made in an earlier period credits the current one"
    );
    let charge = last.charge(1);
    quota
        .settle(other, charge, 0)
        .await
        .unwrap_or_else(|e| panic!("settle(1 -> 0) failed: {e}"));
    assert!(
        check(other, 1).await.allowed,
        "a refund returns its unit to the budget"
    );
    assert!(!check(other, 1).await.allowed, "and only that one");
    quota
        .settle(other, charge, 0)
        .await
        .unwrap_or_else(|e| panic!("settle(1 -> 0) failed: {e}"));
    quota
        .settle(other, Charge::new(0).at(now), 1)
        .await
        .unwrap_or_else(|e| panic!("settle(0 -> 1) failed: {e}"));
    assert!(
        !check(other, 1).await.allowed,
        "a correction upwards spends the budget the refund gave back"
    );
}

#[cfg(feature = "jwt")]
mod revocation {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::session::{Consumed, Revocation, RevocationStore, TokenFacts};

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The system's time since the epoch, to the nanosecond.
    fn exact() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    /// Waits until `at` (since the epoch) on the system's clock.
    async fn sleep_until(at: Duration) {
        tokio::time::sleep(at.saturating_sub(exact())).await;
    }

    fn facts<'a>(
        jti: &'a str,
        tenant: &'a str,
        subject: &'a str,
        issued_at: u64,
    ) -> TokenFacts<'a> {
        let mut facts = TokenFacts::new(subject);
        facts.jti = Some(jti);
        facts.tenant = Some(tenant);
        facts.issued_at = Some(issued_at);
        facts
    }

    async fn revoked<S: RevocationStore>(store: &S, f: &TokenFacts<'_>) -> bool {
        match store.is_revoked(f).await {
            Ok(revoked) => revoked,
            Err(e) => panic!("is_revoked failed: {e}"),
        }
    }

    async fn consumed<S: RevocationStore>(
        store: &S,
        jti: &str,
        rotation: &str,
        until: u64,
    ) -> Consumed {
        store
            .consume(jti, rotation, until)
            .await
            .unwrap_or_else(|e| panic!("consume failed: {e}"))
    }

    /// Runs the revocation store conformance suite against `store`. Names are made
    /// unique with `prefix` (so a shared store, such as a Redis, can run it beside other
    /// tests); panics, naming the rule, on the first violation. It takes about two
    /// seconds: the last rule is checked at the end of a second, on the system's clock.
    ///
    /// - a revoked `jti` is revoked, another is not, and an answer given now, when it
    ///   answers, agrees;
    /// - a subject or tenant revocation applies to tokens issued at or before its
    ///   cut-off and not to later ones, and not to another subject or tenant;
    /// - `consume` of a refresh `jti` is [`Consumed::First`] exactly once; every later
    ///   call answers [`Consumed::Already`] with the first call's rotation, not its own;
    ///   under 32 concurrent attempts exactly one is first and the 31 others answer its
    ///   rotation;
    /// - an entry counts through the whole second `until` (a token is accepted through
    ///   its second `exp + leeway`): a revocation and a used mark written half-way into
    ///   second `t` with `until = t + 1` still count at the end of second `t + 1` (a
    ///   Redis key set with `EX until - now` has lapsed by then), and a second
    ///   revocation of the same token with an earlier `until` does not shorten the
    ///   first;
    /// - (a store *may* forget an entry once its `until` has passed, which bounds its
    ///   memory; when is its own choice, so the suite does not wait for it.)
    pub async fn revocation_conformance<S: RevocationStore>(store: &S, prefix: &str) {
        let t = now();
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let (acme, globex) = (format!("{prefix}acme"), format!("{prefix}globex"));
        store
            .revoke(Revocation::Token(&a), t + 600)
            .await
            .expect("revoke a token");
        assert!(
            revoked(store, &facts(&a, &acme, "u1", t)).await,
            "a revoked jti must be revoked"
        );
        assert!(
            !revoked(store, &facts(&b, &acme, "u1", t)).await,
            "another jti must not be"
        );
        let asked = facts(&a, &acme, "u1", t);
        if let Some(now) = store.is_revoked(&asked).now() {
            assert!(
                now.expect("is_revoked, answered now"),
                "an answer given now disagrees with one waited for"
            );
        }

        let cut = t - 10;
        store
            .revoke(
                Revocation::Subject {
                    tenant: &acme,
                    subject: "u2",
                    before: cut,
                },
                t + 600,
            )
            .await
            .expect("revoke a subject");
        let (j1, j2, j3) = (
            format!("{prefix}j1"),
            format!("{prefix}j2"),
            format!("{prefix}j3"),
        );
        assert!(
            revoked(store, &facts(&j1, &acme, "u2", cut)).await,
            "issued at the cut-off: revoked"
        );
        assert!(
            !revoked(store, &facts(&j2, &acme, "u2", cut + 1)).await,
            "issued after the cut-off: not revoked"
        );
        assert!(
            !revoked(store, &facts(&j3, &globex, "u2", cut)).await,
            "another tenant's subject: not revoked"
        );
        store
            .revoke(
                Revocation::Tenant {
                    tenant: &globex,
                    before: cut,
                },
                t + 600,
            )
            .await
            .expect("revoke a tenant");
        assert!(
            revoked(store, &facts(&j3, &globex, "u9", cut - 5)).await,
            "a tenant revocation applies to all its subjects"
        );
        assert!(
            !revoked(store, &facts(&j3, &acme, "u9", cut - 5)).await,
            "and to no other tenant"
        );

        let refresh = format!("{prefix}refresh");
        assert_eq!(
            consumed(store, &refresh, "rotation-1", t + 600).await,
            Consumed::First,
            "the first use of a refresh jti must succeed"
        );
        assert_eq!(
            consumed(store, &refresh, "rotation-2", t + 600).await,
            Consumed::Already("rotation-1".into()),
            "a second use must fail, answering the first use's rotation"
        );
        let racing = format!("{prefix}race");
        let attempts = (0..32).map(|i| {
            let (racing, rotation) = (&racing, format!("rotation-{i}"));
            async move { (consumed(store, racing, &rotation, t + 600).await, rotation) }
        });
        let answers = futures_util::future::join_all(attempts).await;
        let winners: Vec<&String> = answers
            .iter()
            .filter(|(c, _)| *c == Consumed::First)
            .map(|(_, rotation)| rotation)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "32 concurrent uses of one refresh jti: exactly one wins"
        );
        for (answer, _) in &answers {
            if let Consumed::Already(rotation) = answer {
                assert_eq!(
                    rotation, winners[0],
                    "a losing use must answer the winner's rotation"
                );
            }
        }

        through_the_last_second(store, prefix).await;
    }

    /// Entries written half-way into second `t` with `until = t + 1` still count at
    /// the end of second `t + 1`. A try whose writes or checks spill over their second
    /// (a slow store, a loaded machine) proves nothing and is made again.
    async fn through_the_last_second<S: RevocationStore>(store: &S, prefix: &str) {
        const SECOND: Duration = Duration::from_secs(1);
        for attempt in 0..5 {
            let name = |what: &str| format!("{prefix}last-{attempt}-{what}");
            let (token, kept, used) = (name("token"), name("kept"), name("used"));
            // Writes from 0.3 s into second `t`, done by 0.8 s: a key set with
            // `EX until - now` (1 s) has lapsed by 1.8 s into second `t + 1`.
            let second = Duration::from_secs(exact().as_secs());
            let start = if exact() - second < Duration::from_millis(300) {
                second + Duration::from_millis(300)
            } else {
                second + SECOND + Duration::from_millis(300)
            };
            sleep_until(start).await;
            let t = start.as_secs();
            let tenant = format!("{prefix}last");
            store
                .revoke(Revocation::Token(&token), t + 1)
                .await
                .expect("revoke a token");
            store
                .revoke(Revocation::Token(&kept), t + 600)
                .await
                .expect("revoke a token");
            store
                .revoke(Revocation::Token(&kept), t.saturating_sub(5))
                .await
                .expect("revoke a token again");
            let first = consumed(store, &used, "rotation-1", t + 1).await;
            assert_eq!(first, Consumed::First, "the first use of a refresh jti");
            if exact() >= Duration::from_secs(t) + Duration::from_millis(800) {
                continue;
            }
            // Checks from 0.8 s into second `t + 1`, done within it.
            let check_at = Duration::from_secs(t + 1) + Duration::from_millis(800);
            sleep_until(check_at).await;
            let token_counts = revoked(store, &facts(&token, &tenant, "u", t)).await;
            let kept_counts = revoked(store, &facts(&kept, &tenant, "u", t)).await;
            let again = consumed(store, &used, "rotation-2", t + 1).await;
            if exact().as_secs() != t + 1 {
                continue;
            }
            assert!(
                token_counts,
                "a revocation must count through the whole second `until`"
            );
            assert!(
                kept_counts,
                "a second revocation with an earlier `until` must not shorten the first"
            );
            assert_eq!(
                again,
                Consumed::Already("rotation-1".into()),
                "a used mark must count through the whole second `until`"
            );
            return;
        }
        panic!("the store took too long five times to check an entry within its last second");
    }
}

#[cfg(feature = "jwt")]
pub use revocation::revocation_conformance;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::InMemoryRegistry;

    #[tokio::test]
    async fn the_in_memory_registry_conforms() {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        registry_conformance(
            &registry,
            &TenantId::parse("acme").unwrap(),
            &TenantId::parse("nobody").unwrap(),
        )
        .await;
    }

    #[cfg(feature = "jwt")]
    #[tokio::test]
    async fn the_in_memory_revocations_conform() {
        revocation_conformance(&crate::session::InMemoryRevocations::new(), "t-").await;
    }

    use crate::Answer;

    /// A registry that answers another tenant's record: the suite must catch it.
    struct Liar;

    impl TenantRegistry for Liar {
        fn lookup<'a>(
            &'a self,
            _: &'a str,
            _: &mut Moment,
        ) -> Answer<'a, Result<crate::registry::Lookup, crate::registry::RegistryError>> {
            Answer::Now(Ok(Some(Arc::new(TenantRecord::new(
                TenantId::parse("evil").unwrap(),
                "pro",
            )))))
        }
    }

    #[tokio::test]
    #[should_panic(expected = "another tenant's record")]
    async fn a_registry_answering_another_tenant_fails_the_suite() {
        registry_conformance(
            &Liar,
            &TenantId::parse("acme").unwrap(),
            &TenantId::parse("nobody").unwrap(),
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "must answer Err")]
    async fn a_registry_that_hides_an_outage_fails_the_suite() {
        registry_unavailable(&InMemoryRegistry::new(), &TenantId::parse("acme").unwrap()).await;
    }
}
