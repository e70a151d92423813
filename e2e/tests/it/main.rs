//! End-to-end tests: every component as its users run it, against real servers. One test binary for
//! the crate; each test still runs in its own process under nextest.

mod console;
mod faults;
mod limits;
mod mtls;
mod platform;
mod shepherd;
