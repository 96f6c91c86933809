//! Admission: the registry asked (now, or waited for once), and the tenant's record
//! judged by its status, its region and the request's method.

use std::sync::Arc;

use actix_web::dev::ServiceRequest;

use super::{contexts::Known, At, Named, ResolveStage, Resolved};
use tenancy_core::{caught, caught_async, resolve};

use crate::{
    core::{error::TenancyError, observe::Outcome, Answer, Moment, TenantContext, TenantRecord},
    registry::{Lease, Lookup, RegistryError},
};

/// The registry's lookup, once it is done.
pub(super) type LaterLookup<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Lookup, RegistryError>> + Send + 'a>>;

/// What the registry answered when asked.
pub(super) enum Asked<'a> {
    /// The answer, with the lease the registry granted on it.
    Now(Result<Lookup, TenancyError>, Option<Lease>),
    /// The wait for the answer.
    Later(LaterLookup<'a>),
}

impl ResolveStage {
    /// Asks the registry at the request's time `now`: its answer now, with the lease
    /// it granted on it, or the wait for it. A panic in the registry is an unavailable
    /// registry, never a crashed worker.
    pub(super) fn ask<'a>(&'a self, id: &'a str, now: std::time::Instant) -> Asked<'a> {
        let mut at = Moment::at(now);
        match caught("registry lookup", || self.registry.lookup(id, &mut at)) {
            Some(Answer::Now(answer)) => {
                Asked::Now(answer.map_err(resolve::unavailable), at.lease())
            }
            Some(Answer::Later(wait)) => Asked::Later(wait),
            None => Asked::Now(Err(resolve::registry_panicked()), None),
        }
    }

    /// Waits for the registry's answer at most `registry_timeout`; a panic is an
    /// unavailable registry.
    pub(super) async fn wait(&self, wait: LaterLookup<'_>) -> Result<Lookup, TenancyError> {
        match tokio::time::timeout(
            self.settings.registry_timeout,
            caught_async("registry lookup", wait),
        )
        .await
        {
            Ok(Some(answer)) => answer.map_err(resolve::unavailable),
            Ok(None) => Err(resolve::registry_panicked()),
            Err(_) => Err(resolve::registry_timed_out()),
        }
    }

    /// Whether the registry's lease still holds; a panic is "no".
    #[inline]
    pub(super) fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        caught("registry lease", || self.registry.lease_holds(lease, now)).unwrap_or(false)
    }

    /// Decides on the registry's answer.
    pub(super) fn conclude(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        named: Named<'_>,
        answer: Result<Lookup, TenancyError>,
        lease: Option<Lease>,
    ) -> Resolved {
        let record = match resolve::recognise(&named.id, answer) {
            Ok(record) => record,
            Err(err) => return self.fail(req, at, err, Some(&named)),
        };
        self.admit_known(req, at, named, record, lease.map(Known::Lease))
    }

    /// Decides on the record of the named tenant: its status and region, then its
    /// context. `known` is what this worker's context cache had for the tenant (a
    /// context under a lease that holds), or the registry's fresh lease to keep.
    #[inline]
    pub(super) fn admit_known(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        named: Named<'_>,
        record: Arc<TenantRecord>,
        known: Option<Known>,
    ) -> Resolved {
        let safe = resolve::is_safe_method(req.method().as_str());
        if let Err(err) = self.settings.admission.admit(&record, safe) {
            // A known tenant refused by its status or region: the event names its tier
            // (the client's answer is the same as for an unknown one).
            let reason = err.reason();
            self.report(
                req,
                at,
                Outcome::Rejected(err.code()),
                Some(record.id()),
                Some(record.tier()),
                Some(named.kind),
                &reason,
            );
            return Err(err);
        }
        if !at.settings.silent_pass() {
            self.report(
                req,
                at,
                Outcome::Allowed,
                Some(record.id()),
                Some(record.tier()),
                Some(named.kind),
                "resolved",
            );
        }
        let kind = named.kind;
        // The record's own id: an `Arc` clone, no allocation for the id.
        let id = || record.id().clone();
        let principal = at.principal.cloned();
        let shared = match (known, &principal) {
            // Held under a lease that holds: the context itself when the source is
            // the same; a request with a principal leaves the entry as it is.
            (Some(Known::Held(ctx, _)), None) if ctx.source() == kind => return Ok(Some(ctx)),
            (Some(Known::Held(..)), Some(_)) => None,
            (Some(Known::Held(_, lease)), None) => {
                Some(at.contexts.get_leased(id(), kind, &record, Some(lease)))
            }
            // The registry's fresh lease is kept, also on behalf of requests with a
            // principal (the entry then holds a context without one, for the lease).
            (Some(Known::Lease(lease)), _) => {
                Some(at.contexts.get_leased(id(), kind, &record, Some(lease)))
            }
            (None, None) => Some(at.contexts.get_leased(id(), kind, &record, None)),
            (None, Some(_)) => None,
        };
        match (principal, shared) {
            (None, Some(ctx)) => Ok(Some(ctx)),
            (principal, _) => Ok(Some(Arc::new(TenantContext::new(
                id(),
                kind,
                record,
                principal,
            )))),
        }
    }
}
