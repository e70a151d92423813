//! The master controller against real PostgreSQL, OpenBao and etcd with two regions in-process. One
//! test binary for the crate; `common` starts the platform.

mod common;

mod console;
mod fuzz;
mod mc;
mod rbac_matrix;
mod security;
