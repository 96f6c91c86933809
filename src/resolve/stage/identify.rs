//! Identification: the sources read, in order, into the one tenant they name (or
//! the first conflict between them).

use actix_web::dev::ServiceRequest;

use super::ResolveStage;
use tenancy_core::{
    caught_async,
    resolve::{self, Named, Naming},
};

use crate::core::{error::TenancyError, Principal};

impl ResolveStage {
    /// Runs the synchronous sources, in order.
    pub(super) fn identify_sync<'a>(
        &self,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
        naming: &mut Naming<'a>,
    ) -> Result<(), TenancyError> {
        for (rank, kind, imp) in &self.sync_sources {
            if let Some(id) = imp.extract(*kind, req, principal, &self.settings.rule)? {
                naming.add(Named {
                    id,
                    kind: *kind,
                    rank: *rank,
                });
            }
        }
        Ok(())
    }

    /// Runs every source; at most one tenant comes out. Malformed input anywhere is a
    /// `400`, even when two other sources already disagree: a conflict is only
    /// reported once every source has been read and validated.
    pub(super) async fn identify<'a>(
        &self,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
    ) -> Result<Option<Named<'a>>, TenancyError> {
        let mut naming = Naming::new();
        self.identify_sync(req, principal, &mut naming)?;
        for (rank, kind, f) in &self.async_sources {
            // The application's code: bounded in time like the registry (a source
            // that hangs is an unavailable tenant lookup), and a panic is a `500`.
            let call = caught_async("Source::custom_async", f(req));
            let raw = match tokio::time::timeout(self.settings.registry_timeout, call).await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    return Err(TenancyError::Panicked("a custom tenant source panicked"));
                }
                Err(_) => {
                    return Err(TenancyError::TenantUnavailable {
                        retry_after: None,
                        reason: "a custom tenant source did not answer in time".into(),
                    })
                }
            };
            if let Some(id) = resolve::custom_tenant(*kind, &self.settings.rule, raw)? {
                naming.add(Named {
                    id,
                    kind: *kind,
                    rank: *rank,
                });
            }
        }
        naming.finish()
    }
}
