//! Identification: the sources read, in order, into the one tenant they name (or
//! the first conflict between them).

use std::borrow::Cow;

use actix_web::dev::ServiceRequest;

use super::{super::source, ResolveStage};
use tenancy_core::caught_async;

use crate::core::{error::TenancyError, Principal, SourceKind};

/// The tenant named so far: its id (validated, borrowed from the request where it
/// could be), the source, and the source's rank.
pub(super) struct Named<'a> {
    pub(super) id: Cow<'a, str>,
    pub(super) kind: SourceKind,
    pub(super) rank: usize,
}

impl<'a> Named<'a> {
    /// Folds one more source's answer in: agree, or remember the first conflict; and
    /// keep the best-ranked source (verified first, then configuration order).
    pub(super) fn merge(
        slot: &mut Option<Named<'a>>,
        conflict: &mut Option<TenancyError>,
        next: Named<'a>,
    ) {
        let Some(cur) = slot else {
            *slot = Some(next);
            return;
        };
        let next_wins = (next.kind.is_verified() && !cur.kind.is_verified())
            || (next.kind.is_verified() == cur.kind.is_verified() && next.rank < cur.rank);
        if cur.id != next.id {
            if conflict.is_none() {
                let (first, second) = if next_wins {
                    (next.kind, cur.kind)
                } else {
                    (cur.kind, next.kind)
                };
                *conflict = Some(TenancyError::TenantConflict { first, second });
            }
        } else if next_wins {
            *slot = Some(next);
        }
    }
}

impl ResolveStage {
    /// Runs the synchronous sources, in order.
    pub(super) fn identify_sync<'a>(
        &self,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
        named: &mut Option<Named<'a>>,
        conflict: &mut Option<TenancyError>,
    ) -> Result<(), TenancyError> {
        for (rank, kind, imp) in &self.sync_sources {
            if let Some(id) = imp.extract(*kind, req, principal, &self.rule)? {
                Named::merge(
                    named,
                    conflict,
                    Named {
                        id,
                        kind: *kind,
                        rank: *rank,
                    },
                );
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
        let mut named = None;
        let mut conflict = None;
        self.identify_sync(req, principal, &mut named, &mut conflict)?;
        for (rank, kind, f) in &self.async_sources {
            // The application's code: bounded in time like the registry (a source
            // that hangs is an unavailable tenant lookup), and a panic is a `500`.
            let call = caught_async("Source::custom_async", f(req));
            let raw = match tokio::time::timeout(self.registry_timeout, call).await {
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
            let raw = raw.map_err(|e| TenancyError::TenantInvalid {
                source: *kind,
                reason: e.to_string().into(),
            })?;
            if let Some(raw) = raw {
                let id = source::check(*kind, &self.rule, Cow::Owned(raw))?;
                Named::merge(
                    &mut named,
                    &mut conflict,
                    Named {
                        id,
                        kind: *kind,
                        rank: *rank,
                    },
                );
            }
        }
        match conflict {
            Some(err) => Err(err),
            None => Ok(named),
        }
    }
}
