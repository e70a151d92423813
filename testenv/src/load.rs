//! A steady write load for restart tests: writers write fresh ids as fast as they are answered, bounded in
//! count, and keep every id acknowledged and every refusal for the checks afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub struct WriteLoad<E> {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<E>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl<E: Send + 'static> WriteLoad<E> {
    /// `writers` tasks, each writing ids `load<writer>x<n>` for n below `max_each` with `write`; a writer
    /// backs off 50 ms after a refusal, as a client does.
    pub fn start<F, Fut>(writers: usize, max_each: usize, write: F) -> Self
    where
        F: Fn(String) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<Vec<E>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let tasks = (0..writers)
            .map(|w| {
                let (acked, refused, stop, write) = (
                    Arc::clone(&acked),
                    Arc::clone(&refused),
                    Arc::clone(&stop),
                    write.clone(),
                );
                tokio::spawn(async move {
                    for n in 0..max_each {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("load{w}x{n}");
                        match write(id.clone()).await {
                            Ok(()) => acked.lock().expect("acked").push(id),
                            Err(e) => {
                                refused.lock().expect("refused").push(e);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            acked,
            refused,
            stop,
            tasks,
        }
    }

    /// Waits (up to 60 s) until `more` writes beyond those acknowledged so far are acknowledged.
    pub async fn wait_acked(&self, more: usize) {
        let want = self.acked.lock().expect("acked").len() + more;
        crate::wait_for(
            &format!("{want} acknowledged writes"),
            Duration::from_secs(60),
            async || (self.acked.lock().expect("acked").len() >= want).then_some(()),
        )
        .await;
    }

    /// Waits (up to 30 s) until a write is refused.
    pub async fn wait_refused(&self) {
        crate::wait_for("a refused write", Duration::from_secs(30), async || {
            (!self.refused.lock().expect("refused").is_empty()).then_some(())
        })
        .await;
    }

    /// Stops the writers and returns the ids acknowledged and the refusals.
    pub async fn finish(self) -> (Vec<String>, Vec<E>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer");
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("acked"));
        let refused = std::mem::take(&mut *self.refused.lock().expect("refused"));
        (acked, refused)
    }
}
