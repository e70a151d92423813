//! Alerts through the MC: who sees which alert, alert receivers (MobiledgeX's
//! `/api/v1/auth/alertreceiver/{create,delete,show}`), and the task that sends each alert to the
//! receivers that want it when it fires and when it clears.
//!
//! Delivery follows the receiver's owner's rights at the time of sending: a user who lost the role that
//! let them see an organization's alerts stops getting them. Webhook receivers get Alertmanager's webhook
//! JSON; Slack receivers an incoming-webhook message; email receivers a text mail through the MC's SMTP
//! relay. Each delivery is retried with backoff.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use edge_common::Keyed;
use edge_proto::edge::Alert;
use edge_proto::edge::alert_api_client::AlertApiClient;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Mc;
use crate::api::{Caller, audited, grants_of, ok, require};
use crate::error::{ApiError, Result};
use crate::rbac::{APPINSTS, CLOUDLET_ANALYTICS, Grants, VIEW};

/// Whether `grants` may see an alert with these labels: the app's organization, or the cloudlet's
/// operator.
pub fn visible(grants: &Grants, labels: &HashMap<String, String>) -> bool {
    let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
    let operator = grants.allows(CLOUDLET_ANALYTICS, VIEW, label("cloudletorg"));
    let apporg = label("apporg");
    operator || (!apporg.is_empty() && grants.allows(APPINSTS, VIEW, apporg))
}

const SEVERITIES: &[&str] = &["info", "warning", "error"];

fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct CloudletKeyJ {
    organization: String,
    name: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct AppKeyJ {
    organization: String,
    name: String,
    version: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct ClusterKeyJ {
    name: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct ClusterInstKeyJ {
    cluster_key: ClusterKeyJ,
    cloudlet_key: CloudletKeyJ,
    organization: String,
}

#[derive(Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct AppInstKeyJ {
    app_key: AppKeyJ,
    cluster_inst_key: ClusterInstKeyJ,
}

/// An alert receiver as the API reads it (keys lower-cased first) ...
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[schema(as = AlertReceiver)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ReceiverIn {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    severity: String,
    region: String,
    user: String,
    email: String,
    slackchannel: String,
    slackwebhook: String,
    webhook: String,
    cloudlet: Option<CloudletKeyJ>,
    appinst: Option<AppInstKeyJ>,
}

/// ... and shows it (MobiledgeX's field names; URLs hidden).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiverOut {
    name: String,
    #[serde(rename = "Type")]
    kind: String,
    severity: String,
    region: String,
    user: String,
    email: String,
    slack_channel: String,
    slack_webhook: String,
    webhook: String,
    cloudlet: CloudletKeyJ,
    app_inst: AppInstKeyJ,
}

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    username: String,
    #[sqlx(rename = "type")]
    kind: String,
    severity: String,
    region: String,
    email: String,
    slack_channel: String,
    cloudlet_org: String,
    cloudlet_name: String,
    app_org: String,
    app_name: String,
    app_ver: String,
    cluster_org: String,
    cluster_name: String,
}

const COLUMNS: &str = "name, username, type, severity, region, email, slack_channel, cloudlet_org, \
     cloudlet_name, app_org, app_name, app_ver, cluster_org, cluster_name";

fn secret_path(user: &str, name: &str) -> String {
    format!("mc/alertreceiver/{user}/{name}")
}

fn check_url(url: &str, message: &str) -> Result<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(message))
    }
}

