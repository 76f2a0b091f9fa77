# plough's wire protocol: the envelope every actor speaks.
#
# Every frame on a plough connection is one `Msg`, framed with Cap'n Proto's standard
# stream framing (segment table, then segments). Payloads (call arguments, results,
# stream items) are opaque bytes produced by a payload codec (MessagePack by default),
# so user types never need a .capnp file.
#
# Evolution rules (read before editing):
#
#  1. Never renumber, retype or reorder an existing field or union member. The ordinal
#     (`@N`) is the wire identity; the name is only for humans and generated code.
#  2. New fields and new union members take the next free ordinal of their struct.
#     Old peers ignore unknown fields; an unknown `Msg` union member decodes on an old
#     peer to a typed "unknown variant" error for that one message only (the connection
#     survives), so a new variant must be something an old peer can afford to miss, or
#     be negotiated first (e.g. through a field of `Hello`).
#  3. Never delete a field or member: rename it `obsoleteFoo` and stop writing it. Its
#     ordinal stays reserved forever.
#  4. Defaults are part of the wire format: never change one.
#  5. A field that is "optional" is a struct pointer (absent = null, test with `has*`)
#     or a union with a `none` member; do not use sentinel values.
#  6. A new `Msg` member that belongs to a call is a struct whose first field is
#     `cid @0 :UInt64` (as in every call-bearing member today): an old peer that cannot
#     read the member still finds the call id in the first data word of the struct the
#     union points at, and answers (or fails) that one call with a `badMessage` error
#     instead of leaving it unanswered.
#  7. After an edit run `cargo xtask codegen` and commit the regenerated
#     `src/generated/`; CI runs `cargo xtask codegen --check`.

@0x9ac4b605bfc446ca;

# An actor's identity: the first thing both ends say on every connection.
struct Aid {
  name @0 :Text;     # the actor's name, e.g. "root" or "worker-3"
  uuid @1 :Data;     # 16 bytes, unique per actor instance
  pid @2 :UInt32;    # OS process id
}

# The opening message of a connection, sent by both ends before anything else. Each end
# then answers the other's `nonce` with a `proof` (see `Msg.proof`); nothing else is read
# from a peer until its proof checked out.
struct Hello {
  aid @0 :Aid;
  # Never written: tree authentication is the `nonce` below and `Msg.proof`.
  obsoleteTreeProof @1 :Data;
  # 32 fresh random bytes: the challenge the peer's proof must answer (so that a recorded
  # proof is worth nothing on another connection).
  nonce @2 :Data;
  # The speaker's build id (16 bytes: a hash of its executable), or empty when it states
  # none. Sent where builds must match (between hosts, over TLS): a peer whose build
  # differs is refused, told both ids.
  build @3 :Data;
  # The speaker reads `Msg.yields` (several stream items in one frame). A peer sends
  # batches only to one that said so; an older peer, which never says it, gets one
  # `yield` per item.
  batches @4 :Bool;
  # The speaker reads payloads lent through shared memory (`ShmRef`): only to a peer that
  # says so, and is on this host, does a sender lend one (an old peer reads false).
  readsShm @5 :Bool;
}

struct KeyValue {
  key @0 :Text;
  value @1 :Text;
}

# Process-global runtime settings a parent hands to a child it spawns.
struct RuntimeVars {
  isRoot @0 :Bool;
  debugMode @1 :Bool;
  spawnMethod @2 :Text;
  logLevel @3 :Text;
  extra @4 :List(KeyValue);   # forward-compatible escape hatch
  rootAddr @5 :Text;          # the tree's root actor's address (absent: not known)
  build @6 :ExeBuild;         # the parent's build, when it has computed it (absent: not
                              # known): a child running that very file adopts it
}

# A build id and the executable file it was computed from.
struct ExeBuild {
  id @0 :Data;     # 16 bytes: see `BuildId`
  dev @1 :UInt64;  # the executable's device
  ino @2 :UInt64;  # and inode
}

