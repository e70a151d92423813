//! The DME against a real region (etcd, controller, CRMs): matching, the REST gateway, and bounds on
//! every input. One test binary for the crate.

mod bounds;
mod dme;
