//! The errors of the actor runtime, and the shape in which a failure travels home.
//!
//! A failure anywhere in a tree must reach the code that opened the nursery as a typed
//! value naming the actor it came from and the actors it travelled through. So every
//! error that can cross a process boundary is `Clone`, converts to and from the wire's
//! [`ErrorMsg`], and keeps the remote backtrace as text. Several failures of one nursery
//! arrive together in one [`ActorError::Multi`], none lost and none masked by the cancel
//! that their siblings received.

use plough_ipc_wire::msg::{Aid, ErrorMsg, TypeErrorInfo};
use plough_ipc_wire::payload::Payload;
use std::fmt;

/// An error raised in another actor, as it arrived here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteActorError {
    /// The actor where it was raised.
    pub source: Aid,
    /// The error's type name in the source actor (e.g. `ParseIntError`).
    pub type_name: String,
    /// Its message.
    pub message: String,
    /// The source's backtrace, as text (may be empty).
    pub backtrace: String,
    /// The actors it travelled through on its way here, nearest the source first.
    pub relay_path: Vec<Aid>,
    /// For a cancellation: who cancelled.
    pub canceller: Option<Aid>,
    /// For a stream overrun: who overran.
    pub overrun_sender: Option<Aid>,
    /// For a payload type error: what was expected and what arrived.
    pub type_error: Option<TypeErrorInfo>,
    /// For a `MultiError`: every failure it holds.
    pub nested: Vec<RemoteActorError>,
}

impl RemoteActorError {
    /// An error raised here, by `source`, ready to be sent.
    pub fn new(source: Aid, type_name: impl Into<String>, message: impl Into<String>) -> Self {
        RemoteActorError {
            source,
            type_name: type_name.into(),
            message: message.into(),
            backtrace: String::new(),
            relay_path: Vec::new(),
            canceller: None,
            overrun_sender: None,
            type_error: None,
            nested: Vec::new(),
        }
    }

    /// The same error after it passed through `hop` on its way to the root.
    pub fn relayed_by(mut self, hop: Aid) -> Self {
        for n in &mut self.nested {
            *n = n.clone().relayed_by(hop.clone());
        }
        self.relay_path.push(hop);
        self
    }

    /// The wire form (for the call `cid`, if any).
    pub fn to_msg(&self, cid: Option<u64>) -> ErrorMsg {
        ErrorMsg {
            cid,
            source: self.source.clone(),
            type_name: self.type_name.clone(),
            message: self.message.clone(),
            backtrace: self.backtrace.clone(),
            relay_path: self.relay_path.clone(),
            canceller: self.canceller.clone(),
            overrun_sender: self.overrun_sender.clone(),
            type_error: self.type_error.clone(),
            nested: self.nested.iter().map(|n| n.to_msg(None)).collect(),
        }
    }
}

impl From<ErrorMsg> for RemoteActorError {
    fn from(m: ErrorMsg) -> Self {
        RemoteActorError {
            source: m.source,
            type_name: m.type_name,
            message: m.message,
            backtrace: m.backtrace,
            relay_path: m.relay_path,
            canceller: m.canceller,
            overrun_sender: m.overrun_sender,
            type_error: m.type_error,
            nested: m.nested.into_iter().map(RemoteActorError::from).collect(),
        }
    }
}

