//! [`ErrorKind`]: which failure an `Error` message reports, typed on the wire.
//!
//! An error that travels home used to carry only its type name as text, so the runtime
//! raised and matched its own kinds ("ContextCancelled", "StreamOverrun", ...) as string
//! literals. The schema's `Error.kind` names them with an enum instead; the type name stays
//! alongside, for the user's own error types and for humans.
//!
//! Two kinds of peer are designed for: an older peer that does not know the field sends
//! nothing there, which reads as [`ErrorKind::User`] (the schema's default); a newer peer
//! may send a kind this build does not know, which reads as [`ErrorKind::Unknown`] — the
//! message still decodes, with every other field intact.
//!
//! A leaf of the module graph next to the generated code (only the conversions to and from
//! it live here); its public path is `plough_ipc_wire::msg::ErrorKind` (and the crate root).

use crate::generated::plough_capnp as schema;
use serde::{Deserialize, Serialize};

/// Which failure an [`ErrorMsg`](crate::ErrorMsg) reports. `User` is a handler's own error;
/// every other kind is raised by the runtime, and its type name is
/// [`ErrorKind::type_name`]. The order is the schema's (`enum ErrorKind`, ordinals `0..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A handler's own error; the message's type name names the handler's error type.
    /// The default, and what a peer that predates the `kind` field reads as.
    #[default]
    User,
    /// The call or context was cancelled (the message's `canceller` says by whom).
    Cancelled,
    /// A stream's sender outran its receiver (the message's `overrun_sender` says who sent).
    StreamOverrun,
    /// A payload did not decode as the receiver's type (details in `type_error`).
    MsgType,
    /// A call named a handler the callee does not expose.
    NoSuchFunction,
    /// A call was made as another kind (function, context, stream) than its handler's.
    KindMismatch,
    /// A registry call reached an actor that is not a registrar.
    NotRegistrar,
    /// A handler panicked; the message text is the panic message.
    Panic,
    /// A handler's result could not be encoded into a payload.
    PayloadEncode,
    /// A context function broke the context protocol (e.g. returned without `started`).
    ContextMisuse,
    /// Several failures together, each one in the message's `nested`.
    Multi,
    /// The connection to a peer closed while a call was in flight.
    TransportClosed,
    /// A child actor could not be spawned.
    Spawn,
    /// An actor's process died.
    ActorDied,
    /// A fan-out subscriber fell behind and missed messages.
    Lagged,
    /// A peer did not answer within its budget.
    ActorTooSlow,
    /// The actor tree was interrupted (SIGINT) and cancelled.
    Interrupted,
    /// The runtime was used against its rules.
    Misuse,
    /// An actor's runtime could not be set up.
    Setup,
    /// A kind that cannot be named more precisely — including every kind a newer peer
    /// sends that this build does not know.
    Unknown,
    /// A peer broke the protocol: a message arrived where it cannot come (e.g. something
    /// other than a spawn spec first, or a result of the wrong kind).
    Protocol,
    /// A message of the call could not be read: a member of the `Msg` union or an enum
    /// value this build does not know (a newer peer's), a malformed field, or a decode
    /// limit hit. That call fails; the connection and every other call carry on.
    BadMessage,
    /// The callee already serves as many calls from this connection as its cap allows
    /// (`Budgets::max_calls_in_flight` in plough): the call was refused, not queued. Retry
    /// once some of the caller's other calls have finished.
    TooManyCalls,
    /// The connection was refused before its peer was authenticated: a Unix peer of
    /// another uid, a proof that did not check out (no secret, the wrong one, a replay),
    /// or too many connections waiting to authenticate. The message says which.
    Refused,
    /// A call named a handler the callee has registered but does not expose: its spawn
    /// named the functions it serves, or the actor narrowed them itself (tractor's
    /// `enable_modules`). Distinct from [`ErrorKind::NoSuchFunction`] (not registered).
    NotExposed,
}

impl ErrorKind {
    /// Every kind, in schema order (`ALL[i]` is ordinal `i` on the wire).
    pub const ALL: [ErrorKind; 25] = [
        ErrorKind::User,
        ErrorKind::Cancelled,
        ErrorKind::StreamOverrun,
        ErrorKind::MsgType,
        ErrorKind::NoSuchFunction,
        ErrorKind::KindMismatch,
        ErrorKind::NotRegistrar,
        ErrorKind::Panic,
        ErrorKind::PayloadEncode,
        ErrorKind::ContextMisuse,
        ErrorKind::Multi,
        ErrorKind::TransportClosed,
        ErrorKind::Spawn,
        ErrorKind::ActorDied,
        ErrorKind::Lagged,
        ErrorKind::ActorTooSlow,
        ErrorKind::Interrupted,
        ErrorKind::Misuse,
        ErrorKind::Setup,
        ErrorKind::Unknown,
        ErrorKind::Protocol,
        ErrorKind::BadMessage,
        ErrorKind::TooManyCalls,
        ErrorKind::Refused,
        ErrorKind::NotExposed,
    ];

