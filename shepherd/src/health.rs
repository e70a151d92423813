//! Health checks of AppInsts: a TCP connect (`GET /` for ports with the `http` option) to each TCP port
//! straight to the instance (its address on the cluster network) and through the shared root LB; the first that fails says whether the server
//! or the LB is at fault. A failure only counts after `failures` checks in a row fail; one success
//! makes the instance healthy again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use edge_proto::edge::{AppInst, HealthCheck, LProto};

use crate::collect::Sample;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connects(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `GET /` answers with an HTTP status below 500.
async fn answers_http(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET / HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: edge-shepherd\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut head = [0u8; 16];
        let mut n = 0;
        while n < head.len() {
            match s.read(&mut head[n..]).await.ok()? {
                0 => break,
                k => n += k,
            }
        }
        // "HTTP/1.1 200 ..."
        let line = std::str::from_utf8(&head[..n]).ok()?;
        let code: u16 = line
            .strip_prefix("HTTP/")?
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        Some(code < 500)
    };
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, check).await,
        Ok(Some(true))
    )
}

/// One check of `inst`: `Ok`, or which part fails. `None` when there is nothing to check: no TCP port,
/// or no address of the instance (the fake platform).
pub async fn probe(inst: &AppInst, lb: IpAddr, sample: Option<&Sample>) -> Option<HealthCheck> {
    let ports: Vec<_> = inst
        .mapped_ports
        .iter()
        .filter(|p| p.proto() == LProto::Tcp && p.public_port > 0)
        .collect();
    if ports.is_empty() {
        return None;
    }
    // The platform does not have it, or it does not run: the CRM will bring it back.
    let Some(sample) = sample.filter(|s| s.running) else {
        return Some(HealthCheck::FailServerFail);
    };
    let backend = sample.backend?;
    for p in ports {
        let check = async |addr| {
            if p.http {
                answers_http(addr).await
            } else {
                connects(addr).await
            }
        };
        let internal = p.internal_port as u16;
        let direct = sample
            .ports
            .get(&(crm::lb::Proto::Tcp, internal))
            .copied()
            .unwrap_or(internal);
        if !check(SocketAddr::new(backend, direct)).await {
            return Some(HealthCheck::FailServerFail);
        }
        if !check(SocketAddr::new(lb, p.public_port as u16)).await {
            return Some(HealthCheck::FailRootlbOffline);
        }
    }
    Some(HealthCheck::Ok)
}

/// Consecutive failures per AppInst, turned into the health to report.
pub struct Tracker {
    failures: u32,
    /// key → (failed checks in a row, health as last decided)
    state: HashMap<String, (u32, HealthCheck)>,
}

impl Tracker {
    pub fn new(failures: u32) -> Self {
        Self {
            failures: failures.max(1),
            state: HashMap::new(),
        }
    }

    /// Records a check of `key`; returns the instance's health as it stands (`Unknown` until the first
    /// success or the `failures`-th failure in a row).
    pub fn record(&mut self, key: &str, result: HealthCheck) -> HealthCheck {
        let (fails, health) = self
            .state
            .entry(key.to_string())
            .or_insert((0, HealthCheck::Unknown));
        if result == HealthCheck::Ok {
            *fails = 0;
            *health = HealthCheck::Ok;
        } else {
            *fails += 1;
            if *fails >= self.failures {
                *health = result;
            }
        }
        *health
    }

    /// Forgets instances not in `live`.
    pub fn retain(&mut self, live: &impl Fn(&str) -> bool) {
        self.state.retain(|k, _| live(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_counts_after_n_in_a_row_and_one_success_heals() {
        let mut t = Tracker::new(3);
        let fail = HealthCheck::FailServerFail;
        assert_eq!(t.record("a", HealthCheck::Ok), HealthCheck::Ok);
        assert_eq!(t.record("a", fail), HealthCheck::Ok);
        assert_eq!(t.record("a", fail), HealthCheck::Ok);
        assert_eq!(t.record("a", fail), fail);
        assert_eq!(
            t.record("a", HealthCheck::FailRootlbOffline),
            HealthCheck::FailRootlbOffline
        );
        assert_eq!(t.record("a", HealthCheck::Ok), HealthCheck::Ok);
        assert_eq!(t.record("b", fail), HealthCheck::Unknown);
        t.retain(&|k| k == "a");
        assert_eq!(t.record("b", HealthCheck::Ok), HealthCheck::Ok);
    }
}
