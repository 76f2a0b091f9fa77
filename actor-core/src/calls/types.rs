//! Declared payload types ([`MsgTypes`]): what a context says it sends, checked before
//! a value leaves.

use plough_ipc_wire::msg::MsgKind;
use plough_ipc_wire::payload::Payload;
use serde::Serialize;

/// The payload types a context declares for what it sends: its first value
/// (`Started`), its stream messages (`Yield`) and its result (`Return`). A side that
/// sends a value of another type gets [`ActorError::MsgType`](crate::ActorError::MsgType) *before* anything is sent,
/// naming the kind, the declared type and what it tried to send; the receiver's own
/// types are checked on receipt, when it decodes. Declare them at registration
/// ([`Registry::declare`](crate::Registry::declare)) or on a context
/// ([`Context::declare_types`](crate::Context::declare_types)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgTypes {
    /// The declared type of `Started`.
    pub started: Option<&'static str>,
    /// The declared type of stream messages.
    pub yields: Option<&'static str>,
    /// The declared type of the result.
    pub returns: Option<&'static str>,
}

impl MsgTypes {
    /// Nothing declared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the type of `Started`.
    pub fn started<T: ?Sized>(self) -> Self {
        MsgTypes { started: Some(std::any::type_name::<T>()), ..self }
    }

    /// Declares the type of stream messages.
    pub fn yields<T: ?Sized>(self) -> Self {
        MsgTypes { yields: Some(std::any::type_name::<T>()), ..self }
    }

    /// Declares the type of the result.
    pub fn returns<T: ?Sized>(self) -> Self {
        MsgTypes { returns: Some(std::any::type_name::<T>()), ..self }
    }

    /// Checks a value about to be sent as `kind` against the declaration.
    ///
    /// # Errors
    ///
    /// [`MsgTypeError`](plough_ipc_wire::MsgTypeError) naming `kind`, the declared type
    /// and a rendering of the value (with its type).
    pub fn check<T: Serialize + ?Sized>(
        &self,
        kind: MsgKind,
        value: &T,
    ) -> Result<(), plough_ipc_wire::MsgTypeError> {
        let declared = match kind {
            MsgKind::Started => self.started,
            MsgKind::Yield => self.yields,
            MsgKind::Return => self.returns,
            _ => None,
        };
        let sending = std::any::type_name::<T>();
        match declared {
            Some(d) if d != sending => {
                let rendering = Payload::encode(value)
                    .map(|p| plough_ipc_wire::payload::render(&p))
                    .unwrap_or_else(|e| e.to_string());
                Err(plough_ipc_wire::MsgTypeError {
                    expected: d.to_owned(),
                    kind: Some(kind),
                    arrived: format!("{rendering} ({sending})"),
                    reason: format!("declared `{d}`, sending a `{sending}`"),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_reject_other_types_naming_kind_declared_and_sent() {
        let types = MsgTypes::new().started::<u32>().yields::<String>();
        assert!(types.check(MsgKind::Started, &7u32).is_ok());
        assert!(types.check(MsgKind::Return, &"anything").is_ok(), "undeclared: unchecked");
        let e = types.check(MsgKind::Yield, &5i64).unwrap_err();
        assert_eq!(e.kind, Some(MsgKind::Yield));
        assert_eq!(e.expected, "alloc::string::String");
        assert_eq!(e.arrived, "5 (i64)");
    }
}
