//! The DME's in-memory view of its region, fed by notify: Apps, AppInsts, Cloudlets, CloudletInfos and
//! OperatorCodes. Every lookup is served from here; the DME keeps answering while the controller is down.
//!
//! FindCloudlet looks only at the App's own instances: the index keeps the usable ones of each App (READY,
//! healthy, on a cloudlet that is READY) grouped by cloudlet with its position, built on the first lookup
//! after a change that may alter it, and picks the closest few in one pass over those cloudlets without
//! cloning or allocating per instance.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use edge_common::Keyed;
use edge_common::notify_client::Sink;
use edge_proto::edge::{
    App, AppInst, AppKey, ChangeAction, Cloudlet, CloudletInfo, CloudletState, HealthCheck,
    OperatorCode, TrackedState, change,
};
use tokio::sync::broadcast;

/// Mean earth radius used for great-circle distances, km.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Operators that are public clouds (MobiledgeX's `cloudcommon` names): their instances are candidates
/// for clients of any carrier, `PUBLIC_CLOUD_PADDING_KM` farther than they are unless the client asked
/// for that cloud, so that a cellular operator's instance at a similar distance wins.
const PUBLIC_CLOUDS: [&str; 3] = ["gcp", "azure", "aws"];
const PUBLIC_CLOUD_PADDING_KM: f64 = 100.0;

/// The haversine's inner term of a great-circle distance (the ranking key of candidates).
fn inner_term(km: f64) -> f64 {
    (km.min(std::f64::consts::PI * EARTH_RADIUS_KM) / (2.0 * EARTH_RADIUS_KM))
        .sin()
        .powi(2)
}

/// A location as a point on the unit sphere.
fn unit(latitude: f64, longitude: f64) -> [f64; 3] {
    let (lat, lon) = (latitude.to_radians(), longitude.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// The haversine's inner term between two points on the unit sphere, sin²(θ/2) = (1 − cos θ) / 2, from
/// their dot product: no trigonometry per candidate.
fn inner_term_between(p: &[f64; 3], q: &[f64; 3]) -> f64 {
    ((1.0 - (p[0] * q[0] + p[1] * q[1] + p[2] * q[2])) / 2.0).clamp(0.0, 1.0)
}

/// The great-circle distance of a haversine inner term.
fn km_of(a: f64) -> f64 {
    2.0 * EARTH_RADIUS_KM * a.sqrt().atan2((1.0 - a).sqrt())
}

/// Objects are shared (`Arc`): a call takes what it needs without copying them.
#[derive(Default)]
struct State {
    apps: HashMap<String, Arc<App>>,
    insts: HashMap<String, Arc<AppInst>>,
    /// AppInst keys of each App key
    by_app: HashMap<String, BTreeSet<String>>,
    cloudlets: HashMap<String, Arc<Cloudlet>>,
    infos: HashMap<String, Arc<CloudletInfo>>,
    operator_codes: HashMap<String, Arc<OperatorCode>>,
}

/// An AppInst a client may use, with its cloudlet and distance from the client.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub inst: Arc<AppInst>,
    pub cloudlet: Arc<Cloudlet>,
    pub distance_km: f64,
}

/// A cloudlet with usable instances of an App, as FindCloudlet ranks them (instances on one cloudlet
/// share its distance).
struct Site {
    /// the usable instances' keys, sorted
    insts: Vec<String>,
    cloudlet: String,
    operator: String,
    public_cloud: bool,
    /// the cloudlet's location on the unit sphere
    at: [f64; 3],
}

pub struct Index {
    state: RwLock<State>,
    /// cloudlets with usable instances, per App key; an entry goes whenever something it depends on
    /// changes
    usable: Mutex<HashMap<String, Arc<Vec<Site>>>>,
    /// Fires on every change (edge-event streams re-evaluate their instance).
    changed: broadcast::Sender<()>,
    /// set once the first full sync from the controller ended (the DME's `/readyz`)
    pub synced: edge_common::ops::Readiness,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            usable: Mutex::default(),
            changed: broadcast::channel(64).0,
            synced: Default::default(),
        }
    }
}

