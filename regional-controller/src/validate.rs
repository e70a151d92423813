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

/// Parses an App's access ports (`tcp:80,udp:10000-10010,tcp:443:tls`) as MobiledgeX's controller did,
/// in its order and with its texts: each entry's form, annotations and numbers, then its protocol; then
/// the totals and the ports the platform keeps for itself. Options: `tls` (tcp), `http` (ours: the
/// health check speaks HTTP; tcp), `nginx` and `maxpktsize=N` (udp; accepted, no effect here).
pub fn access_ports(field: &str, spec: &str) -> Result<Vec<AppPort>> {
    let mut ports: Vec<AppPort> = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        let pp: Vec<&str> = entry.split(':').collect();
        if pp.len() < 2 {
            return Err(invalid(format!("invalid AccessPorts format '{entry}'")));
        }
        let (proto_text, range, annotations) = (pp[0], pp[1], &pp[2..]);
        for a in annotations {
            if a.is_empty() || a.matches('=').count() > 1 {
                return Err(invalid(format!(
                    "invalid AccessPorts annotation {a} for port {range}, expected format is either key or key=val"
                )));
            }
        }
        let num = |s: &str| -> Result<i64> {
            s.parse()
                .map_err(|_| invalid("unable to convert port range base value"))
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(range)?, num(range)?),
        };
        if !(1..=65535).contains(&start) || !(1..=65535).contains(&end) || end < start {
            return Err(invalid("App ports out of range"));
        }
        let end = if end == start { 0 } else { end as i32 };
        let proto = match proto_text.to_ascii_lowercase().as_str() {
            "tcp" => LProto::Tcp,
            "udp" => LProto::Udp,
            _ => return Err(invalid(format!("Unsupported protocol: {proto_text}"))),
        };
        let proto_name = if proto == LProto::Tcp { "tcp" } else { "udp" };
        let (mut tls, mut http) = (false, false);
        for a in annotations {
            let (key, val) = a.split_once('=').unwrap_or((a, ""));
            match (key, proto) {
                ("tls", LProto::Tcp) => tls = true,
                ("tls", _) => {
                    return Err(invalid(format!(
                        "Invalid protocol {proto_name}, not available for tls support"
                    )));
                }
                ("http", LProto::Tcp) => http = true,
                ("http", _) => {
                    return Err(invalid(format!(
                        "Invalid annotation \"http\" for {proto_name} ports, only valid for TCP protocol"
                    )));
                }
                ("nginx", LProto::Udp) => {}
                ("nginx", _) => {
                    return Err(invalid(format!(
                        "Invalid annotation \"nginx\" for {proto_name} ports"
                    )));
                }
                ("maxpktsize", LProto::Udp) => {
                    let n: i64 = val
                        .parse()
                        .map_err(|_| invalid(format!("unable to convert pkt size value: {val}")))?;
                    if !(1501..50000).contains(&n) {
                        return Err(invalid(
                            "Invalid maxpktsize, should be between range 1500 to 50000 (exclusive)",
                        ));
                    }
                }
                ("maxpktsize", _) => {
                    return Err(invalid(format!(
                        "Invalid annotation \"maxpktsize\" for {proto_name} ports, only valid for UDP protocol"
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "unrecognized annotation {a} for port {range}"
                    )));
                }
            }
        }
        let new = AppPort {
            proto: proto as i32,
            internal_port: start as i32,
            end_port: end,
            tls,
            http,
            ..Default::default()
        };
        if let Some(other) = ports.iter().find(|p| {
            p.proto == new.proto
                && p.internal_port <= last_port(&new)
                && new.internal_port <= last_port(p)
        }) {
            return Err(invalid(format!(
                "invalid {field} \"{entry}\": overlaps {proto_name} port {}",
                other.internal_port
            )));
        }
        ports.push(new);
    }
    // Each public port is held by its own etcd key, written in the AppInst's create transaction: fewer
    // than MobiledgeX's 1,000 tcp and 10,000 udp ports.
    let total: i32 = ports.iter().map(port_count).sum();
    if total > MAX_PORTS {
        return Err(invalid(format!(
            "invalid {field} \"{spec}\": covers {total} ports, at most {MAX_PORTS} are allowed"
        )));
    }
    for p in &ports {
        for (proto, port, what) in RESERVED_PORTS {
            if p.proto == *proto as i32 && p.internal_port <= *port && *port <= last_port(p) {
                let name = if *proto == LProto::Tcp { "tcp" } else { "udp" };
                return Err(invalid(format!(
                    "App cannot use port {name}:{port} - reserved for {what}"
                )));
            }
        }
    }
    Ok(ports)
}

/// Ports the platform keeps for itself (MobiledgeX's list).
const RESERVED_PORTS: &[(LProto, i32, &str)] = &[
    (LProto::Tcp, 22, "Platform inter-node SSH"),
    (LProto::Tcp, 20800, "Kubernetes master join server"),
    (LProto::Udp, 53, "dns udp"),
    (LProto::Tcp, 53, "dns tcp"),
];

fn last_port(p: &AppPort) -> i32 {
    if p.end_port == 0 {
        p.internal_port
    } else {
        p.end_port
    }
}

/// Number of ports a mapping covers (1 for a single port).
pub fn port_count(p: &AppPort) -> i32 {
    last_port(p) - p.internal_port + 1
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
            ("tcp:99999", "App ports out of range"),
            ("tcp:0", "App ports out of range"),
            ("udp:20-10", "App ports out of range"),
            ("sctp:80", "Unsupported protocol: sctp"),
            ("HTTP:80", "Unsupported protocol: HTTP"),
            ("http:99999", "App ports out of range"),
            ("tcp", "invalid AccessPorts format 'tcp'"),
            ("tcp:80,", "invalid AccessPorts format ''"),
            ("tcp:x", "unable to convert port range base value"),
            ("tcp:80,tcp:70-90", "overlaps tcp port 80"),
            (
                "udp:53:tls",
                "Invalid protocol udp, not available for tls support",
            ),
            ("udp:5353:http", "Invalid annotation \"http\" for udp ports"),
            ("tcp:80:nginx", "Invalid annotation \"nginx\" for tcp ports"),
            (
                "tcp:80:a=b=c",
                "invalid AccessPorts annotation a=b=c for port 80",
            ),
            ("tcp:80:foo=1", "unrecognized annotation foo=1 for port 80"),
            (
                "udp:5000:maxpktsize=x",
                "unable to convert pkt size value: x",
            ),
            ("udp:5000:maxpktsize=100", "Invalid maxpktsize"),
            ("udp:1000-1100", "covers 101 ports, at most 100 are allowed"),
            (
                "tcp:22",
                "App cannot use port tcp:22 - reserved for Platform inter-node SSH",
            ),
            (
                "tcp:10-30",
                "App cannot use port tcp:22 - reserved for Platform inter-node SSH",
            ),
            (
                "udp:53",
                "App cannot use port udp:53 - reserved for dns udp",
            ),
            // A syntax error anywhere comes before a reserved port.
            ("tcp:22,bad", "invalid AccessPorts format 'bad'"),
        ] {
            let e = access_ports("access_ports", spec).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
        assert!(
            access_ports(
                "access_ports",
                "tcp:80,udp:80,udp:5000:nginx:maxpktsize=2000"
            )
            .is_ok()
        );
        assert!(access_ports("access_ports", "udp:22").is_ok());
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