pub async fn receiver_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Bytes,
) -> Result<HttpResponse> {
    let r: ReceiverIn = crate::api::monitor::parse_ci(&body)?;
    let audit = json!({"Name": r.name, "Type": r.kind, "Severity": r.severity, "Region": r.region});
    let call = async {
        if r.name.is_empty() {
            return Err(ApiError::bad_request("Receiver name has to be specified"));
        }
        if r.name.contains(':') {
            return Err(ApiError::bad_request(
                "Receiver name cannot contain colons(\":\")",
            ));
        }
        if r.name.len() > 64
            || !r
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            return Err(ApiError::bad_request("Receiver name is invalid"));
        }
        if !SEVERITIES.contains(&r.severity.as_str()) {
            return Err(ApiError::bad_request(
                "Alert severity has to be one of \"info\", \"warning\", \"error\"",
            ));
        }
        if !r.user.is_empty() {
            return Err(ApiError::bad_request(
                "User is not specifiable, current logged in user will be used",
            ));
        }
        let (cloudlet, app) = (
            r.cloudlet.unwrap_or_default(),
            r.appinst.unwrap_or_default(),
        );
        let for_cloudlet = !cloudlet.organization.is_empty() || !cloudlet.name.is_empty();
        let a = &app.app_key;
        let k = &app.cluster_inst_key;
        let for_app =
            !a.organization.is_empty() || !a.name.is_empty() || !k.organization.is_empty();
        if for_cloudlet && for_app {
            return Err(ApiError::bad_request(
                "AppInst details cannot be specified if this receiver is for cloudlet alerts",
            ));
        }
        if !for_cloudlet && !for_app && !c.grants.is_admin() {
            return Err(ApiError::bad_request(
                "Either cloudlet, cluster or app instance details have to be specified",
            ));
        }
        if for_cloudlet {
            if cloudlet.organization.is_empty() {
                return Err(ApiError::bad_request(
                    "Cloudlet organization has to be specified",
                ));
            }
            require(&c, CLOUDLET_ANALYTICS, VIEW, &cloudlet.organization)?;
        }
        if for_app {
            if a.organization.is_empty() {
                return Err(ApiError::bad_request(
                    "App organization has to be specified",
                ));
            }
            require(&c, APPINSTS, VIEW, &a.organization)?;
        }
        if !r.region.is_empty() {
            mc.region(&r.region).await?;
        }
        let (email, channel, url) = match r.kind.as_str() {
            "webhook" => {
                check_url(&r.webhook, "Webhook URL must be an http or https URL")?;
                (String::new(), String::new(), r.webhook.clone())
            }
            "slack" => {
                if r.slackwebhook.is_empty() || r.slackchannel.is_empty() {
                    return Err(ApiError::bad_request(
                        "Both slack URL and slack channel must be specified",
                    ));
                }
                check_url(&r.slackwebhook, "Invalid Slack api URL")?;
                let ch = if r.slackchannel.starts_with('#') {
                    r.slackchannel.clone()
                } else {
                    format!("#{}", r.slackchannel)
                };
                (String::new(), ch, r.slackwebhook.clone())
            }
            "email" => {
                if mc.smtp.is_none() {
                    return Err(ApiError::bad_request(
                        "Email receivers need an SMTP relay: this master controller has none (--smtp-relay)",
                    ));
                }
                let email = if r.email.is_empty() {
                    c.email.clone()
                } else {
                    r.email.clone()
                };
                let parts: Vec<&str> = email.split('@').collect();
                let valid = email.len() <= 254
                    && parts.len() == 2
                    && parts.iter().all(|p| !p.is_empty())
                    && !email
                        .chars()
                        .any(|ch| ch.is_whitespace() || ch.is_control() || "<>,;\"".contains(ch));
                if !valid {
                    return Err(ApiError::bad_request("Receiver email is invalid"));
                }
                (email, String::new(), String::new())
            }
            "pagerduty" => {
                return Err(ApiError::bad_request(
                    "Receiver type pagerduty is not available on this platform (no outside service is reachable); use \"webhook\", \"slack\" or \"email\"",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "Receiver type invalid, must be one of \"webhook\", \"slack\", \"email\"",
                ));
            }
        };
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT name FROM alert_receivers WHERE username = $1 AND name = $2")
                .bind(&c.username)
                .bind(&r.name)
                .fetch_optional(&mc.db)
                .await?;
        if exists.is_some() {
            return Err(ApiError::bad_request(format!(
                "Alert receiver \"{}\" already exists",
                r.name
            )));
        }
        // The URL first: a receiver row never points at a secret that is not there.
        if !url.is_empty() {
            mc.vault
                .write(&secret_path(&c.username, &r.name), "url", &url)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "storing an alert receiver's URL in Vault failed");
                    ApiError::unavailable("the secret store is unavailable, retry later")
                })?;
        }
        sqlx::query(
            "INSERT INTO alert_receivers (name, username, type, severity, region, email, slack_channel, \
             cloudlet_org, cloudlet_name, app_org, app_name, app_ver, cluster_org, cluster_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&r.name)
        .bind(&c.username)
        .bind(&r.kind)
        .bind(&r.severity)
        .bind(&r.region)
        .bind(&email)
        .bind(&channel)
        .bind(&cloudlet.organization)
        .bind(&cloudlet.name)
        .bind(&a.organization)
        .bind(&a.name)
        .bind(&a.version)
        .bind(&k.organization)
        .bind(&k.cluster_key.name)
        .execute(&mc.db)
        .await?;
        Ok(ok("Alert receiver created successfully"))
    };
    audited(&mc, &req, &c.username, "", &audit, call).await
}

