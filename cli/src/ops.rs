//! Object commands through the MC: show, create, update, delete, and `apply`/`delete -f` of files.

use std::io::Write;
use std::time::Instant;

use serde_json::{Value, json};

use crate::mc::{Failure, Mc};
use crate::objects::{Doc, Kind, describe, key_of, names, numbers, with_defaults};

/// Output format of `show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

async fn ctrl(
    mc: &Mc,
    region: &str,
    method: &str,
    kind: &Kind,
    obj: &Value,
    line: impl FnMut(&Value),
) -> Result<Option<Value>, Failure> {
    mc.stream(
        &format!("/auth/ctrl/{method}{}", kind.name),
        &json!({"Region": region, kind.name: obj}),
        line,
    )
    .await
}

/// The objects of `kind` matching `filter`, with enums as numbers (the MC writes MobiledgeX's names).
pub async fn list(
    mc: &Mc,
    region: &str,
    kind: &Kind,
    filter: &Value,
) -> Result<Vec<Value>, Failure> {
    let mut rows = Vec::new();
    ctrl(mc, region, "Show", kind, filter, |l| {
        let mut row = l.clone();
        // A name this edgectl does not know (a newer MC's) stays a name.
        let _ = numbers(kind.name, &mut row);
        with_defaults(kind.name, &mut row);
        rows.push(row)
    })
    .await?;
    Ok(rows)
}

/// Prints `rows` (enums as numbers) in `out`.
pub fn print(kind: &Kind, mut rows: Vec<Value>, out: Output) -> anyhow::Result<String> {
    for r in &mut rows {
        names(kind.name, r);
    }
    Ok(match out {
        Output::Table => crate::objects::table(kind, &rows),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&rows)?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_norway::to_string(&rows)?,
    })
}

/// Runs Create/Update/Delete of one object, printing streamed progress as it comes (with the seconds
/// since the start) and a last line with the outcome.
pub async fn change(
    mc: &Mc,
    region: &str,
    verb: &str,
    kind: &Kind,
    obj: &Value,
) -> Result<(), Failure> {
    let what = describe(kind, obj);
    let started = Instant::now();
    let mut last_state = None;
    let reply = ctrl(mc, region, verb, kind, obj, |l| {
        // CreateCloudlet's first message: what the cloudlet's CRM needs, shown once.
        if let Some(key) = l["access"]["access_private_key"].as_str() {
            println!("  access key for the cloudlet's CRM (shown once; save it for --access-key):");
            println!("  access_private_key: {key}");
            if let Some(ca) = l["access"]["ca_certificate"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                println!("  the region's CA (for --ca-cert):\n{ca}");
            }
        }
        let msg = l["message"].as_str().unwrap_or_default();
        if !msg.is_empty() {
            println!("  [{:5.1}s] {msg}", started.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        }
        last_state = l.get("state").cloned();
    })
    .await?;
    let done = match (reply, last_state) {
        (Some(r), _) => format!("{what}: {}", r["message"].as_str().unwrap_or("done")),
        (None, Some(mut s)) => {
            let mut wrapped = json!({ "state": s.take() });
            names(kind.name, &mut wrapped);
            match wrapped["state"].as_str() {
                Some("NOT_PRESENT") => format!("{what}: deleted"),
                state => format!("{what}: {}", state.unwrap_or("done")),
            }
        }
        (None, None) => format!("{what}: done"),
    };
    println!("{done} ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// What of `given` differs from `current`: the top-level fields (the key aside) whose given value is not
/// already there (fields not given are left as they are).
fn changed_fields(given: &Value, current: &Value) -> Vec<String> {
    fn covers(current: &Value, given: &Value) -> bool {
        match (current, given) {
            (Value::Object(c), Value::Object(g)) => g
                .iter()
                .all(|(k, v)| covers(c.get(k).unwrap_or(&Value::Null), v)),
            (Value::Number(c), Value::Number(g)) => c.as_f64() == g.as_f64(),
            // Unset and default are the same to the controller.
            (Value::Null, g) => {
                matches!(g, Value::Null)
                    || *g == json!(0)
                    || *g == json!("")
                    || *g == json!(false)
                    || *g == json!([])
                    || *g == json!({})
            }
            (c, g) => c == g,
        }
    }
    given
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| *k != "key" && !covers(&current[k.as_str()], v))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates what does not exist and updates what differs, in dependency order; prints what it did.
/// Running it again changes nothing. Stops at the first failure.
pub async fn apply(
    mc: &Mc,
    default_region: Option<&str>,
    mut docs: Vec<Doc>,
) -> anyhow::Result<()> {
    docs.sort_by_key(|d| d.kind.rank);
    for d in &docs {
        let region = region_of(d, default_region)?;
        if !d.kind.writable {
            anyhow::bail!("{}: {} objects cannot be created", d.origin, d.kind.name);
        }
        let what = describe(d.kind, &d.object);
        let found = list(mc, region, d.kind, &key_of(d.kind, &d.object)).await?;
        match found.first() {
            None => change(mc, region, "Create", d.kind, &d.object).await?,
            Some(current) => {
                let fields = changed_fields(&d.object, current);
                if fields.is_empty() {
                    println!("{what}: unchanged");
                    continue;
                }
                let mut update = key_of(d.kind, &d.object);
                for f in &fields {
                    update[f.as_str()] = d.object[f.as_str()].clone();
                }
                println!("{what}: updating {}", fields.join(", "));
                change(mc, region, "Update", d.kind, &update).await?;
            }
        }
    }
    Ok(())
}

/// Deletes the objects of `docs` in reverse dependency order; those already gone are skipped.
pub async fn delete(
    mc: &Mc,
    default_region: Option<&str>,
    mut docs: Vec<Doc>,
) -> anyhow::Result<()> {
    docs.sort_by_key(|d| std::cmp::Reverse(d.kind.rank));
    for d in &docs {
        let region = region_of(d, default_region)?;
        let key = key_of(d.kind, &d.object);
        if list(mc, region, d.kind, &key).await?.is_empty() {
            println!("{}: not there", describe(d.kind, &d.object));
            continue;
        }
        change(mc, region, "Delete", d.kind, &key).await?;
    }
    Ok(())
}

fn region_of<'a>(d: &'a Doc, default: Option<&'a str>) -> anyhow::Result<&'a str> {
    d.region.as_deref().or(default).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no region: add region: to the file, give --region, or log in with --region",
            d.origin
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fields_given_and_different_are_changed() {
        let current = json!({"key": {"name": "web"}, "image_path": "a:1", "deployment": "docker", "env": {"A": "1"}, "vcpus": 2});
        assert!(
            changed_fields(
                &json!({"key": {"name": "web"}, "image_path": "a:1"}),
                &current
            )
            .is_empty()
        );
        assert_eq!(
            changed_fields(
                &json!({"image_path": "a:2", "env": {"A": "1"}, "vcpus": 2.0}),
                &current
            ),
            ["image_path"]
        );
        assert!(changed_fields(&json!({"command": ""}), &current).is_empty());
    }
}
