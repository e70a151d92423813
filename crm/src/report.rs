//! Reports from the reconciler to the controller, deduplicated: a report equal to the last one sent for
//! the same object is dropped. After a reconnect the memory is cleared, so the next reconcile pass
//! reports every object's actual state again.

use std::collections::HashMap;
use std::sync::Mutex;

use edge_proto::edge::{NotifyUp, notify_up};
use tokio::sync::mpsc;

pub struct Reporter {
    tx: mpsc::UnboundedSender<NotifyUp>,
    last: Mutex<HashMap<String, notify_up::Msg>>,
}

impl Reporter {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<NotifyUp>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                last: Mutex::default(),
            },
            rx,
        )
    }

    /// Queues `msg` about object `key` unless it repeats the last report.
    pub fn send(&self, key: &str, msg: notify_up::Msg) {
        let mut last = self.last.lock().expect("reporter lock");
        if last.get(key) == Some(&msg) {
            return;
        }
        last.insert(key.to_string(), msg.clone());
        let _ = self.tx.send(NotifyUp {
            trace_context: Default::default(),
            msg: Some(msg),
        });
    }

    /// Forgets what was sent (after a reconnect: the controller may have missed it).
    pub fn reset(&self) {
        self.last.lock().expect("reporter lock").clear();
    }
}