# What a parent tells a freshly spawned child.
struct SpawnSpec {
  runtimeVars @0 :RuntimeVars;
  registryAddrs @1 :List(Text);   # addresses in `tcp://` / `uds://` form
  bindAddrs @2 :List(Text);
  enableHandlers @3 :List(Text);  # names of the handlers this child exposes (when exposeOnly)
  parent @4 :Aid;
  exposeOnly @5 :Bool;            # true: the child serves only enableHandlers; false (an
                                  # unnarrowed spawn): every function its registry has
}

# How a remote call behaves.
enum CallKind {
  function @0;   # args -> result
  context @1;    # started, then an optional two-way stream, then a result
  stream @2;     # a context that opened a stream
}

# Start a call on the receiving actor.
struct Start {
  cid @0 :UInt64;       # call id, chosen by the caller, unique per caller
  function @1 :Text;    # registered handler name
  args @2 :Data;        # payload-codec bytes
  caller @3 :Aid;       # absent: the connection's peer, which sent it (a connection's own
                        # calls leave it out; a reader that does not know its peer refuses)
  kind @4 :CallKind;    # the kind the caller expects
  trace @5 :TraceContext;  # the caller's span, so the callee's span is its child (absent:
                           # the caller traces nothing; the callee starts a trace of its own)
  argsShm @6 :ShmRef;   # set: the arguments are in this shared-memory segment and `args`
                        # is empty (see `ShmRef`)
}

# A payload lent through shared memory instead of carried in the frame: a sealed memfd of
# the sender's, which a peer of the same host and user opens through
# `/proc/<pid>/fd/<fd>` (plough-shm's `SegmentRef`, every field checked by the receiver).
# Sent only where both ends are on one host (UDS, or plain TCP over loopback) and the
# peer runs our build; the receiver answers with the reserved call `plough.shm_opened`,
# after which the sender drops its fd.
struct ShmRef {
  pid @0 :UInt32;        # the owner's (the sender's) pid
  startTime @1 :UInt64;  # its start time (`/proc/<pid>/stat` field 22)
  fd @2 :Int32;          # the memfd's fd number in the owner
  ino @3 :UInt64;        # the memfd's inode
  len @4 :UInt64;        # the payload's length: the segment's first `len` bytes
}

# A span's place in a distributed trace, in W3C Trace Context (`traceparent`) terms: the
# 16-byte trace id as two big-endian halves, the 8-byte parent span id, the trace flags
# (bit 0: sampled). Plain data words: no pointer, nothing to allocate on either side.
struct TraceContext {
  traceIdHigh @0 :UInt64;  # trace id bytes 0..8, big-endian
  traceIdLow @1 :UInt64;   # trace id bytes 8..16, big-endian
  spanId @2 :UInt64;       # the caller's span id, big-endian
  flags @3 :UInt8;         # W3C trace flags: 0x01 = sampled
}

struct StartAck {
  cid @0 :UInt64;
  kind @1 :CallKind;    # the kind the callee actually registered
}

# A call id and a payload: `Started`, `Yield` and `Return` share this shape.
struct CidPayload {
  cid @0 :UInt64;
  payload @1 :Data;
  payloadShm @2 :ShmRef;  # set: the payload is in this segment and `payload` is empty
}

# A call id and several payloads, in order: a batch of stream items (`Msg.yields`).
struct CidPayloads {
  cid @0 :UInt64;
  payloads @1 :List(Data);
}

struct CancelAck {
  cid @0 :UInt64;
  acked @1 :Bool;
}

# Filled when an `Error` reports a payload that did not decode as the receiver's type.
struct TypeErrorInfo {
  expectedType @0 :Text;   # the receiver's Rust type name
  msgKind @1 :Text;        # the kind of the offending message, e.g. "yield"
  rendering @2 :Text;      # a short rendering of what arrived
}

