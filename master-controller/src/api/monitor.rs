//! Metrics and events of a region's objects, read from the region's InfluxDB (where its Shepherds
//! write), in MobiledgeX's shapes: `POST /api/v1/auth/metrics/{app,cluster,cloudlet}` and
//! `/api/v1/auth/events/{app,cluster,cloudlet}`.
//!
//! Request keys match case-insensitively (`Region` or `region`), as MobiledgeX's MC did. The object
//! filter names the organization the caller must be allowed to view: the App's org (developers), the
//! cluster's org, or the cloudlet's org (its operator, who also sees what runs on its cloudlets). The
//! reply is `{"data":[{"Series":[{"name","columns","values"[,"tags"]}],"Messages":null}]}`, newest
//! first, times in RFC 3339.

use actix_web::HttpResponse;
use actix_web::web::{self, Bytes};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Mc;
use crate::api::{Caller, require};
use crate::error::{ApiError, Result};
use crate::rbac::{APPINSTS, CLOUDLET_ANALYTICS, CLUSTERINSTS, VIEW};

/// Databases Shepherd writes (its `--database` and `--events-database` defaults, MobiledgeX's names).
pub const METRICS_DB: &str = "metrics";
pub const EVENTS_DB: &str = "events";
/// Most points one query returns.
pub const MAX_POINTS: u64 = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Target {
    App,
    Cluster,
    Cloudlet,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::App => "appinst",
            Target::Cluster => "cluster",
            Target::Cloudlet => "cloudlet",
        }
    }

    /// Tag columns, in MobiledgeX's order.
    fn tags(self) -> &'static [&'static str] {
        match self {
            Target::App => &[
                "app",
                "ver",
                "cluster",
                "clusterorg",
                "cloudlet",
                "cloudletorg",
                "apporg",
            ],
            Target::Cluster => &["cluster", "clusterorg", "cloudlet", "cloudletorg"],
            Target::Cloudlet => &["cloudlet", "cloudletorg"],
        }
    }

    /// Selectors and the fields of each one's measurement `<target>-<selector>`.
    fn selectors(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Target::App => &[
                ("cpu", &["cpu"]),
                ("mem", &["mem"]),
                ("disk", &["disk"]),
                ("network", &["sendBytes", "recvBytes"]),
                (
                    "connections",
                    &[
                        "port",
                        "active",
                        "accepts",
                        "handled",
                        "bytesSent",
                        "bytesRecvd",
                    ],
                ),
            ],
            Target::Cluster => &[
                ("cpu", &["cpu"]),
                ("mem", &["mem"]),
                ("disk", &["disk"]),
                ("network", &["sendBytes", "recvBytes"]),
            ],
            Target::Cloudlet => &[(
                "utilization",
                &[
                    "vCpuUsed", "vCpuMax", "memUsed", "memMax", "diskUsed", "diskMax",
                ],
            )],
        }
    }

    /// The events measurement and its fields.
    fn events(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Target::App => ("appinst", &["event", "status"]),
            Target::Cluster => ("clusterinst", &["event", "status"]),
            Target::Cloudlet => ("cloudlet", &["event", "status"]),
        }
    }
}

/// MobiledgeX's key shapes, every field optional (a filter).
#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct OrgName {
    organization: String,
    name: String,
    version: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct ClusterKey {
    cluster_key: OrgName,
    cloudlet_key: OrgName,
    organization: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct AppInstKey {
    app_key: OrgName,
    cluster_inst_key: ClusterKey,
}

/// A request, its keys lower-cased.
#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[schema(as = MetricsQuery)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Request {
    region: String,
    appinst: Option<AppInstKey>,
    appinsts: Vec<AppInstKey>,
    clusterinst: Option<ClusterKey>,
    clusterinsts: Vec<ClusterKey>,
    cloudlet: Option<OrgName>,
    cloudlets: Vec<OrgName>,
    selector: String,
    limit: Option<u64>,
    numsamples: Option<u64>,
    starttime: Option<String>,
    endtime: Option<String>,
}

