//! Shared helpers for the black-box integration tests: the gateway as a child process
//! ([`gateway`]), a raw HTTP/1.1 client ([`client`]), byte-level message parsing ([`http`]),
//! mock upstreams ([`upstream`]), streaming mocks ([`sse`]) and an OIDC identity provider with its
//! test PKI ([`idp`]).
//!
//! Everything runs on 127.0.0.1 with std threads; every blocking step has a failure guard
//! ([`http::GUARD`]) and nothing asserts on elapsed time.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod authn;
pub mod client;
pub mod gateway;
pub mod grpc;
pub mod h2raw;
pub mod http;
pub mod idp;
pub mod pki;
pub mod script;
pub mod sse;
pub mod upstream;

pub use client::{assert_error, assert_generated_id, get, one_shot, post, Client};
pub use gateway::{basic_config, compose_config, temp_dir, Driver, Gateway, BIN};
pub use grpc::{triton, KserveServer};
pub use http::{chunk, chunked_body, contains, response, Framing, Head, Message, GUARD};
pub use idp::{gen_ec, gen_rsa, jwt_parts, Idp, IdpClient, IdpConfig, Pki};
pub use script::{
    chat_event, chat_stream, client_script, event_content, event_json, have_openai_sdk,
    modelgate_cli, run_guarded, script_upstream, BodyFraming, CliOutput, Script,
};
pub use sse::{openai_upstream, sse_event, sse_upstream, Lockstep, Pacing, SseFraming};
pub use upstream::{closed_port, FullBacklog, UpConn, Upstream};

/// Defines each test twice, as `NAME::legacy` and `NAME::io_uring`, running the body with the
/// driver bound to the given name. The io_uring variant is skipped (with a note on stderr) on a
/// kernel that refuses io_uring.
///
/// ```ignore
/// on_both_drivers! {
///     fn sse_events_arrive_one_by_one(driver) { let gw = Gateway::start_with(driver, ...); }
/// }
/// ```
macro_rules! on_both_drivers {
    ($( $(#[$meta:meta])* fn $name:ident($driver:ident) $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($driver: $crate::support::Driver) $body

            #[test]
            fn legacy() {
                run($crate::support::Driver::Legacy)
            }

            #[test]
            fn io_uring() {
                if $crate::support::Driver::IoUring.is_available() {
                    run($crate::support::Driver::IoUring)
                } else {
                    eprintln!("skipped: this kernel refuses io_uring");
                }
            }
        }
    )*};
}
pub(crate) use on_both_drivers;