# What kind of failure an `Error` reports. `user` is a handler's own error; every other
# kind is raised by the runtime, and its `Error.typeName` is the runtime's fixed name for
# that kind. New kinds go at the end (rule 2): a peer that does not know a kind reads it as
# `unknown` (the rest of the message intact), and a peer older than the `kind` field sends
# nothing there, which reads as `user`, the default (rule 4: it stays the default).
enum ErrorKind {
  user @0;             # a handler's own error: `typeName` names its type
  cancelled @1;        # the call or context was cancelled (by `Error.canceller`)
  streamOverrun @2;    # a stream's sender outran its receiver (`Error.overrunSender`)
  msgType @3;          # a payload did not decode as the receiver's type (`Error.typeError`)
  noSuchFunction @4;   # a call named a handler the callee does not expose
  kindMismatch @5;     # called as another kind (function/context/stream) than registered
  notRegistrar @6;     # a registry call reached an actor that is not a registrar
  panic @7;            # a handler panicked; `message` is the panic message
  payloadEncode @8;    # a handler's result could not be encoded into a payload
  contextMisuse @9;    # a context function broke the protocol (e.g. never sent `started`)
  multi @10;           # several failures together, each in `Error.nested`
  transportClosed @11; # the connection to a peer closed while a call was in flight
  spawn @12;           # a child actor could not be spawned
  actorDied @13;       # an actor's process died
  lagged @14;          # a fan-out subscriber fell behind and missed messages
  actorTooSlow @15;    # a peer did not answer within its budget
  interrupted @16;     # the tree was interrupted (SIGINT) and cancelled
  misuse @17;          # the runtime was used against its rules
  setup @18;           # an actor's runtime could not be set up
  unknown @19;         # a kind the sender could not name more precisely
  protocol @20;        # a peer broke the protocol (a message that cannot come where it came)
  badMessage @21;      # a message of the call could not be read (unknown variant or enum value,
                       # a malformed field, a decode limit hit): that call fails, nothing else
  tooManyCalls @22;    # the callee already serves its cap of calls from this connection
  refused @23;         # the connection was refused before it was authenticated: another uid,
                       # a bad proof, too many connections waiting; `message` says which
  notExposed @24;      # a call named a handler the callee has but does not expose (its spawn,
                       # or the actor itself, narrowed what it serves)
}

struct Error {
  cid :union {
    none @0 :Void;         # an actor-level error, not tied to one call
    id @1 :UInt64;
  }
  source @2 :Aid;          # the actor where the error was raised
  typeName @3 :Text;       # e.g. "ValueError", "plough::ContextCancelled"
  message @4 :Text;
  backtrace @5 :Text;      # remote backtrace as text
  relayPath @6 :List(Aid); # actors the error travelled through, nearest last
  canceller @7 :Aid;       # set when the error is a cancellation
  overrunSender @8 :Aid;   # set when the error is a stream overrun
  typeError @9 :TypeErrorInfo;  # set for a type error (bad message)
  nested @10 :List(Error); # for a multi-error: every failure it holds (their `cid` is none)
  kind @11 :ErrorKind;     # which failure; `user` (the default) for a handler's own error
  value @12 :ErrorValue;   # set for a handler's error of a type registered to travel as
                           # itself (absent: name + message + backtrace only)
}

# A handler's error value, for a caller that knows its type.
struct ErrorValue {
  typePath @0 :Text;       # its full Rust type path (`std::any::type_name`), which the
                           # caller's type must match
  payload @1 :Data;        # the value, encoded by the payload codec
}

# The envelope: exactly one of these per frame.
struct Msg {
  union {
    hello @0 :Hello;
    spawnSpec @1 :SpawnSpec;
    start @2 :Start;
    startAck @3 :StartAck;
    started @4 :CidPayload;
    yield @5 :CidPayload;
    stop @6 :UInt64;       # the call id whose stream ends
    return @7 :CidPayload;
    cancelAck @8 :CancelAck;
    error @9 :Error;
    proof @10 :Data;       # the answer to the peer's `Hello.nonce`: HMAC-SHA256 under the
                           # tree's secret of this connection's two hellos (see ipc-wire's
                           # `auth` module), sent once, right after the hellos
    yields @11 :CidPayloads; # several stream items of one call, in order, as if each had
                             # come as a `yield`; sent only to a peer whose `Hello.batches`
                             # said it reads them
  }
}
