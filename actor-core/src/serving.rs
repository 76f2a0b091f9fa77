//! **serving** — the layer above registrar: an actor and what it serves.
//!
//! * [`actor`]: [`Actor`](actor::Actor), the one actor of this process (its fields are
//!   private; the layers above use its methods);
//! * [`registry`]: [`Registry`](registry::Registry), the program's functions by name;
//! * [`cx`]: [`Cx`](cx::Cx), what a handler knows about the call it serves;
//! * [`dispatch`]: how a `Start` from a connection becomes a running call;
//! * [`discovery`]: finding other actors through the registrar;
//! * [`exposure`]: which registered functions an actor serves (tractor's `enable_modules`);
//! * [`lineage`]: portals from an actor to its parent and to its tree's root.
//!
//! The type recursion `Actor ⊃ Registry ⊃ handler(Cx) ⊃ Actor` stays inside this layer.
//! Opening a nursery is the supervision layer's (`Actor::nursery`, `Cx::nursery` are
//! defined there).

pub(crate) mod actor;
pub(crate) mod cx;
pub(crate) mod discovery;
pub(crate) mod dispatch;
pub(crate) mod error_types;
pub(crate) mod exposure;
pub(crate) mod lineage;
pub(crate) mod registry;
pub(crate) mod typed;
