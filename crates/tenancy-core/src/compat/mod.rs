//! A web framework's traits for the core's own types: Rust lets only this crate write
//! them. One file a framework, each behind a feature only that framework's adapter
//! turns on; each impl only converts.

#[cfg(feature = "actix-web-4")]
mod actix;
#[cfg(feature = "axum-core-0_5")]
mod axum;
