//! The regional controller against a real etcd. One test binary for the crate; `common` starts a
//! region.

mod common;

mod api;
mod binary;
mod lifecycle;
mod notify;
