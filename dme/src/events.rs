//! `StreamEdgeEvent`: a persistent channel between an SDK and the DME. The client opens it with its
//! session and edge-events cookies, then sends latency samples and location updates; the DME answers
//! with latency statistics and pushes events when a closer instance appears ("cloudlet update") or when
//! the instance the client uses becomes unhealthy or its cloudlet goes offline.

use std::pin::Pin;
use std::sync::Arc;

use edge_common::Keyed;
use edge_proto::dme::client_edge_event::ClientEventType as C;
use edge_proto::dme::server_edge_event::ServerEventType as S;
use edge_proto::dme::{ClientEdgeEvent, Loc, ServerEdgeEvent, Statistics, Timestamp};
use edge_proto::edge::AppKey;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::api::{EdgeEventStream, MatchEngine};
use crate::index::Unusable;

type Inbound = Pin<Box<dyn Stream<Item = Result<ClientEdgeEvent, Status>> + Send>>;

fn event(t: S) -> ServerEdgeEvent {
    ServerEdgeEvent {
        event_type: t as i32,
        ..Default::default()
    }
}

/// Statistics of the non-negative samples (unbiased variance, as MobiledgeX computes them).
pub fn statistics(samples: &[f64]) -> Statistics {
    let v: Vec<f64> = samples.iter().copied().filter(|s| *s >= 0.0).collect();
    let n = v.len() as f64;
    let now = edge_common::now_ms();
    let mut st = Statistics {
        num_samples: v.len() as u64,
        timestamp: Some(Timestamp {
            seconds: now / 1000,
            nanos: ((now % 1000) * 1_000_000) as i32,
        }),
        ..Default::default()
    };
    if v.is_empty() {
        return st;
    }
    st.avg = v.iter().sum::<f64>() / n;
    st.min = v.iter().copied().fold(f64::INFINITY, f64::min);
    st.max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() > 1 {
        st.variance = v.iter().map(|x| (x - st.avg).powi(2)).sum::<f64>() / (n - 1.0);
        st.std_dev = st.variance.sqrt();
    }
    st
}

