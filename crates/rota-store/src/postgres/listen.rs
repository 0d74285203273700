//! Wake-ups from other nodes: a connection that `LISTEN`s on the channel
//! every transaction that makes tasks claimable notifies on.
//!
//! A notification is a hint, never the truth: claims poll as well, so a
//! notification lost (a broken connection, a listener not yet started) only
//! delays work until the next poll.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio_postgres::{AsyncMessage, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel work is announced on; the payload is the queue's name.
pub(super) const CHANNEL: &str = "rota_work";

/// The listening connection of one store (and its clones), started when
/// first waited on and stopped when the store is dropped.
pub(super) struct Listener {
    config: Config,
    tls: MakeRustlsConnect,
    wake: Arc<Notify>,
    /// Dropping it stops the listening task.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Listener {
    pub(super) fn new(config: Config, tls: MakeRustlsConnect) -> Self {
        Self {
            config,
            tls,
            wake: Arc::new(Notify::new()),
            stop: Mutex::new(None),
        }
    }

    /// Waits for a notification, at most `timeout`.
    pub(super) async fn wait(&self, timeout: Duration) {
        let woken = self.wake.notified();
        self.start();
        let _ = tokio::time::timeout(timeout, woken).await;
    }

    fn start(&self) {
        let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        if stop.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        *stop = Some(tx);
        tokio::spawn(listen(
            self.config.clone(),
            self.tls.clone(),
            Arc::clone(&self.wake),
            rx,
        ));
    }
}

/// Listens until `stop` fires (or its sender is dropped), connecting again
/// after a pause whenever the connection breaks; every notification, and
/// every new connection (notifications may have been missed), wakes the
/// waiters.
async fn listen(
    config: Config,
    tls: MakeRustlsConnect,
    wake: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let session = async {
            let Ok((client, mut connection)) = config.connect(tls.clone()).await else {
                return false;
            };
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            let command = format!("LISTEN {CHANNEL}");
            let listening = client.batch_execute(&command);
            tokio::pin!(listening);
            // The LISTEN is answered through the connection, which only
            // moves while it is polled.
            loop {
                tokio::select! {
                    done = &mut listening => {
                        if done.is_err() { return false; }
                        break;
                    }
                    msg = messages.next() => match msg {
                        Some(Ok(_)) => {}
                        _ => return false,
                    },
                }
            }
            wake.notify_waiters();
            while let Some(Ok(msg)) = messages.next().await {
                if let AsyncMessage::Notification(_) = msg {
                    wake.notify_waiters();
                }
            }
            true
        };
        tokio::select! {
            listened = session => if listened {
                pause = Duration::from_millis(100);
            },
            _ = &mut stop => return,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut stop => return,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
