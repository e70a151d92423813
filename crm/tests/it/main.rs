//! The CRM against real servers: etcd, a private dockerd, the controller in-process and the `crm`
//! binary as a process. One test binary for the crate (each test still runs in its own process under
//! nextest); `common` starts the region.

mod common;

mod docker;
mod fake;
mod lb;
mod vm;
