//! Reports from the reconciler to the controller, deduplicated: a report equal to the last one sent for
//! the same object is dropped. After a reconnect the memory is cleared, so the next reconcile pass
//! reports every object's actual state again; and a report the controller has not stored a while after it
//! was sent (the write failed, the message was lost) is forgotten too, so it goes out again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edge_proto::edge::{NotifyUp, notify_up};
use prometheus::IntCounter;
use tokio::sync::mpsc;

/// How long the controller may take to store a report before it is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);

pub struct Reporter {
    tx: mpsc::UnboundedSender<NotifyUp>,
    /// the last report per object and when it went out
    last: Mutex<HashMap<String, (notify_up::Msg, Instant)>>,
    resend_after: Duration,
    /// reports found not stored and so sent again
    resent: IntCounter,
}

/// The tracked state a report carries.
fn state_of(msg: &notify_up::Msg) -> Option<i32> {
    match msg {
        notify_up::Msg::ClusterInstInfo(i) => Some(i.state),
        notify_up::Msg::AppInstInfo(i) => Some(i.state),
        _ => None,
    }
}

impl Reporter {
    /// `resent` counts the reports [`Reporter::check_stored`] finds lost.
    pub fn new(
        resend_after: Duration,
        resent: IntCounter,
    ) -> (Self, mpsc::UnboundedReceiver<NotifyUp>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                last: Mutex::default(),
                resend_after,
                resent,
            },
            rx,
        )
    }

    /// Queues `msg` about object `key` unless it repeats the last report.
    pub fn send(&self, key: &str, msg: notify_up::Msg) {
        let mut last = self.last.lock().expect("reporter lock");
        if last.get(key).is_some_and(|(m, _)| *m == msg) {
            return;
        }
        last.insert(key.to_string(), (msg.clone(), Instant::now()));
        let _ = self.tx.send(NotifyUp {
            trace_context: Default::default(),
            msg: Some(msg),
        });
    }

    /// Forgets the last report about `key` when the controller still stores another state (`stored`,
    /// as the CRM's mirror shows it) a while after it was sent, so the next pass sends it again.
    pub fn check_stored(&self, key: &str, stored: i32) {
        let mut last = self.last.lock().expect("reporter lock");
        let lost = last.get(key).is_some_and(|(m, at)| {
            state_of(m).is_some_and(|s| s != stored) && at.elapsed() >= self.resend_after
        });
        if lost {
            tracing::info!(
                key,
                "the controller has not stored the last report; sending it again"
            );
            last.remove(key);
            self.resent.inc();
        }
    }

    /// Forgets what was sent (after a reconnect: the controller may have missed it).
    pub fn reset(&self) {
        self.last.lock().expect("reporter lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::edge::{AppInstInfo, TrackedState};

    fn ready() -> notify_up::Msg {
        notify_up::Msg::AppInstInfo(AppInstInfo {
            state: TrackedState::Ready as i32,
            ..Default::default()
        })
    }

    #[test]
    fn a_report_goes_out_again_only_while_the_controller_has_not_stored_it() {
        let counter = || IntCounter::new("resent", "resent").unwrap();
        let (r, mut rx) = Reporter::new(Duration::ZERO, counter());
        r.send("AppInst/a/b", ready());
        r.send("AppInst/a/b", ready());
        assert!(
            rx.try_recv().is_ok() && rx.try_recv().is_err(),
            "repeats are dropped"
        );
        // Stored as sent: nothing to do.
        r.check_stored("AppInst/a/b", TrackedState::Ready as i32);
        r.send("AppInst/a/b", ready());
        assert!(rx.try_recv().is_err());
        // The controller still shows the request: the report was lost and goes out again.
        r.check_stored("AppInst/a/b", TrackedState::CreateRequested as i32);
        r.send("AppInst/a/b", ready());
        assert!(rx.try_recv().is_ok());
        // Not before its time.
        assert_eq!(r.resent.get(), 1);
        let (r, mut rx) = Reporter::new(Duration::from_secs(3600), counter());
        r.send("AppInst/a/b", ready());
        r.check_stored("AppInst/a/b", TrackedState::CreateRequested as i32);
        r.send("AppInst/a/b", ready());
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_err());
    }
}
