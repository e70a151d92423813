//! Field validation at the API edge. Every message names the field and says what is allowed.

use edge_proto::edge::{AppPort, LProto, Loc};

use crate::error::{CtrlError, Result, invalid};

pub const MAX_NAME_LEN: usize = 64;
/// Most ports one App may expose (ranges included).
pub const MAX_PORTS: i32 = 100;

/// Names of organizations, objects and versions: they become parts of etcd keys and DNS-like names.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{field} \"{value}\" is too long: at most {MAX_NAME_LEN} characters"
        )));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(format!(
            "invalid {field} \"{value}\": only letters, digits, '-', '_' and '.' are allowed"
        )));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(format!(
            "invalid {field} \"{value}\": must start with a letter or digit"
        )));
    }
    Ok(())
}

pub fn location(field: &str, loc: Option<&Loc>) -> Result<()> {
    let loc = loc.ok_or_else(|| invalid(format!("{field} is required")))?;
    if !(-90.0..=90.0).contains(&loc.latitude) {
        return Err(invalid(format!(
            "invalid {field}.latitude {}: must be -90 to 90",
            loc.latitude
        )));
    }
    if !(-180.0..=180.0).contains(&loc.longitude) {
        return Err(invalid(format!(
            "invalid {field}.longitude {}: must be -180 to 180",
            loc.longitude
        )));
    }
    if loc.latitude == 0.0 && loc.longitude == 0.0 {
        return Err(invalid(format!(
            "{field} is required: latitude and longitude are both 0"
        )));
    }
    Ok(())
}

/// Parses access ports such as `tcp:80,udp:10000-10010,tcp:443:tls`.
///
/// Each entry is `proto:port[-end][:tls]`; proto is `tcp` or `udp`; ports 1-65535; ranges ascending;
/// no port may appear twice for one protocol; `tls` only on tcp.
pub fn access_ports(field: &str, spec: &str) -> Result<Vec<AppPort>> {
    let mut ports: Vec<AppPort> = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        let bad = |why: &str| invalid(format!("invalid {field} \"{entry}\": {why}"));
        if entry.is_empty() {
            return Err(invalid(format!(
                "invalid {field} \"{spec}\": empty entry; use e.g. \"tcp:80,udp:10000-10010\""
            )));
        }
        let mut parts = entry.split(':');
        let proto = match parts
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "tcp" => LProto::Tcp,
            "udp" => LProto::Udp,
            _ => return Err(bad("protocol must be tcp or udp")),
        };
        let range = parts
            .next()
            .ok_or_else(|| bad("missing port: use proto:port, e.g. tcp:80"))?;
        let num = |s: &str| -> Result<i32> {
            let n: i64 = s
                .trim()
                .parse()
                .map_err(|_| bad(&format!("\"{s}\" is not a port number")))?;
            if !(1..=65535).contains(&n) {
                return Err(bad("port must be 1-65535"));
            }
            Ok(n as i32)
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(range)?, 0),
        };
        if end != 0 && end < start {
            return Err(bad("range end must not be below its start"));
        }
        let (mut tls, mut http) = (false, false);
        for opt in parts {
            match opt {
                "tls" if proto == LProto::Tcp => tls = true,
                "http" if proto == LProto::Tcp => http = true,
                "tls" | "http" => return Err(bad(&format!("{opt} is only allowed on tcp ports"))),
                other => {
                    return Err(bad(&format!(
                        "unknown option \"{other}\"; allowed: tls, http"
                    )));
                }
            }
        }
        let last = |p: &AppPort| {
            if p.end_port == 0 {
                p.internal_port
            } else {
                p.end_port
            }
        };
        let new = AppPort {
            proto: proto as i32,
            internal_port: start,
            end_port: end,
            tls,
            http,
            ..Default::default()
        };
        if let Some(other) = ports.iter().find(|p| {
            p.proto == new.proto && p.internal_port <= last(&new) && new.internal_port <= last(p)
        }) {
            return Err(bad(&format!(
                "overlaps {} port {}",
                proto
                    .as_str_name()
                    .trim_start_matches("L_PROTO_")
                    .to_lowercase(),
                other.internal_port
            )));
        }
        ports.push(new);
    }
    // Each public port is held by its own etcd key, written in the AppInst's create transaction.
    let total: i32 = ports.iter().map(port_count).sum();
    if total > MAX_PORTS {
        return Err(invalid(format!(
            "invalid {field} \"{spec}\": covers {total} ports, at most {MAX_PORTS} are allowed"
        )));
    }
    Ok(ports)
}