/// Tag filters of one object: `(tag, value)` for every non-empty field.
type Filter = Vec<(&'static str, String)>;

fn filters(t: Target, r: &Request) -> Vec<Filter> {
    let keep = |f: Vec<(&'static str, &String)>| -> Filter {
        f.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.clone()))
            .collect()
    };
    let app = |k: &AppInstKey| {
        let c = &k.cluster_inst_key;
        keep(vec![
            ("apporg", &k.app_key.organization),
            ("app", &k.app_key.name),
            ("ver", &k.app_key.version),
            ("cluster", &c.cluster_key.name),
            ("clusterorg", &c.organization),
            ("cloudlet", &c.cloudlet_key.name),
            ("cloudletorg", &c.cloudlet_key.organization),
        ])
    };
    let cluster = |c: &ClusterKey| {
        keep(vec![
            ("cluster", &c.cluster_key.name),
            ("clusterorg", &c.organization),
            ("cloudlet", &c.cloudlet_key.name),
            ("cloudletorg", &c.cloudlet_key.organization),
        ])
    };
    let cloudlet = |c: &OrgName| {
        keep(vec![
            ("cloudlet", &c.name),
            ("cloudletorg", &c.organization),
        ])
    };
    match t {
        Target::App => r.appinst.iter().chain(&r.appinsts).map(app).collect(),
        Target::Cluster => r
            .clusterinst
            .iter()
            .chain(&r.clusterinsts)
            .map(cluster)
            .collect(),
        Target::Cloudlet => r
            .cloudlet
            .iter()
            .chain(&r.cloudlets)
            .map(cloudlet)
            .collect(),
    }
}

fn get<'a>(f: &'a Filter, tag: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| *k == tag).map(|(_, v)| v.as_str())
}

/// The caller may see the object's figures: its own org's viewers, or the cloudlet's operator.
fn authorize(c: &Caller, t: Target, f: &Filter) -> Result<()> {
    let (own_org, resource, missing) = match t {
        Target::App => (
            "apporg",
            APPINSTS,
            "Must provide either App organization or Cloudlet organization",
        ),
        Target::Cluster => (
            "clusterorg",
            CLUSTERINSTS,
            "Must provide either Cluster organization or Cloudlet organization",
        ),
        Target::Cloudlet => (
            "cloudletorg",
            CLOUDLET_ANALYTICS,
            "Cloudlet organization must be present",
        ),
    };
    let own = get(f, own_org);
    let operator = get(f, "cloudletorg");
    if own.is_none() && operator.is_none() {
        return Err(ApiError::bad_request(missing));
    }
    let by_own = own.is_some_and(|o| require(c, resource, VIEW, o).is_ok());
    let by_operator = operator.is_some_and(|o| require(c, CLOUDLET_ANALYTICS, VIEW, o).is_ok());
    if by_own || by_operator {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// `'value'` in InfluxQL.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Unix seconds of the RFC 3339 time `s` of `field`.
fn rfc3339(field: &str, s: &str) -> Result<i64> {
    edge_common::parse_rfc3339(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid {field} \"{s}\": expected an RFC 3339 time such as 2026-11-30T12:00:00Z"
        ))
    })
}

/// Parses a JSON object body with its top-level keys lower-cased (MobiledgeX matched keys
/// case-insensitively).
pub fn parse_ci<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    let v = crate::json::value(body)?;
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request(
            "Invalid JSON data: expected a JSON object",
        ));
    };
    let lowered: Map<String, Value> = m.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
    serde_json::from_value(Value::Object(lowered))
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON data: {e}")))
}

/// The time condition and the window's length in seconds (12 hours ending now when not given).
fn window(r: &Request) -> Result<(String, i64)> {
    let end_ms = match &r.endtime {
        Some(e) => rfc3339("endtime", e)? * 1000,
        None => edge_common::now_ms(),
    };
    let start_ms = match &r.starttime {
        Some(s) => rfc3339("starttime", s)? * 1000,
        None => end_ms - 12 * 3600 * 1000,
    };
    if start_ms >= end_ms {
        return Err(ApiError::bad_request("starttime must be before endtime"));
    }
    Ok((
        format!("time >= {start_ms}ms AND time <= {end_ms}ms"),
        (end_ms - start_ms) / 1000,
    ))
}