/// Great-circle (haversine) distance between two points, km.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    km_of((dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2))
}

impl Index {
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn app(&self, key: &AppKey) -> Option<Arc<App>> {
        self.state
            .read()
            .expect("index lock")
            .apps
            .get(&key.key_string())
            .cloned()
    }

    pub fn apps(&self) -> Vec<Arc<App>> {
        self.state
            .read()
            .expect("index lock")
            .apps
            .values()
            .cloned()
            .collect()
    }

    /// The operator organization a carrier name means: an OperatorCode (MCC+MNC) maps to its
    /// organization; anything else is taken as the organization itself.
    fn operator_of(st: &State, carrier: &str) -> String {
        st.operator_codes
            .get(carrier)
            .map(|o| o.organization.clone())
            .unwrap_or_else(|| carrier.to_string())
    }

    /// The usable instances of `app` (built now if a change dropped them).
    fn usable_of(&self, st: &State, app: &str) -> Arc<Vec<Site>> {
        if let Some(u) = self.usable.lock().expect("usable lock").get(app) {
            return u.clone();
        }
        let mut sites: BTreeMap<String, Site> = BTreeMap::new();
        // by_app is ordered: each site's instances come sorted.
        for k in st.by_app.get(app).into_iter().flatten() {
            let Some(i) = st.insts.get(k) else { continue };
            if i.state != TrackedState::Ready as i32
                || !matches!(i.health_check(), HealthCheck::Ok | HealthCheck::Unknown)
            {
                continue;
            }
            let ck = i.cloudlet_key.clone().unwrap_or_default();
            let cloudlet = ck.key_string();
            if let Some(site) = sites.get_mut(&cloudlet) {
                site.insts.push(k.clone());
                continue;
            }
            if st.infos.get(&cloudlet).map(|i| i.state) != Some(CloudletState::Ready as i32) {
                continue;
            }
            let Some(c) = st.cloudlets.get(&cloudlet) else {
                continue;
            };
            let loc = c.location.unwrap_or_default();
            let site = Site {
                insts: vec![k.clone()],
                cloudlet: cloudlet.clone(),
                public_cloud: PUBLIC_CLOUDS.contains(&ck.organization.as_str()),
                operator: ck.organization,
                at: unit(loc.latitude, loc.longitude),
            };
            sites.insert(cloudlet, site);
        }
        let list = Arc::new(sites.into_values().collect::<Vec<_>>());
        self.usable
            .lock()
            .expect("usable lock")
            .insert(app.to_string(), list.clone());
        list
    }

    /// The `limit` closest usable instances of `app` for a client at (`lat`, `lon`), closest first:
    /// READY, healthy (or not yet checked), on a cloudlet whose CRM reports READY, run by `carrier` (any
    /// operator when empty) or by a public cloud (farther by the padding unless it is the carrier asked
    /// for). Ties go by AppInst key.
    pub fn candidates(
        &self,
        app: &AppKey,
        carrier: &str,
        lat: f64,
        lon: f64,
        limit: usize,
    ) -> Vec<Candidate> {
        let st = self.state.read().expect("index lock");
        let operator = (!carrier.is_empty()).then(|| Self::operator_of(&st, carrier));
        let sites = self.usable_of(&st, &app.key_string());
        // Rank by the haversine's inner term, which grows with the distance.
        let client = unit(lat, lon);
        let mut best: Vec<(f64, &str, &Site)> = Vec::with_capacity(limit + 1);
        for site in sites.iter() {
            let other = operator.as_ref().is_some_and(|o| *o != site.operator);
            if other && !site.public_cloud {
                continue;
            }
            let mut a = inner_term_between(&client, &site.at);
            if other {
                a = inner_term(km_of(a) + PUBLIC_CLOUD_PADDING_KM);
            }
            // The site's instances in key order, until one no longer makes the cut (nor will the rest).
            for inst in &site.insts {
                let before = |(b, k, _): &(f64, &str, &Site)| {
                    a.total_cmp(b).then_with(|| inst.as_str().cmp(k)).is_lt()
                };
                if best.len() == limit && !best.last().is_some_and(before) {
                    break;
                }
                let at = best.iter().position(before).unwrap_or(best.len());
                best.insert(at, (a, inst, site));
                best.truncate(limit);
            }
        }
        best.into_iter()
            .filter_map(|(a, inst, site)| {
                Some(Candidate {
                    inst: st.insts.get(inst)?.clone(),
                    cloudlet: st.cloudlets.get(&site.cloudlet)?.clone(),
                    distance_km: km_of(a),
                })
            })
            .collect()
    }

