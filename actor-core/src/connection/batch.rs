//! The writer's batching of stream items: consecutive small `Yield`s of one call, queued
//! together, leave as one `Yields` frame.
//!
//! A stream of small messages costs per *frame* far more than per byte: an envelope to
//! build, one to read, a route lookup, a lock and a wake-up on the receiving side. The
//! writer already coalesces everything queued into one `write`; this also folds the
//! stream items among it into as few frames as it can, without reordering anything:
//! only items that were queued one right after the other, for the same call, share a
//! frame, so every message keeps its place relative to every other (a `Stop` after the
//! items still comes after them). Nothing waits to fill a batch: a batch is whatever
//! was queued when the writer woke, so one lone item costs what it did.
//!
//! A peer that did not say in its hello that it reads batches
//! ([`Established::peer_batches`](plough_ipc_wire::handshake::Established::peer_batches))
//! gets one `Yield` per item.

use futures::{Sink, SinkExt};
use plough_ipc_wire::FrameError;
use plough_ipc_wire::msg::{Cid, Msg};
use plough_ipc_wire::payload::Payload;

/// Items larger than this (16 KiB) go alone: batching them saves nothing worth a copy
/// into a shared frame, and keeps a frame's size near the items'.
pub(crate) const BATCH_ITEM_BYTES: usize = 16 << 10;

/// A batch holds at most this many items (1,024)…
pub(crate) const BATCH_ITEMS: usize = 1024;

/// …and at most this many payload bytes (256 KiB), so a frame stays far below the
/// frame limit and a reader's buffer stays small.
pub(crate) const BATCH_BYTES: usize = 256 << 10;

/// The writer's batch in the making: the items of one call queued one after the other.
pub(crate) struct Batcher {
    /// Whether the peer reads `Yields`.
    enabled: bool,
    cid: Cid,
    items: Vec<Payload>,
    bytes: usize,
}

impl Batcher {
    pub(crate) fn new(enabled: bool) -> Self {
        Batcher { enabled, cid: 0, items: Vec::new(), bytes: 0 }
    }

    /// Holds `msg` in the batch if it can join it as the batch stands, with nothing to send
    /// first; gives it back otherwise, for [`Batcher::feed`]. The writer's per-item step:
    /// an item that joins costs no future.
    pub(crate) fn try_hold(&mut self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::Yield { cid, payload }
                if self.enabled
                    && payload.len() <= BATCH_ITEM_BYTES
                    && payload.shm_ref().is_none() =>
            {
                let fits =
                    self.items.len() < BATCH_ITEMS && self.bytes + payload.len() <= BATCH_BYTES;
                if !self.items.is_empty() && (cid != self.cid || !fits) {
                    return Some(Msg::Yield { cid, payload });
                }
                self.cid = cid;
                self.bytes += payload.len();
                self.items.push(payload);
                None
            }
            other => Some(other),
        }
    }

    /// Feeds `msg` to `sink`, or holds it in the batch; a message that cannot join the
    /// batch first sends what it holds.
    pub(crate) async fn feed<S>(&mut self, sink: &mut S, msg: Msg) -> Result<(), FrameError>
    where
        S: Sink<Msg, Error = FrameError> + Unpin,
    {
        let Some(msg) = self.try_hold(msg) else { return Ok(()) };
        // It does not join the batch as it stands: what the batch holds goes first. An
        // item then starts the next batch; anything else goes on its own.
        self.finish(sink).await?;
        match self.try_hold(msg) {
            None => Ok(()),
            Some(other) => sink.feed(other).await,
        }
    }

    /// Sends what the batch holds: nothing, one `Yield`, or one `Yields`.
    pub(crate) async fn finish<S>(&mut self, sink: &mut S) -> Result<(), FrameError>
    where
        S: Sink<Msg, Error = FrameError> + Unpin,
    {
        self.bytes = 0;
        let msg = match self.items.len() {
            0 => return Ok(()),
            1 => Msg::Yield { cid: self.cid, payload: self.items.pop().expect("one item") },
            n => Msg::Yields {
                cid: self.cid,
                payloads: std::mem::replace(&mut self.items, Vec::with_capacity(n)),
            },
        };
        sink.feed(msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Runs `msgs` through a batcher into a vector sink.
    fn batched(enabled: bool, msgs: Vec<Msg>) -> Vec<Msg> {
        let mut out: Vec<Msg> = Vec::new();
        {
            let sink = futures::sink::unfold(&mut out, |out, m: Msg| async move {
                out.push(m);
                Ok::<_, FrameError>(out)
            });
            let mut sink = std::pin::pin!(sink);
            let mut b = Batcher::new(enabled);
            async {
                for m in msgs {
                    b.feed(&mut sink, m).await.unwrap();
                }
                b.finish(&mut sink).await.unwrap();
                sink.flush().await.unwrap();
            }
            .now_or_never()
            .expect("never waits");
        }
        out
    }

    fn y(cid: Cid, n: u8) -> Msg {
        Msg::Yield { cid, payload: Payload::from(vec![n; 8]) }
    }

    /// Expands batches back into single yields: what the receiver sees.
    fn flat(msgs: &[Msg]) -> Vec<Msg> {
        msgs.iter()
            .flat_map(|m| match m {
                Msg::Yields { cid, payloads } => {
                    payloads.iter().map(|p| Msg::Yield { cid: *cid, payload: p.clone() }).collect()
                }
                m => vec![m.clone()],
            })
            .collect()
    }

    #[test]
    fn consecutive_items_of_one_call_share_a_frame_and_nothing_is_reordered() {
        let msgs = vec![y(1, 0), y(1, 1), y(1, 2), y(3, 3), y(3, 4), Msg::Stop { cid: 3 }, y(1, 5)];
        let out = batched(true, msgs.clone());
        assert_eq!(flat(&out), msgs);
        let kinds: Vec<usize> = out
            .iter()
            .map(|m| match m {
                Msg::Yields { payloads, .. } => payloads.len(),
                _ => 1,
            })
            .collect();
        assert_eq!(kinds, [3, 2, 1, 1], "{out:?}");
        assert!(matches!(out[3], Msg::Yield { cid: 1, .. }), "a lone item stays a yield");
    }

    #[test]
    fn a_peer_that_reads_no_batches_gets_one_yield_per_item() {
        let msgs = vec![y(1, 0), y(1, 1), y(1, 2)];
        assert_eq!(batched(false, msgs.clone()), msgs);
    }

    #[test]
    fn batches_are_bounded_in_items_and_bytes_and_large_items_go_alone() {
        let msgs: Vec<Msg> = (0..BATCH_ITEMS + 5).map(|i| y(1, i as u8)).collect();
        let out = batched(true, msgs.clone());
        assert_eq!(flat(&out), msgs);
        assert!(matches!(&out[0], Msg::Yields { payloads, .. } if payloads.len() == BATCH_ITEMS));
        let big = |n| Msg::Yield { cid: 1, payload: Payload::from(vec![n; BATCH_ITEM_BYTES + 1]) };
        let mid = |n| Msg::Yield { cid: 1, payload: Payload::from(vec![n; BATCH_ITEM_BYTES]) };
        let msgs = vec![y(1, 0), big(1), y(1, 2), mid(3), mid(4), mid(5)];
        let out = batched(true, msgs.clone());
        assert_eq!(flat(&out), msgs);
        for m in &out {
            if let Msg::Yields { payloads, .. } = m {
                assert!(payloads.iter().map(Payload::len).sum::<usize>() <= BATCH_BYTES);
                assert!(payloads.iter().all(|p| p.len() <= BATCH_ITEM_BYTES));
            }
        }
    }
}