    /// The type name that goes with a runtime kind, e.g. `"ContextCancelled"` for
    /// [`ErrorKind::Cancelled`] (the names the runtime and its logs have always used).
    /// Empty for [`ErrorKind::User`]: a user error's type name is the user's type.
    pub const fn type_name(self) -> &'static str {
        match self {
            ErrorKind::User => "",
            ErrorKind::Cancelled => "ContextCancelled",
            ErrorKind::StreamOverrun => "StreamOverrun",
            ErrorKind::MsgType => "MsgTypeError",
            ErrorKind::NoSuchFunction => "NoSuchFunction",
            ErrorKind::KindMismatch => "KindMismatch",
            ErrorKind::NotRegistrar => "NotRegistrar",
            ErrorKind::Panic => "Panic",
            ErrorKind::PayloadEncode => "PayloadEncodeError",
            ErrorKind::ContextMisuse => "ContextError",
            ErrorKind::Multi => "MultiError",
            ErrorKind::TransportClosed => "TransportClosed",
            ErrorKind::Spawn => "SpawnError",
            ErrorKind::ActorDied => "ActorDied",
            ErrorKind::Lagged => "Lagged",
            ErrorKind::ActorTooSlow => "ActorTooSlow",
            ErrorKind::Interrupted => "Interrupted",
            ErrorKind::Misuse => "Misuse",
            ErrorKind::Setup => "SetupError",
            ErrorKind::Unknown => "Unknown",
            ErrorKind::Protocol => "ProtocolError",
            ErrorKind::BadMessage => "BadMessage",
            ErrorKind::TooManyCalls => "TooManyCalls",
            ErrorKind::Refused => "Refused",
            ErrorKind::NotExposed => "NotExposed",
        }
    }

    /// The kind a received `Error.kind` stands for; a value this build does not know (a
    /// newer peer's kind) is [`ErrorKind::Unknown`], never an error.
    pub(crate) fn from_wire(r: Result<schema::ErrorKind, capnp::NotInSchema>) -> Self {
        use schema::ErrorKind as S;
        match r {
            Ok(S::User) => ErrorKind::User,
            Ok(S::Cancelled) => ErrorKind::Cancelled,
            Ok(S::StreamOverrun) => ErrorKind::StreamOverrun,
            Ok(S::MsgType) => ErrorKind::MsgType,
            Ok(S::NoSuchFunction) => ErrorKind::NoSuchFunction,
            Ok(S::KindMismatch) => ErrorKind::KindMismatch,
            Ok(S::NotRegistrar) => ErrorKind::NotRegistrar,
            Ok(S::Panic) => ErrorKind::Panic,
            Ok(S::PayloadEncode) => ErrorKind::PayloadEncode,
            Ok(S::ContextMisuse) => ErrorKind::ContextMisuse,
            Ok(S::Multi) => ErrorKind::Multi,
            Ok(S::TransportClosed) => ErrorKind::TransportClosed,
            Ok(S::Spawn) => ErrorKind::Spawn,
            Ok(S::ActorDied) => ErrorKind::ActorDied,
            Ok(S::Lagged) => ErrorKind::Lagged,
            Ok(S::ActorTooSlow) => ErrorKind::ActorTooSlow,
            Ok(S::Interrupted) => ErrorKind::Interrupted,
            Ok(S::Misuse) => ErrorKind::Misuse,
            Ok(S::Setup) => ErrorKind::Setup,
            Ok(S::Protocol) => ErrorKind::Protocol,
            Ok(S::BadMessage) => ErrorKind::BadMessage,
            Ok(S::TooManyCalls) => ErrorKind::TooManyCalls,
            Ok(S::Refused) => ErrorKind::Refused,
            Ok(S::NotExposed) => ErrorKind::NotExposed,
            Ok(S::Unknown) | Err(capnp::NotInSchema(_)) => ErrorKind::Unknown,
        }
    }
}