    /// Whether the AppInst `key` is still usable, and if not, why (for edge events).
    pub fn usable(&self, key: &str) -> Result<(), Unusable> {
        let st = self.state.read().expect("index lock");
        let Some(i) = st.insts.get(key) else {
            return Err(Unusable::Gone);
        };
        let ck = i.cloudlet_key.clone().unwrap_or_default().key_string();
        let state = st.infos.get(&ck).map(|c| c.state).unwrap_or_default();
        if state != CloudletState::Ready as i32 {
            return Err(Unusable::Cloudlet(state));
        }
        if i.state != TrackedState::Ready as i32 {
            return Err(Unusable::Gone);
        }
        match i.health_check() {
            HealthCheck::Ok | HealthCheck::Unknown => Ok(()),
            h => Err(Unusable::Health(h as i32)),
        }
    }
}

/// Why an instance a client uses is no longer usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    Gone,
    /// the cloudlet's state (edge.CloudletState numbering, the same as MobiledgeX's)
    Cloudlet(i32),
    /// the instance's health check (same numbering as MobiledgeX's)
    Health(i32),
}

impl Sink for Index {
    fn apply(&self, action: ChangeAction, _revision: i64, object: change::Object) {
        fn set<T: Keyed>(map: &mut HashMap<String, Arc<T>>, action: ChangeAction, o: T) {
            let k = o.key_string();
            if action == ChangeAction::Delete {
                map.remove(&k);
            } else {
                map.insert(k, Arc::new(o));
            }
        }
        {
            let mut st = self.state.write().expect("index lock");
            let mut usable = self.usable.lock().expect("usable lock");
            match object {
                change::Object::App(a) => {
                    usable.remove(&a.key_string());
                    set(&mut st.apps, action, a)
                }
                change::Object::AppInst(i) => {
                    let (app, key) = (
                        i.app_key.clone().unwrap_or_default().key_string(),
                        i.key_string(),
                    );
                    // The instance may have moved to another App: forget it under the old one.
                    if let Some(old) = st.insts.get(&key).and_then(|o| o.app_key.clone()) {
                        let old = old.key_string();
                        st.by_app.entry(old.clone()).or_default().remove(&key);
                        usable.remove(&old);
                    }
                    if action != ChangeAction::Delete {
                        st.by_app.entry(app.clone()).or_default().insert(key);
                    }
                    usable.remove(&app);
                    set(&mut st.insts, action, i)
                }
                change::Object::Cloudlet(c) => {
                    usable.clear();
                    set(&mut st.cloudlets, action, c)
                }
                change::Object::CloudletInfo(c) => {
                    usable.clear();
                    set(&mut st.infos, action, c)
                }
                change::Object::OperatorCode(o) => set(&mut st.operator_codes, action, o),
                change::Object::Flavor(_)
                | change::Object::ClusterInst(_)
                | change::Object::Alert(_)
                | change::Object::AlertPolicy(_)
                | change::Object::ExecRequest(_) => {}
            }
        }
        let _ = self.changed.send(());
    }

