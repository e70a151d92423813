//! The InfluxDB writer: line protocol over the v1 HTTP API (`/write`, `/query`), which InfluxDB 1.x,
//! 2.x (compatibility endpoints) and 3.x all serve.
//!
//! Points wait in a bounded queue and are sent in batches. While InfluxDB is unreachable they stay
//! queued; when the queue is full the oldest points are dropped first and counted
//! (`shepherd_points_dropped_total`), so memory stays bounded however long the outage lasts.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;

/// Most points in one `/write` request.
const BATCH: usize = 5000;

/// A field value of a point.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Float(f64),
    Int(i64),
    Str(String),
}

/// One point: measurement, tags, fields and a time in unix milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(&'static str, Field)>,
    pub time_ms: i64,
}

impl Point {
    pub fn new(measurement: &'static str, time_ms: i64) -> Self {
        Self {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            time_ms,
        }
    }

    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.tags.push((key, value.into()));
        self
    }

    pub fn field(mut self, key: &'static str, value: Field) -> Self {
        self.fields.push((key, value));
        self
    }

    /// The point in line protocol (millisecond precision). Empty tag values are left out, as line
    /// protocol cannot carry them.
    pub fn line(&self) -> String {
        let mut s = escape(self.measurement, &[',', ' ']);
        for (k, v) in &self.tags {
            if !v.is_empty() {
                let _ = write!(s, ",{}={}", escape(k, TAG), escape(v, TAG));
            }
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            s.push(if i == 0 { ' ' } else { ',' });
            s.push_str(&escape(k, TAG));
            s.push('=');
            match v {
                Field::Float(f) if f.is_finite() => {
                    let _ = write!(s, "{f:?}");
                }
                Field::Float(_) => s.push('0'),
                Field::Int(n) => {
                    let _ = write!(s, "{n}i");
                }
                Field::Str(t) => {
                    let _ = write!(s, "\"{}\"", escape(t, &['"', '\\']));
                }
            }
        }
        let _ = write!(s, " {}", self.time_ms);
        s
    }
}

const TAG: &[char] = &[',', '=', ' '];

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            // a line ends at a newline, whatever the context
            '\n' | '\r' => out.push(' '),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Which database a point goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Metrics,
    Events,
}

/// Where points go.
#[derive(Clone, Debug)]
pub struct InfluxConfig {
    /// base URL, e.g. `http://127.0.0.1:8086`
    pub url: String,
    /// database of the metrics (MobiledgeX: `metrics`)
    pub database: String,
    /// database of the lifecycle events (MobiledgeX: `events`)
    pub events_database: String,
    /// retention policy made the database's default when it is created, e.g. `edge_30d` for 30 days
    pub retention_days: u32,
    /// most points held while InfluxDB is unreachable
    pub max_queued: usize,
}

pub struct Writer {
    cfg: InfluxConfig,
    http: reqwest::Client,
    queue: Mutex<VecDeque<(Db, String)>>,
    wake: Notify,
    dropped: IntCounter,
    queued: IntGauge,
    writes: IntCounterVec,
    bytes: IntCounter,
}