/// InfluxQL statements answering `r` for `t`, one per measurement.
fn statements(t: Target, r: &Request, fs: &[Filter], events: bool) -> Result<Vec<String>> {
    if r.limit.is_some() && r.numsamples.is_some() {
        return Err(ApiError::bad_request(
            "Only one of Limit or NumSamples can be specified",
        ));
    }
    let (cond_time, span) = window(r)?;
    let wher = |extra: &str| {
        let objs: Vec<String> = fs
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| {
                let c: Vec<String> = f
                    .iter()
                    .map(|(k, v)| format!("\"{k}\" = {}", quote(v)))
                    .collect();
                format!("({})", c.join(" AND "))
            })
            .collect();
        let mut w = vec![cond_time.clone()];
        if !objs.is_empty() {
            w.push(format!("({})", objs.join(" OR ")));
        }
        if !extra.is_empty() {
            w.push(extra.to_string());
        }
        w.join(" AND ")
    };
    let tags: Vec<String> = t.tags().iter().map(|t| format!("\"{t}\"")).collect();
    if events {
        let (m, fields) = t.events();
        let cols: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
        let limit = r.limit.unwrap_or(MAX_POINTS).min(MAX_POINTS);
        return Ok(vec![format!(
            "SELECT {},{} FROM \"{m}\" WHERE {} ORDER BY time DESC LIMIT {limit}",
            tags.join(","),
            cols.join(","),
            wher("")
        )]);
    }
    let all = t.selectors();
    let wanted: Vec<&str> = r
        .selector
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let chosen: Vec<_> = if wanted.is_empty() || wanted == ["*"] {
        all.to_vec()
    } else {
        wanted
            .iter()
            .map(|w| {
                all.iter().find(|(s, _)| s == w).copied().ok_or_else(|| {
                    let names: Vec<String> = all.iter().map(|(s, _)| format!("\"{s}\"")).collect();
                    ApiError::bad_request(format!(
                        "Invalid {} selector: {w}, must be one of {}",
                        t.name(),
                        names.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for (sel, fields) in chosen {
        let m = format!("{}-{sel}", t.name());
        match r.numsamples {
            None => {
                let limit = r.limit.unwrap_or(MAX_POINTS).min(MAX_POINTS);
                let cols: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
                out.push(format!(
                    "SELECT {},{} FROM \"{m}\" WHERE {} ORDER BY time DESC LIMIT {limit}",
                    tags.join(","),
                    cols.join(","),
                    wher("")
                ));
            }
            Some(n) => {
                let n = n.clamp(1, MAX_POINTS);
                let bucket = (span / n as i64).max(1);
                // CPU is averaged over a bucket, memory and disk take its peak, counters its last value.
                let cols: Vec<String> = fields
                    .iter()
                    .filter(|f| **f != "port")
                    .map(|f| {
                        let agg = match *f {
                            "cpu" => "mean",
                            "mem" | "disk" => "max",
                            _ => "last",
                        };
                        format!("{agg}(\"{f}\") AS \"{f}\"")
                    })
                    .collect();
                out.push(format!(
                    "SELECT {} FROM \"{m}\" WHERE {} GROUP BY time({bucket}s),{} fill(previous) ORDER BY time DESC LIMIT {n}",
                    cols.join(","),
                    wher(""),
                    tags.join(",")
                ));
            }
        }
    }
    Ok(out)
}

async fn query(mc: &Mc, region: &str, db: &str, statements: &[String]) -> Result<Value> {
    if region.is_empty() {
        return Err(ApiError::bad_request("region is required"));
    }
    let row: Option<(String,)> =
        sqlx::query_as("SELECT influxdb FROM controllers WHERE region = $1")
            .bind(region)
            .fetch_optional(&mc.db)
            .await?;
    let url = match row {
        None => {
            return Err(ApiError::bad_request(format!(
                "Region \"{region}\" not found"
            )));
        }
        Some((u,)) if u.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "Region \"{region}\" has no InfluxDB configured"
            )));
        }
        Some((u,)) => u,
    };
    let q = statements.join("; ");
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(region, error = %e, "querying the region's InfluxDB failed");
        ApiError::unavailable(format!(
            "the metrics store of region {region} is unavailable, retry later"
        ))
    };
    let resp = mc
        .http
        .post(format!("{}/query", url.trim_end_matches('/')))
        .form(&[("db", db), ("q", q.as_str())])
        .send()
        .await
        .map_err(|e| unavailable(&e))?;
    if resp.status().is_server_error() {
        return Err(unavailable(&resp.status()));
    }
    let body: Value = resp.json().await.map_err(|e| unavailable(&e))?;
    let mut series = Vec::new();
    for r in body["results"].as_array().into_iter().flatten() {
        if let Some(e) = r["error"].as_str() {
            // A database Shepherd has not created yet simply holds nothing.
            if e.contains("database not found") {
                continue;
            }
            return Err(ApiError::bad_request(format!("metrics query failed: {e}")));
        }
        series.extend(r["series"].as_array().cloned().unwrap_or_default());
    }
    let series = if series.is_empty() {
        Value::Null
    } else {
        Value::Array(series)
    };
    Ok(json!({"data": [{"Series": series, "Messages": null}]}))
}

async fn answer(
    mc: web::Data<Mc>,
    c: Caller,
    body: Bytes,
    t: Target,
    events: bool,
) -> Result<HttpResponse> {
    let r: Request = parse_ci(&body)?;
    let fs = filters(t, &r);
    if fs.is_empty() {
        authorize(&c, t, &Filter::new())?;
    }
    for f in &fs {
        authorize(&c, t, f)?;
    }
    let stmts = statements(t, &r, &fs, events)?;
    let db = if events { EVENTS_DB } else { METRICS_DB };
    Ok(HttpResponse::Ok().json(query(&mc, &r.region, db, &stmts).await?))
}

pub async fn metrics_app(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::App, false).await
}
pub async fn metrics_cluster(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::Cluster, false).await
}
pub async fn metrics_cloudlet(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::Cloudlet, false).await
}
pub async fn events_app(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::App, true).await
}
pub async fn events_cluster(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::Cluster, true).await
}
pub async fn events_cloudlet(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    answer(mc, c, body, Target::Cloudlet, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(rfc3339("t", "1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(rfc3339("t", "2026-11-30T12:00:00Z").unwrap(), 1_796_040_000);
        assert_eq!(
            rfc3339("t", "2026-11-30T13:00:00.250+01:00").unwrap(),
            1_796_040_000
        );
        assert_eq!(rfc3339("t", "2000-02-29T00:00:00Z").unwrap(), 951_782_400);
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-30T12:00:00",
            "2026-11-30T12:00:00+1",
        ] {
            assert!(rfc3339("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_quoted_for_influxql() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn selectors_and_limits_are_checked() {
        let r = |sel: &str, limit, n| Request {
            selector: sel.into(),
            limit,
            numsamples: n,
            ..Default::default()
        };
        let f = vec![vec![("apporg", "acme".to_string())]];
        let s = statements(Target::App, &r("cpu,mem", None, None), &f, false).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].contains("FROM \"appinst-cpu\""), "{}", s[0]);
        assert!(s[0].contains("\"apporg\" = 'acme'"), "{}", s[0]);
        assert_eq!(
            statements(Target::App, &r("*", None, None), &f, false)
                .unwrap()
                .len(),
            5
        );
        let e = statements(Target::App, &r("gpu", None, None), &f, false)
            .err()
            .unwrap();
        assert!(
            e.message.starts_with("Invalid appinst selector: gpu"),
            "{}",
            e.message
        );
        let e = statements(Target::App, &r("cpu", Some(1), Some(1)), &f, false)
            .err()
            .unwrap();
        assert_eq!(
            e.message,
            "Only one of Limit or NumSamples can be specified"
        );
        let s = statements(Target::App, &r("cpu", None, Some(10)), &f, false).unwrap();
        assert!(
            s[0].contains("mean(\"cpu\")") && s[0].contains("GROUP BY time(4320s)"),
            "{}",
            s[0]
        );
    }
}