    fn sync_end(&self, _revision: i64, keep: Option<&HashSet<String>>) {
        self.synced.set(true);
        // (These clients send no last revision: every sync is a full one.)
        let Some(keep) = keep else { return };
        {
            let mut st = self.state.write().expect("index lock");
            let kept = |kind: &str, k: &String| keep.contains(&format!("{kind}/{k}"));
            st.apps.retain(|k, _| kept("App", k));
            st.insts.retain(|k, _| kept("AppInst", k));
            let mut by_app: HashMap<String, BTreeSet<String>> = HashMap::new();
            for (k, i) in &st.insts {
                let app = i.app_key.clone().unwrap_or_default().key_string();
                by_app.entry(app).or_default().insert(k.clone());
            }
            st.by_app = by_app;
            self.usable.lock().expect("usable lock").clear();
            st.cloudlets.retain(|k, _| kept("Cloudlet", k));
            st.infos.retain(|k, _| kept("CloudletInfo", k));
            st.operator_codes.retain(|k, _| kept("OperatorCode", k));
        }
        let _ = self.changed.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::edge::{AppInstKey, CloudletKey, Loc};

    fn game() -> AppKey {
        AppKey {
            organization: "acme".into(),
            name: "game".into(),
            version: "1.0".into(),
        }
    }

    /// Cloudlet `<org>/<name>` at (`lat`, `lon`), its CRM READY, with READY instances `acme/<inst>` of
    /// `acme/game`.
    fn online(index: &Index, (org, name): (&str, &str), (lat, lon): (f64, f64), insts: &[String]) {
        let key = CloudletKey {
            organization: org.into(),
            name: name.into(),
        };
        let cloudlet = Cloudlet {
            key: Some(key.clone()),
            location: Some(Loc {
                latitude: lat,
                longitude: lon,
            }),
            ..Default::default()
        };
        index.apply(ChangeAction::Update, 1, change::Object::Cloudlet(cloudlet));
        let info = CloudletInfo {
            key: Some(key.clone()),
            state: CloudletState::Ready as i32,
            ..Default::default()
        };
        index.apply(ChangeAction::Update, 1, change::Object::CloudletInfo(info));
        for inst in insts {
            let inst = AppInst {
                key: Some(AppInstKey {
                    organization: "acme".into(),
                    name: inst.clone(),
                }),
                app_key: Some(game()),
                cloudlet_key: Some(key.clone()),
                state: TrackedState::Ready as i32,
                ..Default::default()
            };
            index.apply(ChangeAction::Update, 1, change::Object::AppInst(inst));
        }
    }

    #[test]
    fn only_ready_healthy_online_instances_are_candidates() {
        let index = Index::default();
        let app = game();
        for (name, lat) in [("near", 1.0), ("far", 10.0)] {
            online(&index, ("op", name), (lat, 0.0), &[name.to_string()]);
        }
        let best = |i: &Index| {
            i.candidates(&app, "", 0.0, 0.0, 1)
                .first()
                .map(|c| c.inst.key_string())
        };
        assert_eq!(best(&index).as_deref(), Some("acme/near"));
        let update = |f: &dyn Fn(&mut AppInst)| {
            let mut i = AppInst::clone(&index.state.read().unwrap().insts["acme/near"]);
            f(&mut i);
            index.apply(ChangeAction::Update, 2, change::Object::AppInst(i));
        };
        update(&|i| i.health_check = HealthCheck::FailServerFail as i32);
        assert_eq!(best(&index).as_deref(), Some("acme/far"));
        assert_eq!(
            index.usable("acme/near"),
            Err(Unusable::Health(HealthCheck::FailServerFail as i32))
        );
        update(&|i| {
            i.health_check = HealthCheck::Ok as i32;
            i.state = TrackedState::UpdateRequested as i32;
        });
        assert_eq!(best(&index).as_deref(), Some("acme/far"));
        update(&|i| i.state = TrackedState::Ready as i32);
        assert_eq!(best(&index).as_deref(), Some("acme/near"));
        assert_eq!(
            index.candidates(&app, "other-operator", 0.0, 0.0, 3).len(),
            0
        );
    }

    #[test]
    fn the_closest_few_of_many_come_first_as_a_full_sort_would_order_them() {
        let index = Index::default();
        let app = game();
        // 2,000 instances on 200 cloudlets spread over Europe (a fixed pseudo-random pattern), ten per
        // cloudlet so that ties are broken by key.
        let mut x: u64 = 42;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f64 / 10_000.0
        };
        let mut places = Vec::new();
        for c in 0..200 {
            let (lat, lon) = (35.0 + 25.0 * next(), -10.0 + 40.0 * next());
            places.push((format!("op/c{c}"), lat, lon));
            let insts: Vec<String> = (0..10).map(|n| format!("i{c}-{n}")).collect();
            online(&index, ("op", &format!("c{c}")), (lat, lon), &insts);
        }
        for (lat, lon) in [(52.5, 13.4), (40.4, -3.7), (59.3, 18.1)] {
            let mut all: Vec<(f64, String)> = index
                .state
                .read()
                .unwrap()
                .insts
                .values()
                .map(|i| {
                    let ck = i.cloudlet_key.clone().unwrap().key_string();
                    let (_, clat, clon) = places.iter().find(|p| p.0 == ck).unwrap();
                    (distance_km(lat, lon, *clat, *clon), i.key_string())
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let got: Vec<String> = index
                .candidates(&app, "", lat, lon, 5)
                .iter()
                .map(|c| c.inst.key_string())
                .collect();
            let want: Vec<String> = all.iter().take(5).map(|(_, k)| k.clone()).collect();
            assert_eq!(got, want, "client at {lat},{lon}");
            let d = index.candidates(&app, "", lat, lon, 1)[0].distance_km;
            assert!((d - all[0].0).abs() < 1e-6, "{d} vs {}", all[0].0);
        }
        // A deleted instance is no candidate any more.
        let first = index.candidates(&app, "", 52.5, 13.4, 1)[0].inst.clone();
        index.apply(
            ChangeAction::Delete,
            2,
            change::Object::AppInst(AppInst::clone(&first)),
        );
        assert_ne!(
            index.candidates(&app, "", 52.5, 13.4, 1)[0].inst.key,
            first.key
        );
    }

    #[test]
    fn public_clouds_serve_every_carrier_a_hundred_km_farther() {
        let index = Index::default();
        let app = game();
        // Berlin: the operator "tmus" 50 km away, azure at the client's door.
        for (org, lat) in [("tmus", 52.97), ("azure", 52.52)] {
            online(&index, (org, "c"), (lat, 13.4), &[org.to_string()]);
        }
        let found = |carrier: &str| {
            index
                .candidates(&app, carrier, 52.52, 13.4, 3)
                .iter()
                .map(|c| (c.inst.key_string(), c.distance_km.round()))
                .collect::<Vec<_>>()
        };
        // No carrier: the plain distances.
        assert_eq!(
            found(""),
            [("acme/azure".into(), 0.0), ("acme/tmus".into(), 50.0)]
        );
        // The operator's clients: its own instance wins, azure comes 100 km farther.
        assert_eq!(
            found("tmus"),
            [("acme/tmus".into(), 50.0), ("acme/azure".into(), 100.0)]
        );
        // Azure's clients: azure as it is; another operator is not a candidate.
        assert_eq!(found("azure"), [("acme/azure".into(), 0.0)]);
        // A carrier nobody knows: only the public cloud, padded.
        assert_eq!(found("nobody"), [("acme/azure".into(), 100.0)]);
    }

    #[test]
    fn great_circle_distances() {
        // Berlin - Paris ≈ 878 km; a point to itself is 0.
        let d = distance_km(52.52, 13.405, 48.8566, 2.3522);
        assert!((d - 878.0).abs() < 5.0, "{d}");
        assert_eq!(distance_km(10.0, 10.0, 10.0, 10.0), 0.0);
        // The ranking's dot-product form agrees with the haversine, to a metre, near and far.
        for (a, b) in [
            ((52.52, 13.405), (48.8566, 2.3522)),
            ((10.0, 10.0), (10.0, 10.0)),
            ((10.0, 10.0), (10.00001, 10.0)),
            ((-33.9, 151.2), (51.5, -0.1)),
            ((0.0, 0.0), (0.0, 180.0)),
        ] {
            let dot = km_of(inner_term_between(&unit(a.0, a.1), &unit(b.0, b.1)));
            let hav = distance_km(a.0, a.1, b.0, b.1);
            assert!((dot - hav).abs() < 1e-3, "{a:?} {b:?}: {dot} vs {hav}");
        }
    }
}
