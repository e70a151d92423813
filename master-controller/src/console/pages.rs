//! The console's pages. Each reads through the REST handlers with the session's caller and renders what
//! they return; forms and buttons name the REST route `console.js` posts to.

use edge_proto::edge::{
    Alert, App, AppInst, AppPort, Cloudlet, CloudletInfo, CloudletKey, CloudletState, ClusterInst,
    Flavor, HealthCheck, ImageType, LProto, PlatformType, TrackedState,
};

use super::*;
use crate::api::orgs::Org;
use crate::api::regions::Controller;
use crate::rbac::{self, MANAGE};

/// What every page knows: the request, the session, the org switcher's and region picker's choices.
pub(super) struct Ctx {
    mc: web::Data<Mc>,
    req: HttpRequest,
    s: Session,
    orgs: Vec<Org>,
    /// the chosen organization; `""`: all the user's
    org: String,
    regions: Vec<String>,
    region: String,
    /// the list page asked for (from 1)
    page: usize,
    path: String,
}

impl Ctx {
    fn caller(&self) -> &Caller {
        &self.s.caller
    }

    /// What the region's `Show<kind>` with `filter` returns to the caller.
    async fn show<T: DeserializeOwned + prost::Name>(
        &self,
        kind: &str,
        filter: Value,
    ) -> Result<Vec<T>> {
        show(
            &self.mc,
            &self.req,
            self.caller(),
            &self.region,
            kind,
            filter,
        )
        .await
    }

