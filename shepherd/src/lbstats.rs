//! Connection and byte counters of the shared root load balancer, per AppInst port, read from the
//! LB's Prometheus endpoint (`crm_lb_*` series, labelled `route` = `tcp:10000` and `appinst` = key).

use std::collections::HashMap;

/// Counters of one LB route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// connections open now
    pub active: i64,
    /// connections accepted since the route was set up
    pub accepts: i64,
    /// connections closed at once because the route was at its cap
    pub refused: i64,
    /// bytes client → app
    pub bytes_in: i64,
    /// bytes app → client
    pub bytes_out: i64,
}

/// `(appinst key, route)` → counters.
pub type LbStats = HashMap<(String, String), RouteStats>;

/// Reads the LB's counters from its metrics page.
pub async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<LbStats> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse(&text))
}

/// Parses the `crm_lb_*` series of a Prometheus text page; other lines are ignored.
pub fn parse(text: &str) -> LbStats {
    let mut out = LbStats::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("crm_lb_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        let (Some(route), Some(inst)) = (labels.get("route"), labels.get("appinst")) else {
            continue;
        };
        let s = out.entry((inst.clone(), route.clone())).or_default();
        let v = value as i64;
        match (name, labels.get("direction").map(String::as_str)) {
            ("active_connections", _) => s.active = v,
            ("connections_total", _) => s.accepts = v,
            ("refused_total", _) => s.refused = v,
            ("bytes_total", Some("in")) => s.bytes_in = v,
            ("bytes_total", Some("out")) => s.bytes_out = v,
            _ => {}
        }
    }
    out
}

/// `a="x",b="y\"z"` → map, with the text format's escapes (`\\`, `\"`, `\n`) undone.
fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lb_series_of_a_metrics_page() {
        let page = "# HELP crm_lb_connections_total connections\n\
            crm_lb_connections_total{appinst=\"acme/web\",route=\"tcp:10000\"} 7\n\
            crm_lb_active_connections{appinst=\"acme/web\",route=\"tcp:10000\"} 2\n\
            crm_lb_bytes_total{appinst=\"acme/web\",direction=\"in\",route=\"tcp:10000\"} 100\n\
            crm_lb_bytes_total{appinst=\"acme/web\",direction=\"out\",route=\"tcp:10000\"} 2500\n\
            crm_lb_refused_total{appinst=\"a\\\"b\",route=\"udp:5\"} 1\n\
            crm_controller_connected 1\n";
        let s = parse(page);
        assert_eq!(
            s[&("acme/web".to_string(), "tcp:10000".to_string())],
            RouteStats {
                active: 2,
                accepts: 7,
                refused: 0,
                bytes_in: 100,
                bytes_out: 2500
            }
        );
        assert_eq!(s[&("a\"b".to_string(), "udp:5".to_string())].refused, 1);
        assert_eq!(s.len(), 2);
    }
}
