//! `edgectl metrics`: an object's metrics through the master controller, as a table with a small
//! trend line per series (or the MC's JSON with `-o json`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What to ask the MC for.
pub struct Query {
    /// app, cluster or cloudlet
    pub target: String,
    pub region: String,
    /// organization of the app, cluster or cloudlet
    pub org: String,
    /// its name (any when empty)
    pub name: String,
    pub selector: String,
    /// most samples per series
    pub last: u64,
}

impl Query {
    /// The request path (under `/api/v1`) and body, in MobiledgeX's shape.
    pub fn request(&self) -> anyhow::Result<(String, Value)> {
        let body = match self.target.as_str() {
            "app" => json!({"Region": self.region, "Selector": self.selector, "Limit": self.last,
                "AppInst": {"app_key": {"organization": self.org, "name": self.name}}}),
            "cluster" => {
                json!({"Region": self.region, "Selector": self.selector, "Limit": self.last,
                "ClusterInst": {"organization": self.org, "cluster_key": {"name": self.name}}})
            }
            "cloudlet" => {
                json!({"Region": self.region, "Selector": self.selector, "Limit": self.last,
                "Cloudlet": {"organization": self.org, "name": self.name}})
            }
            other => anyhow::bail!("metrics of \"{other}\": one of app, cluster, cloudlet"),
        };
        Ok((format!("/auth/metrics/{}", self.target), body))
    }
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `▁▃█`-style line of `values` (oldest first).
pub fn sparkline(values: &[f64]) -> String {
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    values
        .iter()
        .map(|v| {
            if max > min {
                BARS[(((v - min) / (max - min)) * 7.0).round() as usize]
            } else {
                BARS[0]
            }
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A table of the MC's reply: one row per object and numeric field, with its last value, range and
/// trend.
pub fn render(reply: &Value) -> String {
    let mut out = String::new();
    let series = reply["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["Series"].as_array().cloned().unwrap_or_default());
    let mut any = false;
    for s in series {
        any = true;
        let name = s["name"].as_str().unwrap_or_default();
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let rows = s["values"].as_array().cloned().unwrap_or_default();
        // Text columns name the object; numeric ones are the measured fields.
        let is_text = |i: usize| rows.iter().any(|r| r[i].is_string());
        let tag_cols: Vec<usize> = (1..columns.len()).filter(|i| is_text(*i)).collect();
        let field_cols: Vec<usize> = (1..columns.len()).filter(|i| !is_text(*i)).collect();
        let mut groups: BTreeMap<Vec<String>, Vec<&Value>> = BTreeMap::new();
        for r in &rows {
            let key = tag_cols
                .iter()
                .map(|i| r[*i].as_str().unwrap_or_default().to_string())
                .collect();
            groups.entry(key).or_default().push(r);
        }
        let mut table = vec![
            tag_cols
                .iter()
                .map(|i| columns[*i].to_uppercase())
                .chain(["FIELD", "LAST", "MIN", "MAX", "TREND"].map(String::from))
                .collect::<Vec<_>>(),
        ];
        for (tags, rs) in &groups {
            for f in &field_cols {
                // Replies are newest first; the trend reads left to right in time.
                let vals: Vec<f64> = rs.iter().rev().filter_map(|r| r[*f].as_f64()).collect();
                let Some(last) = vals.last() else { continue };
                let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
                let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut row = tags.clone();
                row.extend([
                    columns[*f].to_string(),
                    fmt_num(*last),
                    fmt_num(min),
                    fmt_num(max),
                    sparkline(&vals),
                ]);
                table.push(row);
            }
        }
        out.push_str(name);
        out.push('\n');
        let widths: Vec<usize> = (0..table[0].len())
            .map(|c| {
                table
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &table {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str("  ");
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    if !any {
        out.push_str("no data in the time range\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_prints_as_a_table_with_trends() {
        let reply = json!({"data": [{"Series": [{"name": "appinst-cpu",
            "columns": ["time", "app", "ver", "cpu"],
            "values": [["t3", "web", "1.0", 3.0], ["t2", "web", "1.0", 2.0], ["t1", "web", "1.0", 1.0]]}],
            "Messages": null}]});
        assert_eq!(
            render(&reply),
            "appinst-cpu\n  APP  VER  FIELD  LAST  MIN  MAX  TREND\n  web  1.0  cpu    3     1    3    ▁▅█\n"
        );
        assert_eq!(
            render(&json!({"data": [{"Series": null}]})),
            "no data in the time range\n"
        );
        assert_eq!(sparkline(&[5.0, 5.0]), "▁▁");
    }
}
