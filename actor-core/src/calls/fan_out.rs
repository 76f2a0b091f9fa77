//! Fan-out: one stream read by several local tasks ([`FanOut`], [`Subscriber`]).

use super::stream::MsgStream;
use crate::base::error::ActorError;
use crate::base::sync::LockExt;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

pub(super) struct Hub<T> {
    /// Items; `Ok(None)` marks the end of the stream (the hub keeps a sender, so the
    /// channel itself never closes while subscribers may still join).
    pub(super) tx: tokio::sync::broadcast::Sender<Result<Option<T>, ActorError>>,
    /// The stream, until the first subscriber's `recv` starts the pump.
    pub(super) stream: Mutex<Option<MsgStream>>,
    pub(super) pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<T> Drop for Hub<T> {
    fn drop(&mut self) {
        if let Some(h) = self.pump.locked().take() {
            h.abort();
        }
    }
}

/// A stream shared by several local tasks (tractor's `MsgStream.subscribe`). The pump
/// that reads the stream starts with the first [`Subscriber::recv`] and stops when the
/// `FanOut` and every subscriber are dropped.
pub struct FanOut<T> {
    hub: Arc<Hub<T>>,
}

impl<T> std::fmt::Debug for FanOut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut").field("subscribers", &self.hub.tx.receiver_count()).finish()
    }
}

impl<T: DeserializeOwned + Clone + Send + 'static> FanOut<T> {
    pub(super) fn new(hub: Hub<T>) -> Self {
        FanOut { hub: Arc::new(hub) }
    }

    /// A new subscriber; it receives every message read from now on.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber { rx: self.hub.tx.subscribe(), hub: Arc::clone(&self.hub), done: false }
    }
}

/// One local receiver of a [`FanOut`].
pub struct Subscriber<T> {
    rx: tokio::sync::broadcast::Receiver<Result<Option<T>, ActorError>>,
    hub: Arc<Hub<T>>,
    done: bool,
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("done", &self.done).finish()
    }
}

impl<T: DeserializeOwned + Clone + Send + 'static> Subscriber<T> {
    /// The next message; `Ok(None)` at end of stream.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`] when this subscriber fell behind by more than the fan-out's
    /// capacity (it then continues with the oldest message still held); the stream's own
    /// errors, delivered to every subscriber.
    pub async fn recv(&mut self) -> Result<Option<T>, ActorError> {
        if self.done {
            return Ok(None);
        }
        self.start_pump();
        match self.rx.recv().await {
            Ok(Ok(Some(v))) => Ok(Some(v)),
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                Err(ActorError::Lagged { missed })
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                self.done = true;
                Ok(None)
            }
        }
    }

    fn start_pump(&self) {
        let Some(stream) = self.hub.stream.locked().take() else {
            return;
        };
        let tx = self.hub.tx.clone();
        let pump = tokio::spawn(async move {
            loop {
                match stream.recv::<T>().await {
                    Ok(Some(v)) => {
                        let _ = tx.send(Ok(Some(v)));
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(None));
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        *self.hub.pump.locked() = Some(pump);
    }
}
