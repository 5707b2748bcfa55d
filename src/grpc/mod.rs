//! gRPC: the pure pieces the HTTP/2 path needs to carry gRPC calls and to answer them itself.
//!
//! # On the wire
//!
//! A gRPC call is one HTTP/2 stream (gRPC `doc/PROTOCOL-HTTP2.md`):
//!
//! ```text
//! client                                              server
//!   HEADERS  :method POST  :scheme  :authority
//!            :path /inference.GRPCInferenceService/ModelInfer
//!            content-type application/grpc[+proto]  te trailers
//!            [grpc-timeout 100m] [grpc-encoding gzip] [authorization …]   ─▶
//!   DATA     [flag|len|message][flag|len|message]…  (END_STREAM on the last) ─▶
//!                                    ◀─  HEADERS :status 200, content-type application/grpc
//!                                    ◀─  DATA    [flag|len|message]…
//!                                    ◀─  HEADERS grpc-status 0 [grpc-message …] END_STREAM
//! ```
//!
//! - Unary, client-, server- and bidirectional streaming differ only in how many messages
//!   each side sends; the framing is the same, and DATA frame boundaries have no relation to
//!   message boundaries ([`frame`]).
//! - The outcome is in the **trailers** (`grpc-status`, `grpc-message`), never in `:status`,
//!   which is 200 whenever the server speaks gRPC. A call that fails before any message is a
//!   *Trailers-Only* response: one HEADERS frame with `:status 200`, `content-type` and
//!   `grpc-status`, END_STREAM set ([`status::trailers_only_response`]).
//! - `te: trailers` is required of clients; it is how gRPC detects proxies that would drop
//!   trailers, so the gateway must forward it (the one `TE` value HTTP/2 allows).
//! - `grpc-timeout` carries the caller's deadline ([`status::parse_timeout`]); a server (and a
//!   gateway) should stop work when it passes and answer `DEADLINE_EXCEEDED`.
//!
//! # What the gateway needs from it
//!
//! - **Routing and endpoint class** from `:path` (`/package.Service/Method`): the same
//!   prefix routes as HTTP/1.1, so `…/ModelInfer` is `inference` and `…/RepositoryModelLoad`
//!   is `management`.
//! - **The model name** for policy: KServe v2 puts it in field 1 (`model_name`) of each
//!   `ModelInferRequest`, so admission reads it from the front of the first message
//!   (`policy::model::model_from_grpc_prefix`, protobuf walked with [`wire`]) and forwards the
//!   bytes unchanged; the request stage then checks every whole message
//!   (`policy::grpc_model`).
//! - **Messages one at a time** for masking and recording ([`frame::MessageReader`]), never the
//!   whole stream; a compressed message (flag 1) cannot be scanned without decompressing it,
//!   which the masking stage must either do or refuse (fail closed).
//! - **Its own errors as gRPC statuses** ([`status::code_for`]) sent as Trailers-Only, so a
//!   gRPC client sees `PERMISSION_DENIED` rather than an HTTP 403 it can only guess at.
//! - **Trailers passed through intact** from upstream to client, in both HTTP/2 directions.

pub mod frame;
pub mod status;
pub mod wire;

/// Whether a `Content-Type` value is gRPC's (`application/grpc`, `+proto`, `+json`, …).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    crate::http::headers::media_type_starts_with(value, "application/grpc")
}