impl Writer {
    pub fn new(cfg: InfluxConfig, registry: &Registry) -> anyhow::Result<Arc<Self>> {
        let dropped = IntCounter::new(
            "shepherd_points_dropped_total",
            "points dropped because the queue was full while InfluxDB was unreachable",
        )?;
        let queued = IntGauge::new(
            "shepherd_points_queued",
            "points waiting to be written to InfluxDB",
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "shepherd_influx_writes_total",
                "InfluxDB write requests by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        let bytes = IntCounter::new(
            "shepherd_influx_bytes_total",
            "bytes of line protocol InfluxDB accepted",
        )?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Arc::new(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            cfg,
            queue: Mutex::default(),
            wake: Notify::new(),
            dropped,
            queued,
            writes,
            bytes,
        }))
    }

    /// Queues points; the oldest are dropped when the queue is full.
    pub fn push(&self, db: Db, points: impl IntoIterator<Item = Point>) {
        let mut q = self.queue.lock().expect("queue lock");
        for p in points {
            if q.len() >= self.cfg.max_queued {
                q.pop_front();
                self.dropped.inc();
            }
            q.push_back((db, p.line()));
        }
        self.queued.set(q.len() as i64);
        if q.len() >= BATCH {
            self.wake.notify_one();
        }
    }

    /// Sends queued points every `every` (or as soon as a batch is full) until aborted; creates the
    /// database first and retries everything after failures.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut created = false;
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
            loop {
                let result = async {
                    if !created {
                        self.create_database().await?;
                        created = true;
                    }
                    self.flush().await
                }
                .await;
                match result {
                    Ok(()) => {
                        backoff = Duration::from_millis(500);
                        break;
                    }
                    Err(e) => {
                        // a dropped database is created again
                        created = false;
                        self.writes.with_label_values(&["failed"]).inc();
                        tracing::warn!(url = %self.cfg.url, error = %e, "writing to InfluxDB failed; points stay queued");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }

    /// The retention policy's name.
    pub fn retention_policy(&self) -> String {
        format!("edge_{}d", self.cfg.retention_days)
    }

    async fn create_database(&self) -> anyhow::Result<()> {
        let rp = self.retention_policy();
        for db in [&self.cfg.database, &self.cfg.events_database] {
            let db = db.replace('"', "");
            // Both statements are idempotent; an existing policy of the same name keeps its settings.
            self.query(&format!("CREATE DATABASE \"{db}\"")).await?;
            let r = self
                .query(&format!(
                    "CREATE RETENTION POLICY \"{rp}\" ON \"{db}\" DURATION {}d REPLICATION 1 DEFAULT",
                    self.cfg.retention_days
                ))
                .await;
            if let Err(e) = r
                && !e.to_string().contains("already exists")
            {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn query(&self, q: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/query", self.cfg.url))
            .form(&[("q", q)])
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() || body.contains("\"error\"") {
            anyhow::bail!("InfluxDB refused `{q}` ({status}): {}", body.trim());
        }
        Ok(())
    }

    /// Writes everything queued, batch by batch; a failed batch goes back to the front of the queue.
    async fn flush(&self) -> anyhow::Result<()> {
        loop {
            let batch: Vec<(Db, String)> = {
                let mut q = self.queue.lock().expect("queue lock");
                let n = q.len().min(BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            let mut result = Ok(());
            for db in [Db::Metrics, Db::Events] {
                let lines: Vec<&str> = batch
                    .iter()
                    .filter(|(d, _)| *d == db)
                    .map(|(_, l)| l.as_str())
                    .collect();
                if !lines.is_empty() && result.is_ok() {
                    result = self.write(db, &lines).await;
                }
            }
            if let Err(e) = result {
                // Rewriting points already stored is harmless: a point with the same series and time
                // replaces itself.
                let mut q = self.queue.lock().expect("queue lock");
                for entry in batch.into_iter().rev() {
                    if q.len() >= self.cfg.max_queued {
                        self.dropped.inc();
                        continue;
                    }
                    q.push_front(entry);
                }
                self.queued.set(q.len() as i64);
                return Err(e);
            }
            self.writes.with_label_values(&["ok"]).inc();
            self.queued
                .set(self.queue.lock().expect("queue lock").len() as i64);
        }
    }

    async fn write(&self, db: Db, lines: &[&str]) -> anyhow::Result<()> {
        let database = match db {
            Db::Metrics => &self.cfg.database,
            Db::Events => &self.cfg.events_database,
        };
        let body = lines.join("\n");
        let len = body.len() as u64;
        let resp = self
            .http
            .post(format!("{}/write", self.cfg.url))
            .query(&[
                ("db", database.as_str()),
                ("rp", self.retention_policy().as_str()),
                ("precision", "ms"),
            ])
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            self.bytes.inc_by(len);
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        if status.is_client_error() && !body.contains("not found") {
            // Points InfluxDB will never take (a bad line): dropping them keeps the queue moving.
            self.dropped.inc_by(lines.len() as u64);
            tracing::error!(%status, body = %body.trim(), "InfluxDB rejected a batch; dropped");
            return Ok(());
        }
        anyhow::bail!("InfluxDB answered {status}: {}", body.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_what_line_protocol_needs() {
        let p = Point::new("appinst-cpu", 1_700_000_000_123)
            .tag("app", "my app,v=1")
            .tag("cluster", "")
            .field("cpu", Field::Float(12.5))
            .field("n", Field::Int(3))
            .field("event", Field::Str("say \"hi\"\nnow".into()));
        assert_eq!(
            p.line(),
            "appinst-cpu,app=my\\ app\\,v\\=1 cpu=12.5,n=3i,event=\"say \\\"hi\\\" now\" 1700000000123"
        );
        let nan = Point::new("m", 1).field("f", Field::Float(f64::NAN));
        assert_eq!(nan.line(), "m f=0 1");
    }
}