pub async fn receiver_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Bytes,
) -> Result<HttpResponse> {
    let r: ReceiverIn = crate::api::monitor::parse_ci(&body)?;
    let audit = json!({"Name": r.name, "User": r.user});
    let call = async {
        if r.name.is_empty() {
            return Err(ApiError::bad_request("Receiver name has to be specified"));
        }
        // Admins may remove anyone's receiver by naming its user.
        let user = if r.user.is_empty() || r.user == c.username {
            c.username.clone()
        } else {
            require(&c, crate::rbac::USERS, crate::rbac::MANAGE, "")?;
            r.user.clone()
        };
        let n = sqlx::query("DELETE FROM alert_receivers WHERE username = $1 AND name = $2")
            .bind(&user)
            .bind(&r.name)
            .execute(&mc.db)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::bad_request(format!(
                "Alert receiver \"{}\" not found",
                r.name
            )));
        }
        if let Err(e) = mc.vault.delete(&secret_path(&user, &r.name)).await {
            tracing::warn!(error = %e, "removing an alert receiver's URL from Vault failed");
        }
        Ok(ok("Alert receiver deleted successfully"))
    };
    audited(&mc, &req, &c.username, "", &audit, call).await
}

pub async fn receiver_show(mc: web::Data<Mc>, c: Caller, body: Bytes) -> Result<HttpResponse> {
    let filter: ReceiverIn = if body.is_empty() {
        ReceiverIn::default()
    } else {
        crate::api::monitor::parse_ci(&body)?
    };
    if !filter.slackwebhook.is_empty() || !filter.webhook.is_empty() {
        return Err(ApiError::bad_request(
            "Slack URL is not specifiable as a filter",
        ));
    }
    let all = c.grants.allows(crate::rbac::USERS, VIEW, "");
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alert_receivers WHERE ($1 OR username = $2) ORDER BY username, name"
    )))
    .bind(all)
    .bind(&c.username)
    .fetch_all(&mc.db)
    .await?;
    let out: Vec<ReceiverOut> = rows
        .into_iter()
        .filter(|r| {
            (filter.name.is_empty() || filter.name == r.name)
                && (filter.kind.is_empty() || filter.kind == r.kind)
                && (filter.severity.is_empty() || filter.severity == r.severity)
                && (filter.user.is_empty() || filter.user == r.username)
        })
        .map(|r| {
            let hidden = |t: &str| {
                if r.kind == t {
                    "<hidden>".into()
                } else {
                    String::new()
                }
            };
            ReceiverOut {
                slack_webhook: hidden("slack"),
                webhook: hidden("webhook"),
                name: r.name,
                kind: r.kind,
                severity: r.severity,
                region: r.region,
                user: r.username,
                email: r.email,
                slack_channel: r.slack_channel,
                cloudlet: CloudletKeyJ {
                    organization: r.cloudlet_org,
                    name: r.cloudlet_name,
                },
                app_inst: AppInstKeyJ {
                    app_key: AppKeyJ {
                        organization: r.app_org,
                        name: r.app_name,
                        version: r.app_ver,
                    },
                    cluster_inst_key: ClusterInstKeyJ {
                        cluster_key: ClusterKeyJ {
                            name: r.cluster_name,
                        },
                        organization: r.cluster_org,
                        ..Default::default()
                    },
                },
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

impl Row {
    /// Whether this receiver wants `alert` of `region` (before the owner's rights are checked).
    fn wants(&self, region: &str, alert: &Alert) -> bool {
        let l = |k: &str| alert.labels.get(k).map(String::as_str).unwrap_or_default();
        let eq = |want: &str, k: &str| want.is_empty() || want == l(k);
        let scope_ok = if !self.cloudlet_org.is_empty() {
            l("scope") == "Cloudlet"
                && eq(&self.cloudlet_org, "cloudletorg")
                && eq(&self.cloudlet_name, "cloudlet")
        } else if !self.app_org.is_empty() {
            eq(&self.app_org, "apporg")
                && eq(&self.app_name, "app")
                && eq(&self.app_ver, "appver")
                && eq(&self.cluster_org, "clusterorg")
                && eq(&self.cluster_name, "cluster")
        } else {
            true
        };
        (self.region.is_empty() || self.region == region)
            && rank(l("severity")) >= rank(&self.severity)
            && scope_ok
    }
}

/// RFC 3339 (UTC) of unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What a receiver is sent.
enum Message {
    /// JSON POSTed to the receiver's URL (webhook, Slack)
    Post(Value),
    /// an email: subject and text
    Mail(String, String),
}

/// The message for `alert` going to `status` (`firing` or `resolved`), in the receiver's form.
fn message(r: &Row, region: &str, alert: &Alert, status: &str) -> Message {
    let started = rfc3339(alert.active_at.as_ref().map_or(0, |t| t.seconds));
    let name = alert.labels.get("alertname").cloned().unwrap_or_default();
    let mut labels = alert.labels.clone();
    labels
        .entry("region".into())
        .or_insert_with(|| region.into());
    if r.kind == "webhook" {
        let ends = if status == "resolved" {
            rfc3339(edge_common::now_ms() / 1000)
        } else {
            "0001-01-01T00:00:00Z".into()
        };
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, alert.key_string().as_bytes());
        return Message::Post(json!({
            "version": "4",
            "status": status,
            "receiver": r.name,
            "groupLabels": {"alertname": name},
            "commonLabels": labels,
            "commonAnnotations": alert.annotations,
            "alerts": [{
                "status": status,
                "labels": labels,
                "annotations": alert.annotations,
                "startsAt": started,
                "endsAt": ends,
                "fingerprint": edge_common::vault::hex(&digest.as_ref()[..8]),
            }],
        }));
    }
    // Slack and email: a title and the labels as text, as Alertmanager's templates wrote them.
    let about = match (labels.get("app"), labels.get("cloudlet")) {
        (Some(app), _) => format!(
            "Application: {app} Version: {}",
            labels.get("appver").cloned().unwrap_or_default()
        ),
        (None, Some(c)) => format!("Cloudlet: {c}"),
        _ => String::new(),
    };
    let title = format!(
        "[{}:1] Alert for {}: {name} {about}",
        status.to_uppercase(),
        r.name
    );
    let slack = r.kind == "slack";
    let mut details: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            if slack {
                format!("• *{k}:* {v}")
            } else {
                format!("  {k}: {v}")
            }
        })
        .collect();
    details.sort();
    let description = alert
        .annotations
        .get("description")
        .cloned()
        .unwrap_or_default();
    let severity = labels.get("severity").cloned().unwrap_or_default();
    if slack {
        return Message::Post(json!({
            "channel": r.slack_channel,
            "username": "AlertManager",
            "text": title,
            "attachments": [{
                "title": title,
                "color": if status == "firing" { "danger" } else { "good" },
                "text": format!(
                    "*Alert:* {name} - {severity}\n*Description:* {description}\n*Started at:* {started}\n*Details:*\n{}",
                    details.join("\n")
                ),
            }],
        }));
    }
    Message::Mail(
        title,
        format!(
            "Alert: {name} - {severity}\nDescription: {description}\nStarted at: {started}\nDetails:\n{}\n",
            details.join("\n")
        ),
    )
}

