//! Verified identities. Today: the [`Principal`] an authentication middleware puts in
//! the request extensions, which the resolver's claim source reads.

mod principal;

pub use principal::Principal;
