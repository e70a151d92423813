//! What Shepherd knows of its cloudlet, as the controller streams it: the Cloudlet and its CloudletInfo,
//! ClusterInsts, Apps, AppInsts and the alerts the controller holds for the cloudlet. Lifecycle changes
//! seen on the stream become event points (`cloudlet`, `clusterinst`, `appinst` measurements).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use edge_common::Keyed;
use edge_common::notify_client::Sink;
use edge_proto::edge::{
    Alert, AlertPolicy, App, AppInst, ChangeAction, Cloudlet, CloudletInfo, CloudletState,
    ClusterInst, Flavor, change,
};
use prometheus::IntGauge;

use crate::influx::{Db, Field, Point, Writer};
use crate::tags;

#[derive(Clone, Default)]
pub struct State {
    pub cloudlet: Option<Cloudlet>,
    pub cloudlet_info: Option<CloudletInfo>,
    pub flavors: HashMap<String, Flavor>,
    pub clusters: HashMap<String, ClusterInst>,
    pub apps: HashMap<String, App>,
    pub app_insts: HashMap<String, AppInst>,
    /// alerts of this cloudlet the controller holds, by key
    pub alerts: HashMap<String, Alert>,
    /// alert policies of the cloudlet's apps, by key (`org/name`)
    pub policies: HashMap<String, AlertPolicy>,
    /// a full sync has ended at least once
    pub synced: bool,
}

pub struct World {
    state: RwLock<State>,
    writer: Arc<Writer>,
    connected: IntGauge,
}

impl World {
    pub fn new(writer: Arc<Writer>, connected: IntGauge) -> Self {
        Self {
            state: RwLock::default(),
            writer,
            connected,
        }
    }

    /// A copy of the current state (cheap next to a collection round).
    pub fn snapshot(&self) -> State {
        self.state.read().expect("world lock").clone()
    }

    fn event(&self, p: Point) {
        self.writer.push(Db::Events, [p]);
    }
}

fn set<T: Keyed>(map: &mut HashMap<String, T>, delete: bool, obj: T) {
    if delete {
        map.remove(&obj.key_string());
    } else {
        map.insert(obj.key_string(), obj);
    }
}

/// The lifecycle event of a tracked object going from `before` to `after` (state names), if any.
fn lifecycle(before: Option<&str>, after: Option<&str>) -> Option<String> {
    match (before, after) {
        (b, Some(a)) if b != Some(a) => Some(a.to_string()),
        (Some(_), None) => Some("DELETED".to_string()),
        _ => None,
    }
}

impl Sink for World {
    fn apply(&self, action: ChangeAction, _revision: i64, object: change::Object) {
        let now = edge_common::now_ms();
        let delete = action == ChangeAction::Delete;
        let mut events = Vec::new();
        {
            let mut s = self.state.write().expect("world lock");
            let live = s.synced;
            match object {
                change::Object::Cloudlet(c) => s.cloudlet = (!delete).then_some(c),
                change::Object::CloudletInfo(c) => {
                    let state = |i: &CloudletInfo| {
                        i.state()
                            .as_str_name()
                            .trim_start_matches("CLOUDLET_STATE_")
                            .to_string()
                    };
                    let before = s.cloudlet_info.as_ref().map(state);
                    let after = state(&c);
                    if live && !delete && before.as_ref() != Some(&after) {
                        let up = c.state() == CloudletState::Ready;
                        events.push(
                            tags::cloudlet(
                                Point::new(tags::EVENT_CLOUDLET, now),
                                &c.key.clone().unwrap_or_default(),
                            )
                            .field("event", Field::Str(after))
                            .field("status", Field::Str(if up { "UP" } else { "DOWN" }.into())),
                        );
                    }
                    s.cloudlet_info = (!delete).then_some(c);
                }
                change::Object::Flavor(f) => set(&mut s.flavors, delete, f),
                change::Object::App(a) => set(&mut s.apps, delete, a),
                change::Object::ClusterInst(c) => {
                    let k = c.key_string();
                    let before = s.clusters.get(&k).map(|o| o.state().as_str_name());
                    let after = (!delete).then(|| c.state().as_str_name());
                    if let (true, Some(ev)) = (live, lifecycle(before, after)) {
                        events.push(
                            tags::cluster(Point::new(tags::EVENT_CLUSTER, now), &c)
                                .field("event", Field::Str(ev))
                                .field("status", Field::Str(c.state().as_str_name().into())),
                        );
                    }
                    set(&mut s.clusters, delete, c);
                }
                change::Object::AppInst(i) => {
                    let k = i.key_string();
                    let prev = s.app_insts.get(&k);
                    let before = prev.map(|o| o.state().as_str_name());
                    let after = (!delete).then(|| i.state().as_str_name());
                    let mut ev = lifecycle(before, after);
                    // A health change of a live instance is an event of its own.
                    if ev.is_none()
                        && !delete
                        && prev.is_some_and(|p| p.health_check != i.health_check)
                    {
                        ev = Some(i.health_check().as_str_name().to_string());
                    }
                    if let (true, Some(ev)) = (live, ev) {
                        events.push(
                            tags::app_inst(Point::new(tags::EVENT_APPINST, now), &i)
                                .field("event", Field::Str(ev))
                                .field("status", Field::Str(i.state().as_str_name().into())),
                        );
                    }
                    set(&mut s.app_insts, delete, i);
                }
                change::Object::Alert(a) => set(&mut s.alerts, delete, a),
                change::Object::AlertPolicy(p) => set(&mut s.policies, delete, p),
                change::Object::OperatorCode(_) | change::Object::ExecRequest(_) => {}
            }
        }
        for e in events {
            self.event(e);
        }
    }

    fn sync_end(&self, _revision: i64, keep: Option<&HashSet<String>>) {
        // (These clients send no last revision: every sync is a full one.)
        let Some(keep) = keep else { return };
        let mut s = self.state.write().expect("world lock");
        let kept = |kind: &str, k: &String| keep.contains(&format!("{kind}/{k}"));
        s.flavors.retain(|k, _| kept("Flavor", k));
        s.apps.retain(|k, _| kept("App", k));
        s.clusters.retain(|k, _| kept("ClusterInst", k));
        s.app_insts.retain(|k, _| kept("AppInst", k));
        s.alerts.retain(|k, _| kept("Alert", k));
        s.policies.retain(|k, _| kept("AlertPolicy", k));
        if s.cloudlet
            .as_ref()
            .is_some_and(|c| !kept("Cloudlet", &c.key_string()))
        {
            s.cloudlet = None;
        }
        if s.cloudlet_info
            .as_ref()
            .is_some_and(|c| !kept("CloudletInfo", &c.key_string()))
        {
            s.cloudlet_info = None;
        }
        s.synced = true;
    }

    fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }
}
