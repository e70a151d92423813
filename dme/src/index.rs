//! The DME's in-memory view of its region, fed by notify: Apps, AppInsts, Cloudlets, CloudletInfos and
//! OperatorCodes. Every lookup is served from here; the DME keeps answering while the controller is down.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use edge_common::Keyed;
use edge_common::notify_client::Sink;
use edge_proto::edge::{
    App, AppInst, AppKey, ChangeAction, Cloudlet, CloudletInfo, CloudletState, HealthCheck,
    OperatorCode, TrackedState, change,
};
use tokio::sync::broadcast;

/// Mean earth radius used for great-circle distances, km.
const EARTH_RADIUS_KM: f64 = 6371.0;

#[derive(Default)]
struct State {
    apps: HashMap<String, App>,
    insts: HashMap<String, AppInst>,
    cloudlets: HashMap<String, Cloudlet>,
    infos: HashMap<String, CloudletInfo>,
    operator_codes: HashMap<String, OperatorCode>,
}

/// An AppInst a client may use, with its cloudlet and distance from the client.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub inst: AppInst,
    pub cloudlet: Cloudlet,
    pub distance_km: f64,
}

pub struct Index {
    state: RwLock<State>,
    /// Fires on every change (edge-event streams re-evaluate their instance).
    changed: broadcast::Sender<()>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            changed: broadcast::channel(64).0,
        }
    }
}

/// Great-circle (haversine) distance between two points, km.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().atan2((1.0 - a).sqrt())
}

impl Index {
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn app(&self, key: &AppKey) -> Option<App> {
        self.state
            .read()
            .expect("index lock")
            .apps
            .get(&key.key_string())
            .cloned()
    }

    pub fn apps(&self) -> Vec<App> {
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

    /// Usable instances of `app`, closest first: READY, healthy (or not yet checked), on a cloudlet whose
    /// CRM reports READY, run by `carrier` (any operator when empty). Ties go by AppInst key.
    pub fn candidates(&self, app: &AppKey, carrier: &str, lat: f64, lon: f64) -> Vec<Candidate> {
        let st = self.state.read().expect("index lock");
        let operator = (!carrier.is_empty()).then(|| Self::operator_of(&st, carrier));
        let mut out: Vec<Candidate> = st
            .insts
            .values()
            .filter(|i| i.app_key.as_ref() == Some(app))
            .filter(|i| i.state == TrackedState::Ready as i32)
            .filter(|i| matches!(i.health_check(), HealthCheck::Ok | HealthCheck::Unknown))
            .filter_map(|i| {
                let ck = i.cloudlet_key.clone().unwrap_or_default();
                if operator.as_ref().is_some_and(|o| *o != ck.organization) {
                    return None;
                }
                let info = st.infos.get(&ck.key_string())?;
                if info.state != CloudletState::Ready as i32 {
                    return None;
                }
                let cloudlet = st.cloudlets.get(&ck.key_string())?.clone();
                let loc = cloudlet.location.unwrap_or_default();
                let distance_km = distance_km(lat, lon, loc.latitude, loc.longitude);
                Some(Candidate {
                    inst: i.clone(),
                    cloudlet,
                    distance_km,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.distance_km
                .total_cmp(&b.distance_km)
                .then_with(|| a.inst.key_string().cmp(&b.inst.key_string()))
        });
        out
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
        fn set<T: Keyed>(map: &mut HashMap<String, T>, action: ChangeAction, o: T) {
            let k = o.key_string();
            if action == ChangeAction::Delete {
                map.remove(&k);
            } else {
                map.insert(k, o);
            }
        }
        {
            let mut st = self.state.write().expect("index lock");
            match object {
                change::Object::App(a) => set(&mut st.apps, action, a),
                change::Object::AppInst(i) => set(&mut st.insts, action, i),
                change::Object::Cloudlet(c) => set(&mut st.cloudlets, action, c),
                change::Object::CloudletInfo(c) => set(&mut st.infos, action, c),
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

    fn sync_end(&self, _revision: i64, keep: &HashSet<String>) {
        {
            let mut st = self.state.write().expect("index lock");
            let kept = |kind: &str, k: &String| keep.contains(&format!("{kind}/{k}"));
            st.apps.retain(|k, _| kept("App", k));
            st.insts.retain(|k, _| kept("AppInst", k));
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

    #[test]
    fn only_ready_healthy_online_instances_are_candidates() {
        let index = Index::default();
        let app = AppKey {
            organization: "acme".into(),
            name: "game".into(),
            version: "1.0".into(),
        };
        for (name, lat) in [("near", 1.0), ("far", 10.0)] {
            let key = CloudletKey {
                organization: "op".into(),
                name: name.into(),
            };
            let location = Some(Loc {
                latitude: lat,
                longitude: 0.0,
            });
            index.apply(
                ChangeAction::Update,
                1,
                change::Object::Cloudlet(Cloudlet {
                    key: Some(key.clone()),
                    location,
                    ..Default::default()
                }),
            );
            let info = CloudletInfo {
                key: Some(key.clone()),
                state: CloudletState::Ready as i32,
                ..Default::default()
            };
            index.apply(ChangeAction::Update, 1, change::Object::CloudletInfo(info));
            let inst = AppInst {
                key: Some(AppInstKey {
                    organization: "acme".into(),
                    name: name.into(),
                }),
                app_key: Some(app.clone()),
                cloudlet_key: Some(key),
                state: TrackedState::Ready as i32,
                ..Default::default()
            };
            index.apply(ChangeAction::Update, 1, change::Object::AppInst(inst));
        }
        let best = |i: &Index| {
            i.candidates(&app, "", 0.0, 0.0)
                .first()
                .map(|c| c.inst.key_string())
        };
        assert_eq!(best(&index).as_deref(), Some("acme/near"));
        let update = |f: &dyn Fn(&mut AppInst)| {
            let mut i = index.state.read().unwrap().insts["acme/near"].clone();
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
        assert_eq!(index.candidates(&app, "other-operator", 0.0, 0.0).len(), 0);
    }

    #[test]
    fn great_circle_distances() {
        // Berlin - Paris ≈ 878 km; a point to itself is 0.
        let d = distance_km(52.52, 13.405, 48.8566, 2.3522);
        assert!((d - 878.0).abs() < 5.0, "{d}");
        assert_eq!(distance_km(10.0, 10.0, 10.0, 10.0), 0.0);
    }
}