/// Sends one email through the SMTP relay (no TLS or authentication: a relay on this host or site, such
/// as the operator's postfix, takes it from there).
async fn smtp_send(
    smtp: &crate::Smtp,
    to: &str,
    subject: &str,
    text: &str,
) -> std::result::Result<(), String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let connect = tokio::net::TcpStream::connect(&smtp.relay);
    let stream = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "connecting to the relay timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // One reply, possibly multi-line (`250-...` continues, `250 ...` ends), of the class `want`.
    let mut expect = async |want: char| -> std::result::Result<(), String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| "the relay did not answer".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("the relay closed the connection")?;
            if line.len() < 4 || !line.starts_with(want) {
                return Err(format!("the relay answered: {line}"));
            }
            if line.as_bytes()[3] == b' ' {
                return Ok(());
            }
        }
    };
    let header = |v: &str| v.replace(['\r', '\n'], " ");
    // CRLF lines, a leading dot doubled (RFC 5321 transparency).
    let body: String = text
        .lines()
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    let data = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}.\r\n",
        header(&smtp.from),
        header(to),
        header(subject),
    );
    expect('2').await?;
    for (cmd, want) in [
        ("EHLO edge-master-controller\r\n".to_string(), '2'),
        (format!("MAIL FROM:<{}>\r\n", header(&smtp.from)), '2'),
        (format!("RCPT TO:<{}>\r\n", header(to)), '2'),
        ("DATA\r\n".to_string(), '3'),
        (data, '2'),
        ("QUIT\r\n".to_string(), '2'),
    ] {
        write
            .write_all(cmd.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        expect(want).await?;
    }
    Ok(())
}