impl From<ErrorKind> for schema::ErrorKind {
    fn from(k: ErrorKind) -> Self {
        use schema::ErrorKind as S;
        match k {
            ErrorKind::User => S::User,
            ErrorKind::Cancelled => S::Cancelled,
            ErrorKind::StreamOverrun => S::StreamOverrun,
            ErrorKind::MsgType => S::MsgType,
            ErrorKind::NoSuchFunction => S::NoSuchFunction,
            ErrorKind::KindMismatch => S::KindMismatch,
            ErrorKind::NotRegistrar => S::NotRegistrar,
            ErrorKind::Panic => S::Panic,
            ErrorKind::PayloadEncode => S::PayloadEncode,
            ErrorKind::ContextMisuse => S::ContextMisuse,
            ErrorKind::Multi => S::Multi,
            ErrorKind::TransportClosed => S::TransportClosed,
            ErrorKind::Spawn => S::Spawn,
            ErrorKind::ActorDied => S::ActorDied,
            ErrorKind::Lagged => S::Lagged,
            ErrorKind::ActorTooSlow => S::ActorTooSlow,
            ErrorKind::Interrupted => S::Interrupted,
            ErrorKind::Misuse => S::Misuse,
            ErrorKind::Setup => S::Setup,
            ErrorKind::Unknown => S::Unknown,
            ErrorKind::Protocol => S::Protocol,
            ErrorKind::BadMessage => S::BadMessage,
            ErrorKind::TooManyCalls => S::TooManyCalls,
            ErrorKind::Refused => S::Refused,
            ErrorKind::NotExposed => S::NotExposed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_is_in_schema_order_and_complete() {
        for (i, k) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(u16::from(schema::ErrorKind::from(k)), i as u16, "{k:?}");
            assert_eq!(ErrorKind::from_wire(schema::ErrorKind::try_from(i as u16)), k);
        }
        assert_eq!(ErrorKind::ALL.into_iter().collect::<HashSet<_>>().len(), 25);
        // No ordinal past the last kind in the schema: ALL covers every enumerant.
        assert!(schema::ErrorKind::try_from(ErrorKind::ALL.len() as u16).is_err());
    }

    #[test]
    fn unknown_values_read_as_unknown() {
        for raw in [ErrorKind::ALL.len() as u16, ErrorKind::ALL.len() as u16 + 1, 255, u16::MAX] {
            assert_eq!(ErrorKind::from_wire(Err(capnp::NotInSchema(raw))), ErrorKind::Unknown);
        }
    }

    #[test]
    fn type_names_are_the_runtime_names() {
        let expected = [
            (ErrorKind::User, ""),
            (ErrorKind::Cancelled, "ContextCancelled"),
            (ErrorKind::StreamOverrun, "StreamOverrun"),
            (ErrorKind::MsgType, "MsgTypeError"),
            (ErrorKind::NoSuchFunction, "NoSuchFunction"),
            (ErrorKind::KindMismatch, "KindMismatch"),
            (ErrorKind::NotRegistrar, "NotRegistrar"),
            (ErrorKind::Panic, "Panic"),
            (ErrorKind::PayloadEncode, "PayloadEncodeError"),
            (ErrorKind::ContextMisuse, "ContextError"),
            (ErrorKind::Multi, "MultiError"),
            (ErrorKind::TransportClosed, "TransportClosed"),
            (ErrorKind::Spawn, "SpawnError"),
            (ErrorKind::ActorDied, "ActorDied"),
            (ErrorKind::Lagged, "Lagged"),
            (ErrorKind::ActorTooSlow, "ActorTooSlow"),
            (ErrorKind::Interrupted, "Interrupted"),
            (ErrorKind::Misuse, "Misuse"),
            (ErrorKind::Setup, "SetupError"),
            (ErrorKind::Unknown, "Unknown"),
            (ErrorKind::Protocol, "ProtocolError"),
            (ErrorKind::BadMessage, "BadMessage"),
            (ErrorKind::TooManyCalls, "TooManyCalls"),
            (ErrorKind::Refused, "Refused"),
            (ErrorKind::NotExposed, "NotExposed"),
        ];
        assert_eq!(expected.map(|(k, _)| k), ErrorKind::ALL);
        for (k, name) in expected {
            assert_eq!(k.type_name(), name, "{k:?}");
        }
        const CANCELLED: &str = ErrorKind::Cancelled.type_name(); // usable in const context
        assert_eq!(CANCELLED, "ContextCancelled");
        assert_eq!(ErrorKind::default(), ErrorKind::User);
    }
}
