//! Admission: the registry asked (now, or waited for once), and the tenant's record
//! judged by its status, its region and the request's method.

use std::sync::Arc;

use actix_web::{dev::ServiceRequest, http::Method};

use super::{contexts::Known, At, Named, ResolveStage, Resolved};
use tenancy_core::{caught, caught_async};

use crate::{
    core::{
        error::TenancyError, observe::Outcome, Access, Answer, Moment, TenantContext, TenantRecord,
    },
    registry::{Lease, Lookup, RegistryError},
};

pub(super) fn registry_panicked() -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: "the tenant registry panicked".into(),
    }
}

/// Methods that do not change state; read-only tenants may use them.
pub(super) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

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

/// The registry could not answer.
pub(super) fn unavailable(err: RegistryError) -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: err.to_string().into(),
    }
}

impl ResolveStage {
    /// Asks the registry at the request's time `now`: its answer now, with the lease
    /// it granted on it, or the wait for it. A panic in the registry is an unavailable
    /// registry, never a crashed worker.
    pub(super) fn ask<'a>(&'a self, id: &'a str, now: std::time::Instant) -> Asked<'a> {
        let mut at = Moment::at(now);
        match caught("registry lookup", || self.registry.lookup(id, &mut at)) {
            Some(Answer::Now(answer)) => Asked::Now(answer.map_err(unavailable), at.lease()),
            Some(Answer::Later(wait)) => Asked::Later(wait),
            None => Asked::Now(Err(registry_panicked()), None),
        }
    }

    /// Waits for the registry's answer at most `registry_timeout`; a panic is an
    /// unavailable registry.
    pub(super) async fn wait(&self, wait: LaterLookup<'_>) -> Result<Lookup, TenancyError> {
        match tokio::time::timeout(self.registry_timeout, caught_async("registry lookup", wait))
            .await
        {
            Ok(Some(answer)) => answer.map_err(unavailable),
            Ok(None) => Err(registry_panicked()),
            Err(_) => Err(TenancyError::TenantUnavailable {
                retry_after: None,
                reason: "tenant registry lookup timed out".into(),
            }),
        }
    }

    /// Whether the registry's lease still holds; a panic is "no".
    #[inline]
    pub(super) fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        caught("registry lease", || self.registry.lease_holds(lease, now)).unwrap_or(false)
    }

    pub(super) fn admit(&self, record: &TenantRecord, method: &Method) -> Result<(), TenancyError> {
        match self.status_rules.access(record.status()) {
            Access::Allow => {}
            Access::ReadOnly if is_safe(method) => {}
            Access::ReadOnly => return Err(TenancyError::TenantReadOnly),
            Access::Unavailable { retry_after } => {
                return Err(TenancyError::TenantUnavailable {
                    retry_after: Some(retry_after),
                    reason: record.status().reason().into(),
                })
            }
            // Forbidden, and any access a later core adds: refused until this stage
            // knows it (fail closed).
            _ => {
                return Err(TenancyError::TenantForbidden {
                    reason: record.status().reason().into(),
                })
            }
        }
        match (&self.region, record.region()) {
            (Some(here), Some(there)) if here != there => Err(TenancyError::TenantMisdirected),
            _ => Ok(()),
        }
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
        let record = match answer {
            Ok(Some(record)) if record.id().as_str() == named.id => record,
            Ok(Some(_)) => {
                let err = TenancyError::TenantUnavailable {
                    retry_after: None,
                    reason: "the registry answered with another tenant's record".into(),
                };
                return self.fail(req, at, err, Some(&named));
            }
            Ok(None) => {
                let err = TenancyError::TenantForbidden {
                    reason: "unknown tenant".into(),
                };
                return self.fail(req, at, err, Some(&named));
            }
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
        if let Err(err) = self.admit(&record, req.method()) {
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