/// Number of ports a mapping covers (1 for a single port).
pub fn port_count(p: &AppPort) -> i32 {
    if p.end_port == 0 {
        1
    } else {
        p.end_port - p.internal_port + 1
    }
}

/// Replaces the fields of `dst` named in `fields` by those of `src` (all `allowed` when empty);
/// refuses fields that are not updatable.
pub fn check_fields(fields: &[String], allowed: &[&str]) -> Result<Vec<String>> {
    if fields.is_empty() {
        return Ok(allowed.iter().map(|s| s.to_string()).collect());
    }
    for f in fields {
        if !allowed.contains(&f.as_str()) {
            return Err(CtrlError::Invalid(format!(
                "field \"{f}\" cannot be updated; updatable fields: {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(fields.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("key.name", "game-eu_1.0").is_ok());
        let e = name("key.name", "a/b").unwrap_err().to_string();
        assert!(e.contains("invalid key.name \"a/b\": only letters"), "{e}");
        assert_eq!(
            name("key.name", "").unwrap_err().to_string(),
            "key.name is required"
        );
        assert!(
            name("key.name", &"x".repeat(65))
                .unwrap_err()
                .to_string()
                .contains("at most 64")
        );
        assert!(
            name("key.name", "-x")
                .unwrap_err()
                .to_string()
                .contains("must start with")
        );
    }

    #[test]
    fn ports() {
        let p = access_ports("access_ports", "tcp:80:http, udp:10000-10010,tcp:443:tls").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].internal_port, p[1].end_port), (10000, 10010));
        assert!(p[2].tls && !p[2].http && p[0].http);
        for (spec, why) in [
            ("tcp:99999", "port must be 1-65535"),
            ("tcp:0", "port must be 1-65535"),
            ("sctp:80", "protocol must be tcp or udp"),
            ("tcp", "missing port"),
            ("tcp:x", "\"x\" is not a port number"),
            ("udp:20-10", "range end must not be below its start"),
            ("tcp:80,tcp:70-90", "overlaps tcp port 80"),
            ("udp:53:tls", "tls is only allowed on tcp"),
            ("udp:53:http", "http is only allowed on tcp"),
            (
                "tcp:80:nginx",
                "unknown option \"nginx\"; allowed: tls, http",
            ),
            ("tcp:80,", "empty entry"),
            ("udp:1000-1100", "covers 101 ports, at most 100 are allowed"),
        ] {
            let e = access_ports("access_ports", spec).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
        assert!(access_ports("access_ports", "tcp:80,udp:80").is_ok());
        let e = access_ports("access_ports", "tcp:99999")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid access_ports \"tcp:99999\": port must be 1-65535"
        );
    }

    #[test]
    fn locations() {
        assert!(
            location(
                "location",
                Some(&Loc {
                    latitude: 52.5,
                    longitude: 13.4
                })
            )
            .is_ok()
        );
        assert!(
            location(
                "location",
                Some(&Loc {
                    latitude: 91.0,
                    longitude: 0.0
                })
            )
            .unwrap_err()
            .to_string()
            .contains("-90 to 90")
        );
        assert!(
            location(
                "location",
                Some(&Loc {
                    latitude: 1.0,
                    longitude: f64::NAN
                })
            )
            .is_err()
        );
        assert!(location("location", None).is_err());
    }
}