/// Validates the opening message and starts the session.
pub async fn serve(
    engine: Arc<MatchEngine>,
    mut inbound: Inbound,
) -> Result<EdgeEventStream, Status> {
    let slot = Slot::take(&engine)?;
    // A client that opens the stream must say who it is promptly: an idle stream holds no resources.
    let deadline = engine.first_event_timeout;
    let first = tokio::time::timeout(deadline, inbound.next())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no EVENT_INIT_CONNECTION within {} ms",
                deadline.as_millis()
            ))
        })?
        .ok_or_else(|| Status::invalid_argument("stream ended before EVENT_INIT_CONNECTION"))??;
    if first.event_type != C::EventInitConnection as i32 {
        return Err(Status::invalid_argument(
            "First message should have event type EVENT_INIT_CONNECTION",
        ));
    }
    let session = engine.cookies.verify_session(&first.session_cookie)?;
    let events = engine
        .cookies
        .verify_edge_events(&first.edge_events_cookie)?;
    let app = AppKey {
        organization: session.orgname,
        name: session.appname,
        version: session.appvers,
    };
    let current = format!("{}/{}", events.appinstorg, events.appinstname);
    let location = Loc::from(&events.location);
    let (tx, rx) = mpsc::channel(16);
    tx.send(Ok(event(S::EventInitConnection)))
        .await
        .map_err(|_| Status::cancelled("client gone"))?;
    let s = EventSession {
        engine,
        app,
        current,
        location,
        carrier: String::new(),
        last_problem: None,
        tx,
        _slot: slot,
    };
    tokio::spawn(s.run(inbound));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// One of the DME's edge-events stream slots, counted in `dme_edge_event_streams` while held.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Slot {
    fn take(engine: &MatchEngine) -> Result<Self, Status> {
        let permit = engine
            .edge_event_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted("too many edge-events streams on this DME; retry later")
            })?;
        let gauge = engine.metrics.edge_event_streams.clone();
        gauge.inc();
        Ok(Self {
            _permit: permit,
            gauge,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct EventSession {
    /// held while the stream is open
    _slot: Slot,
    engine: Arc<MatchEngine>,
    app: AppKey,
    /// AppInst key the client is using
    current: String,
    location: Loc,
    carrier: String,
    /// last problem reported for `current`, so each is pushed once
    last_problem: Option<Unusable>,
    tx: mpsc::Sender<Result<ServerEdgeEvent, Status>>,
}

impl EventSession {
    async fn run(mut self, mut inbound: Inbound) {
        let mut changes = self.engine.index.subscribe();
        loop {
            let out = tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => match self.on_client(m) {
                        Some(Some(e)) => Some(e),
                        Some(None) => None,
                        None => return,
                    },
                    _ => return,
                },
                c = changes.recv() => match c {
                    Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.on_index_change(),
                    Err(_) => return,
                },
            };
            if let Some(e) = out
                && self.tx.send(Ok(e)).await.is_err()
            {
                return;
            }
        }
    }

    /// Answers one client message: `None` ends the session, `Some(None)` needs no answer.
    fn on_client(&mut self, m: ClientEdgeEvent) -> Option<Option<ServerEdgeEvent>> {
        let error = |msg: String| {
            Some(Some(ServerEdgeEvent {
                error_msg: msg,
                ..event(S::EventError)
            }))
        };
        let valid_loc = |l: Option<Loc>| {
            l.filter(|l| {
                (-90.0..=90.0).contains(&l.latitude) && (-180.0..=180.0).contains(&l.longitude)
            })
        };
        match C::try_from(m.event_type).unwrap_or(C::EventUnknown) {
            C::EventTerminateConnection => None,
            C::EventLatencySamples => {
                if valid_loc(m.gps_location).is_none() {
                    return error("Invalid EVENT_LATENCY_SAMPLES, invalid location".into());
                }
                let values: Vec<f64> = m.samples.iter().map(|s| s.value).collect();
                Some(Some(ServerEdgeEvent {
                    statistics: Some(statistics(&values)),
                    ..event(S::EventLatencyProcessed)
                }))
            }
            C::EventLocationUpdate => {
                let Some(loc) = valid_loc(m.gps_location) else {
                    return error("Invalid EVENT_LOCATION_UPDATE, invalid location".into());
                };
                self.location = loc;
                Some(self.better_instance())
            }
            C::EventCustomEvent => Some(None),
            C::EventInitConnection | C::EventUnknown => {
                let name = C::try_from(m.event_type)
                    .unwrap_or(C::EventUnknown)
                    .as_str_name();
                error(format!("Received unknown event type: {name}"))
            }
        }
    }

    /// A closer usable instance than the current one, as EVENT_CLOUDLET_UPDATE.
    fn better_instance(&mut self) -> Option<ServerEdgeEvent> {
        let best = self.engine.index.candidates(
            &self.app,
            &self.carrier,
            self.location.latitude,
            self.location.longitude,
            1,
        );
        let best = best.first()?;
        if best.inst.key_string() == self.current {
            return None;
        }
        self.current = best.inst.key_string();
        self.last_problem = None;
        Some(ServerEdgeEvent {
            new_cloudlet: Some(self.engine.found(best, &self.location)),
            ..event(S::EventCloudletUpdate)
        })
    }

    fn on_index_change(&mut self) -> Option<ServerEdgeEvent> {
        match self.engine.index.usable(&self.current) {
            Ok(()) => {
                self.last_problem = None;
                self.better_instance()
            }
            Err(problem) if self.last_problem == Some(problem) => None,
            Err(problem) => {
                self.last_problem = Some(problem);
                let mut e = match problem {
                    Unusable::Cloudlet(state) => ServerEdgeEvent {
                        cloudlet_state: state,
                        ..event(S::EventCloudletState)
                    },
                    Unusable::Health(h) => ServerEdgeEvent {
                        health_check: h,
                        ..event(S::EventAppinstHealth)
                    },
                    Unusable::Gone => event(S::EventCloudletUpdate),
                };
                let loc = self.location;
                if let Some(best) = self
                    .engine
                    .index
                    .candidates(&self.app, &self.carrier, loc.latitude, loc.longitude, 1)
                    .first()
                {
                    e.new_cloudlet = Some(self.engine.found(best, &loc));
                    self.current = best.inst.key_string();
                    self.last_problem = None;
                }
                Some(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_statistics() {
        let s = statistics(&[10.0, 20.0, 30.0, -1.0]);
        assert_eq!(s.num_samples, 3);
        assert_eq!((s.avg, s.min, s.max), (20.0, 10.0, 30.0));
        assert_eq!(s.variance, 100.0);
        assert_eq!(s.std_dev, 10.0);
        assert_eq!(statistics(&[]).num_samples, 0);
    }
}