    /// Orgs of `kind` ("developer", "operator") where the caller may manage `resource`, the chosen one
    /// first.
    fn orgs_managing(&self, resource: &str, kind: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .orgs
            .iter()
            .filter(|o| kind.is_empty() || o.r#type == kind)
            .filter(|o| self.caller().grants.allows(resource, MANAGE, &o.name))
            .map(|o| (o.name.clone(), o.name.clone()))
            .collect();
        out.sort_by_key(|(o, _)| *o != self.org);
        out
    }

    /// A Show filter for objects whose key names their organization.
    fn key_filter(&self) -> Value {
        if self.org.is_empty() {
            json!({})
        } else {
            json!({"key": {"organization": self.org}})
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Query {
    #[serde(default)]
    page: Option<usize>,
}

const NAV: &[(&str, &str)] = &[
    ("cloudlets", "Cloudlets"),
    ("clusters", "Clusters"),
    ("apps", "Apps"),
    ("appinsts", "App instances"),
    ("flavors", "Flavors"),
    ("monitoring", "Monitoring"),
    ("access", "Users & orgs"),
    ("audit", "Audit log"),
];

pub(super) async fn render(
    mc: web::Data<Mc>,
    req: HttpRequest,
    page: web::Path<String>,
    q: web::Query<Query>,
) -> Result<HttpResponse> {
    let page = page.into_inner();
    let Some(&(_, title)) = NAV.iter().find(|(p, _)| *p == page) else {
        return Ok(document(
            HttpResponse::NotFound(),
            "Not found",
            "",
            r#"<main><h1>Not found</h1><p><a href="/console/">Back to the console</a></p></main>"#,
        ));
    };
    let Some(s) = session(&mc, &req).await? else {
        return Ok(redirect("/console/login"));
    };
    let orgs: Vec<Org> =
        call(api::orgs::org_show(mc.clone(), s.caller.clone(), Bytes::new()).await).await?;
    let regions: Vec<Controller> =
        call(api::regions::controller_show(mc.clone(), s.caller.clone(), Bytes::new()).await)
            .await
            .unwrap_or_default();
    let regions: Vec<String> = regions.into_iter().map(|c| c.region).collect();
    let org = cookie(&req, ORG)
        .filter(|o| orgs.iter().any(|x| x.name == *o))
        .unwrap_or_default()
        .to_string();
    let region = cookie(&req, REGION)
        .filter(|r| regions.iter().any(|x| x == r))
        .or(regions.first().map(String::as_str))
        .unwrap_or_default()
        .to_string();
    let cx = Ctx {
        mc,
        req,
        s,
        orgs,
        org,
        regions,
        region,
        page: q.page.unwrap_or(1).max(1),
        path: format!("/console/{page}"),
    };
    let region_page = !matches!(page.as_str(), "access" | "audit");
    let main = if region_page && cx.orgs.is_empty() && !cx.caller().grants.is_admin() {
        Ok(r#"<p class="empty" id="no-org">You belong to no organization yet: create one under <a href="/console/access">Users &amp; orgs</a>, or ask an organization's manager to add you.</p>"#.to_string())
    } else if region_page && cx.region.is_empty() {
        Ok(r#"<p class="empty">No region is registered yet: an admin adds one with <code>edgectl region create</code>.</p>"#.to_string())
    } else {
        match page.as_str() {
            "cloudlets" => cloudlets(&cx).await,
            "clusters" => clusters(&cx).await,
            "apps" => apps(&cx).await,
            "appinsts" => app_insts(&cx).await,
            "flavors" => flavors(&cx).await,
            "monitoring" => monitoring(&cx).await,
            "access" => access(&cx).await,
            _ => audit(&cx).await,
        }
    };
    let main = main.unwrap_or_else(|e| {
        format!(
            r#"<p class="form-error" id="page-error">{}</p>"#,
            esc(&e.message)
        )
    });
    Ok(layout(&cx, title, &main))
}

fn layout(cx: &Ctx, title: &str, main: &str) -> HttpResponse {
    let nav: String = NAV
        .iter()
        .map(|(p, t)| {
            let here = if cx.path.ends_with(p) {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="/console/{p}"{here}>{t}</a>"#)
        })
        .collect();
    let option = |v: &str, label: &str, chosen: &str| {
        let sel = if v == chosen { " selected" } else { "" };
        format!(r#"<option value="{}"{sel}>{}</option>"#, esc(v), esc(label))
    };
    let orgs: String = std::iter::once(option("", "All my organizations", &cx.org))
        .chain(
            cx.orgs
                .iter()
                .map(|o| option(&o.name, &format!("{} ({})", o.name, o.r#type), &cx.org)),
        )
        .collect();
    let regions: String = cx
        .regions
        .iter()
        .map(|r| option(r, r, &cx.region))
        .collect();
    let csrf = esc(&cx.s.csrf);
    let body = format!(
        r#"<header class="top"><a class="brand" href="/console/">Edge Cloud</a>
<form method="post" action="/console/select" class="pick"><input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="next" value="{path}">
<label>Organization <select name="org" id="org" data-autosubmit>{orgs}</select></label>
<label>Region <select name="region" id="region" data-autosubmit>{regions}</select></label>
<noscript><button type="submit">Apply</button></noscript></form>
<span class="user" id="user">{user}</span>
<form method="post" action="/console/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="logout" class="link">Log out</button></form>
</header><nav class="side">{nav}</nav>
<main><h1>{title}</h1><pre class="progress" id="progress" hidden></pre>{main}</main>"#,
        path = esc(&cx.path),
        user = esc(&cx.caller().username),
        title = esc(title),
    );
    document(
        HttpResponse::Ok(),
        title,
        &format!(r#"<meta name="csrf-token" content="{csrf}">"#),
        &body,
    )
}

// ----------------------------------------------------------------------------- building blocks

/// A list of rows (already HTML) with a header, paginated by the page's `page`.
fn table(cx: &Ctx, id: &str, head: &[&str], rows: Vec<String>, empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="empty" id="{id}-empty">{}</p>"#, esc(empty));
    }
    let pages = rows.len().div_ceil(PAGE);
    let page = cx.page.min(pages);
    let shown: String = rows
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    let head: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
    let mut pager = String::new();
    if pages > 1 {
        let link = |p: usize, label: &str| {
            format!(
                r#"<a href="{}?page={p}" rel="nofollow">{label}</a>"#,
                cx.path
            )
        };
        pager = format!(
            r#"<p class="pager">{} Page {page} of {pages} {}</p>"#,
            if page > 1 {
                link(page - 1, "← Previous")
            } else {
                String::new()
            },
            if page < pages {
                link(page + 1, "Next →")
            } else {
                String::new()
            },
        );
    }
    format!(
        r#"<div class="scroll"><table id="{id}"><thead><tr>{head}</tr></thead><tbody>{shown}</tbody></table></div>{pager}"#
    )
}

fn row(cells: &[String]) -> String {
    let cells: String = cells.iter().map(|c| format!("<td>{c}</td>")).collect();
    format!("<tr>{cells}</tr>")
}

/// A state or health badge: green when good, amber while changing, red on errors. The enum's prefix is
/// left out (`HEALTH_CHECK_OK` shows as `OK`).
fn badge(text: &str) -> String {
    let class = if text.ends_with("READY") || text.ends_with("_OK") {
        "ok"
    } else if text.contains("ERROR")
        || text.contains("FAIL")
        || text.contains("OFFLINE")
        || text == "firing"
    {
        "bad"
    } else if text.ends_with("UNKNOWN") || text.is_empty() {
        "none"
    } else {
        "busy"
    };
    let shown = ["HEALTH_CHECK_", "CLOUDLET_STATE_", "TRACKED_STATE_"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text)
        .replace('_', " ");
    format!(
        r#"<span class="badge {class}" title="{}">{}</span>"#,
        esc(text),
        esc(&shown)
    )
}

fn busy(state: i32) -> bool {
    matches!(
        TrackedState::try_from(state),
        Ok(TrackedState::CreateRequested
            | TrackedState::Creating
            | TrackedState::UpdateRequested
            | TrackedState::Updating
            | TrackedState::DeleteRequested
            | TrackedState::Deleting)
    )
}

fn state_name(state: i32) -> &'static str {
    TrackedState::try_from(state).map_or("TRACKED_STATE_UNKNOWN", |s| s.as_str_name())
}

/// One input of a form. Names are paths in the posted object (`key.name`).
enum Input {
    Text(&'static str),
    Number,
    /// a choice of text values
    Select(Vec<(String, String)>),
    /// a choice of JSON values (an object's key, an enum's number)
    Json(Vec<(String, String)>),
}

struct Field {
    name: &'static str,
    label: &'static str,
    input: Input,
    /// words of an API message that name this field (lowercase, comma-separated): the message is
    /// shown next to the first field it names
    hints: &'static str,
}

fn field(name: &'static str, label: &'static str, input: Input, hints: &'static str) -> Field {
    Field {
        name,
        label,
        input,
        hints,
    }
}

/// A choice among text values shown as they are.
fn choice(values: &[&str]) -> Input {
    Input::Select(
        values
            .iter()
            .map(|v| (v.to_string(), v.to_string()))
            .collect(),
    )
}

/// The organization an object is created in (the orgs where the caller may, the chosen one first).
fn org_field(orgs: Vec<(String, String)>) -> Field {
    field(
        "key.organization",
        "Organization",
        Input::Select(orgs),
        "organization",
    )
}

/// A form `console.js` posts to the REST route `api` (under `/auth`); with `kind`, the body is
/// `{"Region": <region>, kind: <object>}` as the `ctrl` routes take it, else the object itself.
fn form(cx: &Ctx, id: &str, api: &str, kind: &str, title: &str, fields: Vec<Field>) -> String {
    let mut inputs = String::new();
    for f in fields {
        let attrs = format!(
            r#"name="{}" id="{id}-{}""#,
            f.name,
            f.name.replace('.', "-")
        );
        let options = |opts: &[(String, String)]| -> String {
            opts.iter()
                .map(|(v, l)| format!(r#"<option value="{}">{}</option>"#, esc(v), esc(l)))
                .collect()
        };
        let control = match &f.input {
            Input::Text(default) => {
                format!(r#"<input {attrs} value="{}">"#, esc(default))
            }
            Input::Number => format!(r#"<input {attrs} type="number" min="0" data-type="number">"#),
            Input::Select(opts) => format!("<select {attrs}>{}</select>", options(opts)),
            Input::Json(opts) => {
                format!(
                    r#"<select {attrs} data-type="json">{}</select>"#,
                    options(opts)
                )
            }
        };
        let _ = write!(
            inputs,
            r#"<label class="field" data-hints="{}"><span>{}</span>{control}<small class="err" hidden></small></label>"#,
            f.hints, f.label
        );
    }
    format!(
        r#"<form class="card api" id="{id}" data-api="{api}" data-kind="{kind}" data-region="{region}">
<h2>{title}</h2><p class="form-error" hidden></p><div class="fields">{inputs}</div>
<button type="submit">{title}</button><pre class="progress" hidden></pre></form>"#,
        region = esc(&cx.region)
    )
}

/// A button that posts `body` to the REST route `api` (a second click confirms).
fn action(cx: &Ctx, api: &str, kind: &str, body: &Value, label: &str) -> String {
    // What it acts on, for the page's "Last operation" line.
    let key = &body["key"];
    let what = match (key["organization"].as_str(), key["name"].as_str()) {
        (Some(org), Some(name)) => format!("{org}/{name}"),
        (None, Some(name)) => name.to_string(),
        _ => ["Name", "Id", "username"]
            .iter()
            .find_map(|f| body[f].as_str())
            .unwrap_or_default()
            .to_string(),
    };
    format!(
        r#"<button type="button" class="danger" data-api="{api}" data-kind="{kind}" data-region="{}" data-body="{}" data-what="{label} {}">{label}</button>"#,
        esc(&cx.region),
        esc(&body.to_string()),
        esc(&what),
    )
}

fn key_json<T: serde::Serialize>(k: &T) -> String {
    serde_json::to_string(k).unwrap_or_default()
}

fn cloudlet_name(k: &Option<CloudletKey>) -> String {
    k.as_ref()
        .map(|k| format!("{}/{}", k.organization, k.name))
        .unwrap_or_default()
}

// ----------------------------------------------------------------------------- pages

async fn cloudlets(cx: &Ctx) -> Result<String> {
    let mut filter = json!({});
    if cx
        .orgs
        .iter()
        .any(|o| o.name == cx.org && o.r#type == "operator")
    {
        filter = cx.key_filter();
    }
    let cloudlets: Vec<Cloudlet> = cx.show("Cloudlet", filter.clone()).await?;
    // Operators (and admins) also see what their CRMs report; for others the call is refused.
    let infos: Vec<CloudletInfo> = cx.show("CloudletInfo", filter).await.unwrap_or_default();
    let info_of = |k: &Option<CloudletKey>| infos.iter().find(|i| i.key == *k);
    let state_of = |c: &Cloudlet| match info_of(&c.key) {
        Some(i) => CloudletState::try_from(i.state)
            .map_or("CLOUDLET_STATE_UNKNOWN", |s| s.as_str_name())
            .to_string(),
        None => state_name(c.state).to_string(),
    };
    // An equirectangular world map: 2 px per degree.
    let mut map = String::from(
        r#"<svg id="map" class="map" viewBox="0 0 720 360" role="img" aria-label="Cloudlets on a world map"><rect width="720" height="360" class="sea"/>"#,
    );
    for coast in LAND {
        let points: Vec<String> = coast
            .iter()
            .map(|(lon, lat)| format!("{},{}", (lon + 180) * 2, (90 - lat) * 2))
            .collect();
        let _ = write!(
            map,
            r#"<polygon class="land" points="{}"/>"#,
            points.join(" ")
        );
    }
    for lon in (-150..=150).step_by(30) {
        let x = (lon + 180) * 2;
        let _ = write!(
            map,
            r#"<line x1="{x}" y1="0" x2="{x}" y2="360" class="grid"/>"#
        );
    }
    for lat in (-60..=60).step_by(30) {
        let y = (90 - lat) * 2;
        let _ = write!(
            map,
            r#"<line x1="0" y1="{y}" x2="720" y2="{y}" class="grid"/>"#
        );
    }
    for c in &cloudlets {
        let loc = c.location.unwrap_or_default();
        let (x, y) = ((loc.longitude + 180.0) * 2.0, (90.0 - loc.latitude) * 2.0);
        let name = cloudlet_name(&c.key);
        let state = state_of(c);
        let class = if state.ends_with("READY") {
            "ok"
        } else if state.contains("ERROR") || state.contains("OFFLINE") {
            "bad"
        } else {
            "busy"
        };
        let _ = write!(
            map,
            r#"<g class="pin {class}" data-cloudlet="{n}"><circle cx="{x:.1}" cy="{y:.1}" r="6"><title>{n}: {s}</title></circle><text x="{tx:.1}" y="{y:.1}">{short}</text></g>"#,
            n = esc(&name),
            s = esc(&state),
            tx = x + 9.0,
            short = esc(&c.key.as_ref().map(|k| k.name.clone()).unwrap_or_default()),
        );
    }
    map.push_str("</svg>");
    let rows = cloudlets
        .iter()
        .map(|c| {
            let loc = c.location.unwrap_or_default();
            let usage = info_of(&c.key)
                .map(|i| {
                    i.resources
                        .iter()
                        .map(|r| match (r.used * 100).checked_div(r.total) {
                            Some(pct) => format!(
                                r#"<div class="usage"><span>{} {} / {}</span><meter min="0" max="100" value="{}"></meter></div>"#,
                                esc(&r.name),
                                r.used,
                                r.total,
                                pct.min(100)
                            ),
                            None => format!(
                                r#"<div class="usage"><span>{} {} (no quota)</span></div>"#,
                                esc(&r.name),
                                r.used
                            ),
                        })
                        .collect::<String>()
                })
                .unwrap_or_else(|| "–".into());
            row(&[
                esc(&cloudlet_name(&c.key)),
                format!("{:.2}, {:.2}", loc.latitude, loc.longitude),
                esc(PlatformType::try_from(c.platform_type)
                    .map_or("", |p| p.as_str_name().trim_start_matches("PLATFORM_TYPE_"))),
                badge(&state_of(c)),
                usage,
            ])
        })
        .collect();
    Ok(format!(
        "{map}{}",
        table(
            cx,
            "cloudlets",
            &[
                "Cloudlet",
                "Location",
                "Platform",
                "State",
                "Resources used / quota"
            ],
            rows,
            "No cloudlet in this region yet."
        )
    ))
}

/// Coarse outlines of the land masses (longitude, latitude), enough to place cloudlets on a map.
const LAND: &[&[(i32, i32)]] = &[
    // North America
    &[
        (-168, 65),
        (-140, 70),
        (-95, 72),
        (-80, 63),
        (-60, 55),
        (-52, 47),
        (-70, 43),
        (-76, 35),
        (-81, 25),
        (-97, 26),
        (-97, 18),
        (-87, 15),
        (-78, 8),
        (-83, 8),
        (-92, 14),
        (-105, 20),
        (-117, 32),
        (-124, 40),
        (-125, 49),
        (-135, 58),
        (-152, 58),
        (-165, 60),
    ],
    // Greenland
    &[
        (-55, 60),
        (-42, 60),
        (-20, 70),
        (-18, 78),
        (-30, 83),
        (-60, 82),
        (-70, 77),
        (-55, 70),
    ],
    // South America
    &[
        (-78, 8),
        (-60, 10),
        (-50, 0),
        (-35, -6),
        (-40, -22),
        (-48, -28),
        (-58, -38),
        (-65, -55),
        (-72, -50),
        (-74, -40),
        (-71, -18),
        (-81, -5),
        (-80, 2),
    ],
    // Europe
    &[
        (-10, 36),
        (-9, 43),
        (-2, 44),
        (-5, 48),
        (2, 51),
        (8, 54),
        (10, 57),
        (5, 62),
        (15, 69),
        (28, 71),
        (40, 67),
        (30, 60),
        (28, 46),
        (41, 41),
        (26, 40),
        (22, 37),
        (16, 38),
        (12, 44),
        (3, 43),
    ],
    // Great Britain
    &[(-5, 50), (1, 51), (-2, 56), (-5, 58), (-6, 55)],
    // Africa
    &[
        (-17, 15),
        (-17, 21),
        (-10, 30),
        (-5, 36),
        (10, 37),
        (20, 31),
        (32, 31),
        (34, 28),
        (43, 12),
        (51, 12),
        (40, -3),
        (40, -15),
        (33, -25),
        (20, -35),
        (15, -25),
        (12, -10),
        (9, 4),
        (-8, 4),
        (-15, 10),
    ],
    // Asia
    &[
        (28, 46),
        (40, 41),
        (36, 36),
        (34, 28),
        (44, 13),
        (52, 16),
        (58, 23),
        (60, 25),
        (67, 25),
        (73, 20),
        (77, 8),
        (80, 15),
        (87, 22),
        (92, 22),
        (98, 16),
        (100, 3),
        (104, 1),
        (106, 10),
        (109, 21),
        (122, 30),
        (122, 40),
        (130, 42),
        (140, 52),
        (142, 60),
        (160, 62),
        (175, 65),
        (180, 68),
        (150, 72),
        (120, 74),
        (100, 78),
        (80, 73),
        (70, 68),
        (60, 69),
        (45, 68),
        (40, 67),
        (30, 60),
    ],
    // Japan
    &[
        (130, 31),
        (136, 34),
        (140, 36),
        (142, 43),
        (140, 41),
        (135, 35),
    ],
    // Australia
    &[
        (114, -22),
        (122, -18),
        (130, -12),
        (137, -12),
        (142, -10),
        (146, -19),
        (153, -25),
        (150, -37),
        (140, -38),
        (131, -32),
        (115, -34),
    ],
    // New Zealand
    &[(167, -46), (174, -41), (178, -38), (173, -35), (172, -41)],
];

async fn flavor_choices(cx: &Ctx) -> Result<Vec<(String, String)>> {
    let flavors: Vec<Flavor> = cx.show("Flavor", json!({})).await?;
    Ok(flavors
        .iter()
        .filter_map(|f| f.key.as_ref())
        .map(|k| (key_json(k), k.name.clone()))
        .collect())
}

async fn clusters(cx: &Ctx) -> Result<String> {
    let clusters: Vec<ClusterInst> = cx.show("ClusterInst", cx.key_filter()).await?;
    let rows = clusters
        .iter()
        .map(|c| {
            let key = c.key.clone().unwrap_or_default();
            row(&[
                esc(&format!("{}/{}", key.organization, key.name)),
                esc(&cloudlet_name(&c.cloudlet_key)),
                esc(&c
                    .flavor
                    .as_ref()
                    .map(|f| f.name.clone())
                    .unwrap_or_default()),
                esc(&c.deployment),
                badge(state_name(c.state)) + &esc(&c.errors.join("; ")),
                action(
                    cx,
                    "ctrl/DeleteClusterInst",
                    "ClusterInst",
                    &json!({"key": key}),
                    "Delete",
                ),
            ])
        })
        .collect();
    let mut out = table(
        cx,
        "clusters",
        &["Cluster", "Cloudlet", "Flavor", "Deployment", "State", ""],
        rows,
        "No cluster instance yet.",
    );
    let orgs = cx.orgs_managing(rbac::CLUSTERINSTS, "developer");
    if !orgs.is_empty() {
        let cloudlets: Vec<Cloudlet> = cx.show("Cloudlet", json!({})).await?;
        let cloudlets = cloudlets
            .iter()
            .filter_map(|c| c.key.as_ref())
            .map(|k| (key_json(k), format!("{}/{}", k.organization, k.name)))
            .collect();
        out += &form(
            cx,
            "create-cluster",
            "ctrl/CreateClusterInst",
            "ClusterInst",
            "Create cluster",
            vec![
                org_field(orgs),
                field(
                    "key.name",
                    "Name",
                    Input::Text(""),
                    "cluster name,clusterinst name,invalid name",
                ),
                field(
                    "cloudlet_key",
                    "Cloudlet",
                    Input::Json(cloudlets),
                    "cloudlet",
                ),
                field(
                    "flavor",
                    "Flavor",
                    Input::Json(flavor_choices(cx).await?),
                    "flavor",
                ),
                field(
                    "deployment",
                    "Deployment",
                    choice(&["docker", "kubernetes"]),
                    "deployment",
                ),
            ],
        );
    }
    Ok(out)
}

async fn apps(cx: &Ctx) -> Result<String> {
    let apps: Vec<App> = cx.show("App", cx.key_filter()).await?;
    let rows = apps
        .iter()
        .map(|a| {
            let key = a.key.clone().unwrap_or_default();
            row(&[
                esc(&format!("{}/{}", key.organization, key.name)),
                esc(&key.version),
                format!("<code>{}</code>", esc(&a.image_path)),
                esc(&a.deployment),
                esc(&a.access_ports),
                action(cx, "ctrl/DeleteApp", "App", &json!({"key": key}), "Delete"),
            ])
        })
        .collect();
    let mut out = table(
        cx,
        "apps",
        &["App", "Version", "Image", "Deployment", "Ports", ""],
        rows,
        "No app yet.",
    );
    let orgs = cx.orgs_managing(rbac::APPS, "developer");
    if !orgs.is_empty() {
        let image_types = [ImageType::Docker, ImageType::Qcow, ImageType::Helm]
            .iter()
            .map(|t| {
                (
                    (*t as i32).to_string(),
                    t.as_str_name()
                        .trim_start_matches("IMAGE_TYPE_")
                        .to_string(),
                )
            })
            .collect();
        out += &form(
            cx,
            "create-app",
            "ctrl/CreateApp",
            "App",
            "Create app",
            vec![
                org_field(orgs),
                field(
                    "key.name",
                    "Name",
                    Input::Text(""),
                    "app name,invalid name,name",
                ),
                field("key.version", "Version", Input::Text("1.0"), "version"),
                field(
                    "deployment",
                    "Deployment",
                    choice(&["docker", "kubernetes", "vm", "helm"]),
                    "deployment",
                ),
                field(
                    "image_type",
                    "Image type",
                    Input::Json(image_types),
                    "imagetype,image type",
                ),
                field(
                    "image_path",
                    "Image",
                    Input::Text(""),
                    "imagepath,image path,image",
                ),
                field(
                    "access_ports",
                    "Ports (e.g. tcp:80)",
                    Input::Text("tcp:80"),
                    "accessports,access ports,port",
                ),
                field(
                    "default_flavor",
                    "Flavor",
                    Input::Json(flavor_choices(cx).await?),
                    "flavor",
                ),
                field("command", "Command (optional)", Input::Text(""), "command"),
            ],
        );
    }
    Ok(out)
}

/// Where a mapped port is reached: `http://` for HTTP ports, `host:port` otherwise.
fn port_url(inst: &AppInst, p: &AppPort) -> String {
    let host = if inst.uri.is_empty() { "?" } else { &inst.uri };
    match (LProto::try_from(p.proto), p.http) {
        (_, true) => format!("http://{host}:{}", p.public_port),
        (Ok(LProto::Udp), _) => format!("udp://{host}:{}", p.public_port),
        _ => format!("{host}:{}", p.public_port),
    }
}

async fn app_insts(cx: &Ctx) -> Result<String> {
    let insts: Vec<AppInst> = cx.show("AppInst", cx.key_filter()).await?;
    let changing = insts.iter().any(|i| busy(i.state));
    let rows = insts
        .iter()
        .map(|i| {
            let key = i.key.clone().unwrap_or_default();
            let app = i.app_key.clone().unwrap_or_default();
            let cluster = i.cluster_key.as_ref().map(|c| c.name.clone()).unwrap_or_default();
            let ports: String = i
                .mapped_ports
                .iter()
                .map(|p| {
                    let url = port_url(i, p);
                    format!(
                        r#"<div class="port"><code>{u}</code> <button type="button" class="copy" data-copy="{u}">Copy</button></div>"#,
                        u = esc(&url)
                    )
                })
                .collect();
            let health = HealthCheck::try_from(i.health_check)
                .map_or("HEALTH_CHECK_UNKNOWN", |h| h.as_str_name());
            let detail = i.errors.last().or(i.status.last()).cloned().unwrap_or_default();
            format!(
                r#"<tr data-appinst="{name}"><td>{org}/{name}</td><td>{app} {ver}</td><td>{cluster} @ {cloudlet}</td><td class="state">{state}<small>{detail}</small></td><td>{health}</td><td>{ports}</td><td>{delete}</td></tr>"#,
                name = esc(&key.name),
                org = esc(&key.organization),
                app = esc(&app.name),
                ver = esc(&app.version),
                cluster = esc(&cluster),
                cloudlet = esc(&cloudlet_name(&i.cloudlet_key)),
                state = badge(state_name(i.state)),
                detail = esc(&detail),
                health = badge(health),
                delete = action(cx, "ctrl/DeleteAppInst", "AppInst", &json!({"key": key}), "Delete"),
            )
        })
        .collect();
    let mut out = table(
        cx,
        "appinsts",
        &[
            "Instance",
            "App",
            "Cluster",
            "State",
            "Health",
            "Reach it at",
            "",
        ],
        rows,
        "No app instance yet.",
    );
    if changing {
        // console.js reloads the page while something is changing.
        out.push_str(r#"<p class="note" id="refreshing" data-refresh="2">Updating while instances change…</p>"#);
    }
    let orgs = cx.orgs_managing(rbac::APPINSTS, "developer");
    if !orgs.is_empty() {
        let apps: Vec<App> = cx.show("App", cx.key_filter()).await?;
        let clusters: Vec<ClusterInst> = cx.show("ClusterInst", cx.key_filter()).await?;
        let apps = apps
            .iter()
            .filter_map(|a| a.key.as_ref())
            .map(|k| {
                (
                    key_json(k),
                    format!("{}/{} {}", k.organization, k.name, k.version),
                )
            })
            .collect();
        let clusters = clusters
            .iter()
            .filter_map(|c| Some((c.key.as_ref()?, c)))
            .map(|(k, c)| {
                (
                    key_json(k),
                    format!(
                        "{}/{} @ {}",
                        k.organization,
                        k.name,
                        cloudlet_name(&c.cloudlet_key)
                    ),
                )
            })
            .collect();
        out += &form(
            cx,
            "create-appinst",
            "ctrl/CreateAppInst",
            "AppInst",
            "Deploy app instance",
            vec![
                org_field(orgs),
                field(
                    "key.name",
                    "Name",
                    Input::Text(""),
                    "appinst name,instance name,invalid name",
                ),
                field("app_key", "App", Input::Json(apps), "app"),
                field("cluster_key", "Cluster", Input::Json(clusters), "cluster"),
            ],
        );
    }
    Ok(out)
}

async fn flavors(cx: &Ctx) -> Result<String> {
    let flavors: Vec<Flavor> = cx.show("Flavor", json!({})).await?;
    let admin = cx.caller().grants.allows(rbac::FLAVORS, MANAGE, "");
    let rows = flavors
        .iter()
        .map(|f| {
            let key = f.key.clone().unwrap_or_default();
            let delete = if admin {
                action(
                    cx,
                    "ctrl/DeleteFlavor",
                    "Flavor",
                    &json!({"key": key}),
                    "Delete",
                )
            } else {
                String::new()
            };
            row(&[
                esc(&key.name),
                f.vcpus.to_string(),
                format!("{} MB", f.ram),
                format!("{} GB", f.disk),
                delete,
            ])
        })
        .collect();
    let mut out = table(
        cx,
        "flavors",
        &["Flavor", "vCPUs", "RAM", "Disk", ""],
        rows,
        "No flavor yet.",
    );
    if admin {
        out += &form(
            cx,
            "create-flavor",
            "ctrl/CreateFlavor",
            "Flavor",
            "Create flavor",
            vec![
                field("key.name", "Name", Input::Text(""), "flavor name,name"),
                field("vcpus", "vCPUs", Input::Number, "vcpus"),
                field("ram", "RAM (MB)", Input::Number, "ram"),
                field("disk", "Disk (GB)", Input::Number, "disk"),
            ],
        );
    }
    Ok(out)
}

/// A line chart of one measurement: a polyline per series, oldest point left.
fn chart(id: &str, title: &str, series: &[(String, Vec<f64>)]) -> String {
    let (w, h) = (600.0, 160.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut lines = String::new();
    let mut legend = String::new();
    for (n, (name, values)) in series.iter().enumerate() {
        let step = w / (values.len().max(2) - 1) as f64;
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, h - v / max * (h - 10.0)))
            .collect();
        let _ = write!(
            lines,
            r#"<polyline class="s{}" points="{}"/>"#,
            n % 6,
            points.join(" ")
        );
        let _ = write!(legend, r#"<li class="s{}">{}</li>"#, n % 6, esc(name));
    }
    format!(
        r#"<figure class="chart" id="{id}"><figcaption>{} (max {max:.3})</figcaption><svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{lines}</svg><ul class="legend">{legend}</ul></figure>"#,
        esc(title)
    )
}

/// Series of a metrics reply (`{"data":[{"Series":[{"columns","values"}]}]}`, newest first) as one
/// line per instance: values of `field`, oldest first.
fn series_of(reply: &Value, field: &str) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for s in reply["data"][0]["Series"].as_array().into_iter().flatten() {
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let at = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(v), app, cluster) = (at(field), at("app"), at("cluster")) else {
            continue;
        };
        for point in s["values"].as_array().into_iter().flatten().rev() {
            let text = |i: Option<usize>| {
                i.and_then(|i| point[i].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let name = format!("{} on {}", text(app), text(cluster));
            let value = point[v].as_f64().unwrap_or_default();
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => out.push((name, vec![value])),
            }
        }
    }
    out
}

async fn monitoring(cx: &Ctx) -> Result<String> {
    let alerts: Vec<Alert> = cx.show("Alert", json!({})).await?;
    let rows = alerts
        .iter()
        .map(|a| {
            let labels: String = a
                .labels
                .iter()
                .map(|(k, v)| format!("{}={} ", esc(k), esc(v)))
                .collect();
            row(&[
                esc(a.labels.get("alertname").map_or("", String::as_str)),
                badge(&a.state),
                esc(a
                    .annotations
                    .get("description")
                    .or(a.annotations.get("title"))
                    .map_or("", String::as_str)),
                format!("<small>{labels}</small>"),
            ])
        })
        .collect();
    let mut out = table(
        cx,
        "alerts",
        &["Alert", "State", "Description", "Labels"],
        rows,
        "No alert is firing.",
    );
    // App metrics of the chosen (or first) developer organization the caller may view.
    let org = std::iter::once(cx.org.as_str())
        .chain(cx.orgs.iter().map(|o| o.name.as_str()))
        .find(|o| {
            cx.orgs
                .iter()
                .any(|x| x.name == *o && x.r#type == "developer")
                && cx.caller().grants.allows(rbac::APPINSTS, rbac::VIEW, o)
        });
    let Some(org) = org else {
        return Ok(out);
    };
    let _ = write!(out, "<h2>App instances of {}</h2>", esc(org));
    for (selector, field, title) in [("cpu", "cpu", "CPU (%)"), ("mem", "mem", "Memory (bytes)")] {
        let body = json!({"region": cx.region, "appinst": {"app_key": {"organization": org}}, "selector": selector, "limit": 120});
        let reply = api::monitor::metrics_app(
            cx.mc.clone(),
            cx.caller().clone(),
            Bytes::from(body.to_string()),
        )
        .await;
        out += &match reply {
            Ok(r) => {
                let series = series_of(&json_body(r).await?, field);
                if series.is_empty() {
                    format!(r#"<p class="empty">No {title} measured yet.</p>"#)
                } else {
                    chart(&format!("chart-{selector}"), title, &series)
                }
            }
            Err(e) => format!(r#"<p class="form-error">{}</p>"#, esc(&e.message)),
        };
    }
    Ok(out)
}

async fn access(cx: &Ctx) -> Result<String> {
    let c = cx.caller();
    let org_rows = cx
        .orgs
        .iter()
        .map(|o| {
            let delete = if c.grants.allows(rbac::USERS, MANAGE, &o.name) {
                action(cx, "org/delete", "", &json!({"Name": o.name}), "Delete")
            } else {
                String::new()
            };
            row(&[
                esc(&o.name),
                esc(&o.r#type),
                esc(&o.address),
                esc(&o.phone),
                delete,
            ])
        })
        .collect();
    let mut out = String::from("<h2>Organizations</h2>");
    out += &table(
        cx,
        "orgs",
        &["Organization", "Type", "Address", "Phone", ""],
        org_rows,
        "You belong to no organization yet.",
    );
    out += &form(
        cx,
        "create-org",
        "org/create",
        "",
        "Create organization",
        vec![
            field("Name", "Name", Input::Text(""), "name"),
            field("Type", "Type", choice(&["developer", "operator"]), "type"),
            field("Address", "Address", Input::Text(""), "address"),
            field("Phone", "Phone", Input::Text(""), "phone"),
        ],
    );

    let users: Vec<Value> =
        call(api::accounts::user_show(cx.mc.clone(), c.clone(), Bytes::new()).await).await?;
    let user_rows = users
        .iter()
        .map(|u| {
            row(&[
                esc(u["Name"].as_str().unwrap_or_default()),
                esc(u["Email"].as_str().unwrap_or_default()),
                if u["Locked"].as_bool().unwrap_or_default() {
                    badge("LOCKED")
                } else {
                    String::new()
                },
            ])
        })
        .collect();
    out += "<h2>Users</h2>";
    out += &table(
        cx,
        "users",
        &["User", "Email", ""],
        user_rows,
        "No user to show.",
    );

    let roles: Vec<crate::api::roles::Role> =
        call(api::roles::role_assignments(cx.mc.clone(), c.clone()).await).await?;
    let role_rows = roles
        .iter()
        .map(|r| {
            let remove = if c.grants.allows(rbac::USERS, MANAGE, &r.org) {
                action(
                    cx,
                    "role/removeuser",
                    "",
                    &json!({"org": r.org, "username": r.username, "role": r.role}),
                    "Remove",
                )
            } else {
                String::new()
            };
            row(&[esc(&r.org), esc(&r.username), esc(&r.role), remove])
        })
        .collect();
    out += "<h2>Roles</h2>";
    out += &table(
        cx,
        "roles",
        &["Organization", "User", "Role", ""],
        role_rows,
        "No role to show.",
    );
    let managed = cx.orgs_managing(rbac::USERS, "");
    if !managed.is_empty() {
        let roles: Vec<&str> = rbac::ROLES
            .iter()
            .copied()
            .filter(|r| !rbac::is_admin_role(r))
            .collect();
        out += &form(
            cx,
            "add-role",
            "role/adduser",
            "",
            "Give a role",
            vec![
                field("org", "Organization", Input::Select(managed), "org"),
                field("username", "User", Input::Text(""), "user"),
                field("role", "Role", choice(&roles), "role"),
            ],
        );
    }

    let keys: Vec<Value> = call(api::apikeys::apikey_show(cx.mc.clone(), c.clone()).await).await?;
    let key_rows = keys
        .iter()
        .map(|k| {
            let id = k["Id"].as_str().unwrap_or_default();
            row(&[
                format!("<code>{}</code>", esc(id)),
                esc(k["Org"].as_str().unwrap_or_default()),
                esc(k["Description"].as_str().unwrap_or_default()),
                action(cx, "user/delete/apikey", "", &json!({"Id": id}), "Delete"),
            ])
        })
        .collect();
    out += "<h2>Your API keys</h2>";
    out += &table(
        cx,
        "apikeys",
        &["Key id", "Organization", "Description", ""],
        key_rows,
        "You have no API key (create them with edgectl).",
    );
    Ok(out)
}

async fn audit(cx: &Ctx) -> Result<String> {
    let c = cx.caller();
    let entries: Vec<Value> = if cx.org.is_empty() {
        call(api::audit_log::audit_self(cx.mc.clone(), c.clone(), None).await).await?
    } else {
        let q = serde_json::from_value(json!({"org": cx.org})).expect("an audit query");
        call(api::audit_log::audit_org(cx.mc.clone(), c.clone(), crate::json::Json(q)).await)
            .await?
    };
    let rows = entries
        .iter()
        .map(|e| {
            let s = |k: &str| esc(e[k].as_str().unwrap_or_default());
            let time = e["starttime"].as_i64().map(|us| {
                let secs = us / 1_000_000;
                api::alerts::rfc3339(secs)
            });
            row(&[
                esc(&time.unwrap_or_default()),
                s("username"),
                s("org"),
                format!("<code>{}</code>", s("operationname")),
                e["status"].to_string(),
                s("clientip"),
                s("response"),
            ])
        })
        .collect();
    let whose = if cx.org.is_empty() {
        "Your own calls; choose an organization to see its calls.".to_string()
    } else {
        format!("Calls on organization {}.", esc(&cx.org))
    };
    Ok(format!(
        r#"<p class="note">{whose}</p>{}"#,
        table(
            cx,
            "audit",
            &[
                "Time",
                "User",
                "Org",
                "Operation",
                "Status",
                "Client",
                "Error"
            ],
            rows,
            "Nothing recorded."
        )
    ))
}
