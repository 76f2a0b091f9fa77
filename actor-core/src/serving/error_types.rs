//! Error types registered to travel as themselves (tractor's `reg_err_types`): a
//! handler's error of such a type is sent home with its value encoded, so that the caller
//! gets it back as that type ([`RemoteActorError::downcast_remote`]), through any number
//! of relays. Any other error type travels as its name, message and backtrace only.
//!
//! [`RemoteActorError::downcast_remote`]: crate::RemoteActorError::downcast_remote

use plough_ipc_wire::msg::ErrorValue;
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;

/// Encodes an error of one registered type (`None` when the value is of another type or
/// its `Serialize` fails).
type Encoder = fn(&dyn Any) -> Option<ErrorValue>;

/// Encodes a registered error found inside an [`ActorError::Other`](crate::ActorError::Other)
/// (a handler that returns `ActorError`): its short type name and value.
type Wrapped = fn(&(dyn std::error::Error + 'static)) -> Option<(String, ErrorValue)>;

/// The registered error types of a registry, by type.
#[derive(Clone, Default)]
pub(crate) struct ErrorTypes {
    encoders: HashMap<TypeId, (Encoder, Wrapped)>,
}

fn encode_wrapped<E: Serialize + std::error::Error + 'static>(
    e: &(dyn std::error::Error + 'static),
) -> Option<(String, ErrorValue)> {
    let e = e.downcast_ref::<E>()?;
    encode_as::<E>(e).map(|v| (super::registry::short_type_name::<E>(), v))
}

fn encode_as<E: Serialize + 'static>(e: &dyn Any) -> Option<ErrorValue> {
    let e = e.downcast_ref::<E>()?;
    match Payload::encode(e) {
        Ok(payload) => {
            Some(ErrorValue { type_path: std::any::type_name::<E>().to_owned(), payload })
        }
        Err(err) => {
            // Still travels as its name and message.
            tracing::warn!(error = %err, ty = std::any::type_name::<E>(), "a registered error type did not encode");
            None
        }
    }
}

impl ErrorTypes {
    /// Registers `E`.
    pub(crate) fn register<E: Serialize + std::error::Error + 'static>(&mut self) {
        self.encoders.insert(TypeId::of::<E>(), (encode_as::<E>, encode_wrapped::<E>));
    }

    /// The value of error `e`, when its type is registered.
    pub(crate) fn value_of(&self, e: &dyn Any) -> Option<ErrorValue> {
        self.encoders.get(&(*e).type_id()).and_then(|(encode, _)| encode(e))
    }

    /// The short type name and value of `e` (the error inside an `ActorError::Other`),
    /// when its type is registered.
    pub(crate) fn wrapped(
        &self,
        e: &(dyn std::error::Error + 'static),
    ) -> Option<(String, ErrorValue)> {
        self.encoders.values().find_map(|(_, wrapped)| wrapped(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, thiserror::Error)]
    #[error("mine {code}")]
    struct Mine {
        code: u32,
    }

    #[test]
    fn only_registered_types_get_a_value_which_names_the_full_type_path() {
        let mut types = ErrorTypes::default();
        assert!(types.value_of(&Mine { code: 1 }).is_none(), "not registered yet");
        types.register::<Mine>();
        let v = types.value_of(&Mine { code: 7 }).expect("registered");
        assert_eq!(v.type_path, std::any::type_name::<Mine>());
        assert_eq!(v.payload.decode::<Mine>().unwrap(), Mine { code: 7 });
        assert!(types.value_of(&"a str").is_none(), "another type");
        let wrapped = crate::base::error::ActorError::other(Mine { code: 8 });
        let crate::base::error::ActorError::Other(inner) = &wrapped else { unreachable!() };
        let (name, v) = types.wrapped(&**inner).expect("found inside ActorError::Other");
        assert_eq!(
            (name.as_str(), v.payload.decode::<Mine>().unwrap()),
            ("Mine", Mine { code: 8 })
        );
    }
}