/// Delivers `msg` (to `url`, or by email to `to`), retried with backoff (1 s, 2 s, 4 s, 8 s) until it
/// is taken.
async fn deliver(mc: web::Data<Mc>, receiver: String, url: String, to: String, msg: Message) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=5 {
        let result = match (&msg, &mc.smtp) {
            (Message::Post(body), _) => match mc.http.post(&url).json(body).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            },
            (Message::Mail(subject, text), Some(smtp)) => smtp_send(smtp, &to, subject, text).await,
            (Message::Mail(..), None) => Err("no SMTP relay configured".into()),
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(receiver, attempt, error = %e, "alert notification not delivered")
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    tracing::error!(receiver, "alert notification dropped after 5 attempts");
}

async fn notify(mc: &web::Data<Mc>, region: &str, alert: &Alert, status: &str) -> Result<()> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alert_receivers"
    )))
    .fetch_all(&mc.db)
    .await?;
    let mut grants: HashMap<String, Grants> = HashMap::new();
    for r in rows.into_iter().filter(|r| r.wants(region, alert)) {
        if !grants.contains_key(&r.username) {
            grants.insert(r.username.clone(), grants_of(mc, &r.username).await?);
        }
        if !visible(&grants[&r.username], &alert.labels) {
            continue;
        }
        let url = match r.kind.as_str() {
            "email" => String::new(),
            _ => match mc
                .vault
                .read(&secret_path(&r.username, &r.name), "url")
                .await
            {
                Ok(Some(u)) => u,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(receiver = %r.name, error = %e, "reading an alert receiver's URL failed");
                    continue;
                }
            },
        };
        let msg = message(&r, region, alert, status);
        tokio::spawn(deliver(
            mc.clone(),
            r.name.clone(),
            url,
            r.email.clone(),
            msg,
        ));
    }
    Ok(())
}

/// One look at `region`: alerts that appeared are announced as firing, alerts that vanished as
/// resolved. A region that does not answer is skipped (nothing is resolved because of it).
async fn sweep(mc: &web::Data<Mc>, region: &str) -> Result<()> {
    let ch = mc.region(region).await?;
    let mut s = AlertApiClient::new(ch)
        .show_alert(Alert::default())
        .await
        .map_err(|e| crate::error::from_status(&e))?
        .into_inner();
    let mut now = HashMap::new();
    while let Some(a) = s
        .message()
        .await
        .map_err(|e| crate::error::from_status(&e))?
    {
        now.insert(a.key_string(), a);
    }
    let seen: Vec<(String, Value)> =
        sqlx::query_as("SELECT alert_key, alert FROM alerts_seen WHERE region = $1")
            .bind(region)
            .fetch_all(&mc.db)
            .await?;
    let seen_keys: std::collections::HashSet<&String> = seen.iter().map(|(k, _)| k).collect();
    for (key, a) in &now {
        if seen_keys.contains(key) {
            continue;
        }
        let first = sqlx::query(
            "INSERT INTO alerts_seen (region, alert_key, alert) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(region)
        .bind(key)
        .bind(serde_json::to_value(a).unwrap_or_default())
        .execute(&mc.db)
        .await?;
        if first.rows_affected() == 1 {
            notify(mc, region, a, "firing").await?;
        }
    }
    for (key, a) in &seen {
        if now.contains_key(key) {
            continue;
        }
        let gone = sqlx::query("DELETE FROM alerts_seen WHERE region = $1 AND alert_key = $2")
            .bind(region)
            .bind(key)
            .execute(&mc.db)
            .await?;
        if gone.rows_affected() == 1
            && let Ok(a) = serde_json::from_value::<Alert>(a.clone())
        {
            notify(mc, region, &a, "resolved").await?;
        }
    }
    Ok(())
}

/// Looks at every region's alerts every `every`, until aborted.
pub async fn run(mc: web::Data<Mc>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let regions: Vec<(String,)> = match sqlx::query_as("SELECT region FROM controllers")
            .fetch_all(&mc.db)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "listing regions for alerts failed");
                continue;
            }
        };
        for (region,) in regions {
            if let Err(e) = sweep(&mc, &region).await {
                tracing::debug!(region, error = %e.message, "alerts of the region not read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_in_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_040_000), "2026-11-30T12:00:00Z");
        assert_eq!(super::rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }
}
