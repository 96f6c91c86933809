//! The conformance table of the workspace's adapters lives in `tests/`; this crate
//! ships nothing.