impl fmt::Display for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in actor {}: {}", self.type_name, self.source, self.message)?;
        if !self.relay_path.is_empty() {
            f.write_str(" (relayed via ")?;
            for (i, hop) in self.relay_path.iter().enumerate() {
                if i > 0 {
                    f.write_str(" -> ")?;
                }
                write!(f, "{hop}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteActorError {}

/// Why a child could not be spawned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpawnError {
    /// The spawn method is known but not implemented (e.g. the reserved
    /// `subint_forkserver`).
    #[error("spawn method `{method}` is not implemented: {why}; use `{instead}`")]
    NotImplemented {
        /// The method asked for.
        method: String,
        /// Why it is not available.
        why: String,
        /// The working choice.
        instead: String,
    },
    /// The child died before it connected back.
    #[error("actor {name} died during boot ({status}){}", stderr_tail(.stderr))]
    DiedDuringBoot {
        /// The actor's name.
        name: String,
        /// How it ended, e.g. `exited with code 1`.
        status: String,
        /// The end of what it wrote to stderr, if captured.
        stderr: String,
    },
    /// The child did not connect back within the deadline (it was killed and reaped).
    #[error("actor {name} did not connect back within {secs:.1} s{}", stderr_tail(.stderr))]
    ConnectTimeout {
        /// The actor's name.
        name: String,
        /// The deadline.
        secs: f64,
        /// The end of what it wrote to stderr meanwhile, if captured.
        stderr: String,
    },
    /// The OS refused (fork/exec/socket).
    #[error("spawning actor {name} failed: {message}")]
    Os {
        /// The actor's name.
        name: String,
        /// The OS error with context.
        message: String,
    },
}

fn stderr_tail(s: &str) -> String {
    if s.is_empty() { String::new() } else { format!(": {}", s.trim_end()) }
}

/// Every error the runtime hands to user code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActorError {
    /// An error raised in another actor.
    #[error("remote error: {0}")]
    Remote(Box<RemoteActorError>),
    /// The context or call was cancelled (by `canceller`).
    #[error("cancelled by {canceller}")]
    ContextCancelled {
        /// Who cancelled.
        canceller: Aid,
    },
    /// A payload did not decode as the expected type.
    #[error(transparent)]
    MsgType(#[from] plough_ipc_wire::MsgTypeError),
    /// A stream's receiver fell too far behind.
    #[error("stream overrun: {sender} sent faster than {receiver} read")]
    StreamOverrun {
        /// The overrunning sender.
        sender: Aid,
        /// The slow receiver.
        receiver: Aid,
    },
    /// A fan-out subscriber fell behind and missed `missed` messages (it continues with
    /// the oldest message still held).
    #[error("subscriber lagged by {missed} messages")]
    Lagged {
        /// How many messages it missed.
        missed: u64,
    },
    /// The peer did not answer within its budget.
    #[error("actor {actor} too slow: no {what} within {secs:.1} s")]
    ActorTooSlow {
        /// The slow actor.
        actor: Aid,
        /// What it failed to do.
        what: String,
        /// The budget.
        secs: f64,
    },
    /// The connection to a peer closed while a call was in flight.
    #[error("connection to {peer} closed{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    TransportClosed {
        /// The peer.
        peer: String,
        /// What we know about why.
        detail: String,
    },
    /// A child could not be spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Several children of one nursery failed: every failure, in arrival order.
    #[error("{} actors failed: {}", .0.len(), join(.0))]
    Multi(Vec<ActorError>),
    /// The tree was interrupted (SIGINT) and cancelled.
    #[error("interrupted (SIGINT): the actor tree was cancelled")]
    Interrupted,
    /// Misuse of the runtime (a second root in one process, a call on a closed portal...).
    #[error("{0}")]
    Runtime(String),
}

fn join(errs: &[ActorError]) -> String {
    errs.iter().map(|e| format!("[{e}]")).collect::<Vec<_>>().join(", ")
}

impl From<RemoteActorError> for ActorError {
    fn from(e: RemoteActorError) -> Self {
        ActorError::Remote(Box::new(e))
    }
}

impl ActorError {
    /// The variant's name, as a remote error's type name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ActorError::Remote(_) => "RemoteActorError",
            ActorError::ContextCancelled { .. } => "ContextCancelled",
            ActorError::MsgType(_) => "MsgTypeError",
            ActorError::StreamOverrun { .. } => "StreamOverrun",
            ActorError::Lagged { .. } => "Lagged",
            ActorError::ActorTooSlow { .. } => "ActorTooSlow",
            ActorError::TransportClosed { .. } => "TransportClosed",
            ActorError::Spawn(_) => "SpawnError",
            ActorError::Multi(_) => "MultiError",
            ActorError::Interrupted => "Interrupted",
            ActorError::Runtime(_) => "RuntimeError",
        }
    }

    /// The remote error, when this is one.
    pub fn as_remote(&self) -> Option<&RemoteActorError> {
        match self {
            ActorError::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// The failures this error holds: itself, or each member of a [`ActorError::Multi`].
    pub fn failures(&self) -> &[ActorError] {
        match self {
            ActorError::Multi(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// Whether this is (only) a cancellation, as opposed to a real failure.
    pub fn is_cancel(&self) -> bool {
        matches!(self, ActorError::ContextCancelled { .. })
            || self.as_remote().is_some_and(|r| r.canceller.is_some())
    }

    /// Collects several failures: none is one `Ok`, one is itself, several are `Multi`
    /// (nested `Multi`s are flattened). Cancellations are dropped when a real failure is
    /// present: a cancel that a failure caused must not mask it.
    pub fn collect(errors: Vec<ActorError>) -> Option<ActorError> {
        let mut flat = Vec::new();
        for e in errors {
            match e {
                ActorError::Multi(v) => flat.extend(v),
                other => flat.push(other),
            }
        }
        if flat.iter().any(|e| !e.is_cancel()) {
            flat.retain(|e| !e.is_cancel());
        }
        match flat.len() {
            0 => None,
            1 => flat.pop(),
            _ => Some(ActorError::Multi(flat)),
        }
    }
}

/// The wire form of `err` as it leaves actor `me` on its way home: a remote error keeps
/// its source and gains `me` on its relay path; anything else is raised here.
pub(crate) fn relay(err: &ActorError, me: &Aid) -> RemoteActorError {
    match err {
        ActorError::Remote(r) => (**r).clone().relayed_by(me.clone()),
        ActorError::ContextCancelled { canceller } => {
            let mut e = RemoteActorError::new(me.clone(), "ContextCancelled", err.to_string());
            e.canceller = Some(canceller.clone());
            e
        }
        ActorError::MsgType(t) => {
            let mut e = RemoteActorError::new(me.clone(), "MsgTypeError", t.to_string());
            e.type_error = Some(t.into());
            e
        }
        ActorError::StreamOverrun { sender, .. } => {
            let mut e = RemoteActorError::new(me.clone(), "StreamOverrun", err.to_string());
            e.overrun_sender = Some(sender.clone());
            e
        }
        ActorError::Multi(errs) => {
            let mut e = RemoteActorError::new(me.clone(), "MultiError", err.to_string());
            e.nested = errs.iter().map(|x| relay(x, me)).collect();
            e
        }
        other => RemoteActorError::new(me.clone(), other.kind_name(), other.to_string()),
    }
}

/// Encodes a value as a payload, as an `ActorError` on failure.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(v: &T) -> Result<Payload, ActorError> {
    Payload::encode(v).map_err(|e| ActorError::Runtime(format!("cannot encode arguments: {e}")))
}

/// `Result<T, ActorError>`.
pub type Result<T, E = ActorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Uuid;

    fn aid(name: &str, pid: u32) -> Aid {
        Aid { name: name.into(), uuid: Uuid([pid as u8; 16]), pid }
    }

    #[test]
    fn remote_errors_name_source_and_relay_path() {
        let e = RemoteActorError::new(aid("leaf", 30), "ValueError", "bad input")
            .relayed_by(aid("branch", 20))
            .relayed_by(aid("trunk", 10));
        assert_eq!(
            e.to_string(),
            "ValueError in actor leaf@30: bad input (relayed via branch@20 -> trunk@10)"
        );
        let back = RemoteActorError::from(e.to_msg(Some(7)));
        assert_eq!(back, e);
        assert_eq!(e.to_msg(Some(7)).cid, Some(7));
    }

    #[test]
    fn collect_keeps_every_failure_and_drops_masking_cancels() {
        let fail = |n: u32| ActorError::from(RemoteActorError::new(aid("w", n), "E", "x"));
        let cancel = ActorError::ContextCancelled { canceller: aid("root", 1) };
        assert!(ActorError::collect(vec![]).is_none());
        assert!(matches!(ActorError::collect(vec![fail(1)]), Some(ActorError::Remote(_))));
        let multi = ActorError::collect(vec![fail(1), cancel.clone(), fail(2)]).unwrap();
        assert_eq!(multi.failures().len(), 2, "{multi}");
        let nested = ActorError::collect(vec![multi, fail(3)]).unwrap();
        assert_eq!(nested.failures().len(), 3);
        assert!(nested.to_string().starts_with("3 actors failed: "));
        // Only cancels: they are the outcome.
        let only = ActorError::collect(vec![cancel.clone(), cancel]).unwrap();
        assert_eq!(only.failures().len(), 2);
    }

    #[test]
    fn spawn_errors_read_well() {
        let e = SpawnError::DiedDuringBoot {
            name: "w".into(),
            status: "exited with code 3".into(),
            stderr: "boom\n".into(),
        };
        assert_eq!(e.to_string(), "actor w died during boot (exited with code 3): boom");
        let e = SpawnError::NotImplemented {
            method: "subint_forkserver".into(),
            why: "reserved".into(),
            instead: "main_thread_forkserver".into(),
        };
        assert!(e.to_string().contains("use `main_thread_forkserver`"));
    }
}
