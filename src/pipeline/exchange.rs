//! One exchange once it is admitted and an upstream is chosen: the request goes up, the
//! response comes down, through the body stages, whatever protocol each side speaks.
//!
//! ```text
//! client  h1 ─┐                         ┌─ h1 upstream: head + body, then the response head
//!             ├─ request head + body ───┤
//! client  h2 ─┘   (stages, recording)   └─ h2 upstream: a stream on the shared connection
//!        ◀─ response head + body (masking, recording) ◀─
//! ```
//!
//! With an HTTP/2 client *and* an HTTP/2 upstream the two directions run at the same time, so a
//! bidirectional gRPC stream flows both ways; otherwise the request is sent before the response
//! is read, as HTTP/1.1 requires.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};

use super::body::{transfer, Dir, Sink, Source, Transfer};
use super::stages::{Session, Stages};
use super::{record, Client, H2Exchange, RequestCtx};
use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind, Side};
use crate::grpc::status::Code;
use crate::http::headers::{encode_request_head, encode_response_head, Forwarding};
use crate::http::{parse_response, BodyFraming, RequestHead, ResponseHead};
use crate::http2::convert;
use crate::http2::stream::{h2_io, H2Recv, H2Send};
use crate::identity::config::DEFAULT_ASSERTION_HEADER;
use crate::masking::Verdict;
use crate::route::Route;
use crate::upstream::Upstream;

/// An IP address as text on the stack (the forwarding fields need it on every request).
struct IpText {
    buf: [u8; 46],
}

impl Default for IpText {
    fn default() -> Self {
        IpText { buf: [0; 46] }
    }
}

impl IpText {
    /// `ip` as text. IPv4 by hand: `Display` through `write!` was ~1 % of a small exchange
    /// (perf, h1-1k), and every request from an IPv4 client pays it.
    fn of(&mut self, ip: std::net::IpAddr) -> &str {
        let len = match ip {
            std::net::IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        self.buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        self.buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    self.buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                n
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
                // 46 bytes hold the longest IPv6 text form (45), so the write cannot fail.
                let _ = write!(cursor, "{v6}");
                cursor.position() as usize
            }
        };
        std::str::from_utf8(&self.buf[..len]).unwrap_or("")
    }
}

/// Longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What one exchange needs to know, borrowed for its length.
pub struct Exchange<'a> {
    pub config: &'a Config,
    pub route: &'a Route,
    pub head: &'a RequestHead,
    pub pool_name: &'a str,
    /// The recording, shared by both directions.
    pub session: Option<&'a Session>,
    /// The client connection closes after this exchange (HTTP/1.1).
    pub must_close: bool,
    /// `https` when the upstream group speaks TLS, else `http` (HTTP/2's `:scheme`).
    pub scheme: &'a str,
    /// The request is a gRPC call (its model guard reads gRPC messages).
    pub grpc: bool,
}

/// Where the response goes: the client connection, or the client stream's sending half.
enum ClientOut<'a> {
    H1(&'a mut Conn),
    H2(&'a mut H2Send),
}

/// The request direction's result: body bytes sent, and what masking found.
type Sent = (Result<u64, Error>, Option<Verdict>);

impl Exchange<'_> {
    /// Runs the exchange; returns the HTTP/1.1 upstream connection if it can serve another
    /// request.
    pub async fn run(
        &self,
        ctx: &mut RequestCtx,
        client: &mut Client<'_>,
        upstream: Upstream,
    ) -> Result<Option<Conn>, Error> {
        let t = &self.config.timeouts;
        let max_trailer = self.config.limits.max_trailer_bytes;
        match upstream {
            Upstream::H1(mut conn) => {
                conn.out.clear();
                self.with_forwarding(ctx, |fwd| {
                    encode_request_head(self.head, self.to_upstream(), fwd, &mut conn.out)
                });
                let mut dst = Sink::H1 {
                    conn: &mut conn,
                    framing: self.to_upstream(),
                    head_pending: true,
                };
                let sent = self
                    .request_body(
                        &mut client.body(self.head.framing, max_trailer),
                        &mut dst,
                        ctx,
                    )
                    .await;
                self.note_sent(ctx, sent)?;
                let waiting = read_response_head(&mut conn, self.head, t.upstream_first_byte);
                let res = unless_reset(client, waiting).await?;
                let reusable = !res.close;
                let src = Source::h1(&mut conn, res.framing, max_trailer);
                self.respond(ctx, client_out(client), res, src).await?;
                Ok(reusable.then_some(conn))
            }
            // Boxed: its state is large and would otherwise be part of (and copied with)
            // every HTTP/1.1 exchange's future.
            Upstream::H2(sender) => Box::pin(self.run_h2(ctx, client, sender)).await,
        }
    }

    async fn run_h2(
        &self,
        ctx: &mut RequestCtx,
        client: &mut Client<'_>,
        sender: SendRequest<Bytes>,
    ) -> Result<Option<Conn>, Error> {
        let (response, mut up) = self.start_h2(ctx, sender)?;
        match client {
            Client::H2(x) => self.duplex(ctx, x, response, &mut up).await?,
            Client::H1(conn) => {
                let max_trailer = self.config.limits.max_trailer_bytes;
                let mut src = Source::h1(conn, self.head.framing, max_trailer);
                let sent = self
                    .request_body(&mut src, &mut Sink::H2(&mut up), ctx)
                    .await;
                self.note_sent(ctx, sent)?;
                let (res, mut recv) = self.h2_response(response).await?;
                self.respond(ctx, ClientOut::H1(conn), res, Source::H2(&mut recv))
                    .await?;
            }
        }
        Ok(None)
    }

    /// Both directions at once (HTTP/2 on both sides). The response decides when the exchange
    /// is over. The client's side failing (a broken body, a second model) ends it at once; the
    /// upstream refusing more request data does not, since a server may answer and then reset
    /// the request side (RFC 9113 §8.1): the response is still awaited. A caller streaming
    /// its requests may pause for as long as the response may (`upstream_idle`).
    async fn duplex(
        &self,
        ctx: &mut RequestCtx,
        x: &mut H2Exchange,
        response: ResponseFuture,
        up: &mut H2Send,
    ) -> Result<(), Error> {
        let H2Exchange { body, send } = x;
        let guard = ctx.model_from_body.then(|| ctx.model.clone());
        let idle = self
            .config
            .timeouts
            .upstream_idle
            .max(self.config.timeouts.body_idle);
        let mut sent: Option<Sent> = None;
        let result = {
            let mut request = pin!(async {
                let mut src = Source::H2(body);
                self.request_stream(&mut src, &mut Sink::H2(up), guard, idle)
                    .await
            });
            let mut respond = pin!(async {
                let waiting = self.h2_response(response);
                let (res, mut recv) = unless_reset_h2(send, waiting).await?;
                self.respond(ctx, ClientOut::H2(send), res, Source::H2(&mut recv))
                    .await
            });
            std::future::poll_fn(|cx| {
                if sent.is_none() {
                    if let Poll::Ready(done) = request.as_mut().poll(cx) {
                        match &done.0 {
                            Err(e) if e.side != Side::Upstream => {
                                let (err, _) = done;
                                return Poll::Ready(err.map(drop));
                            }
                            _ => sent = Some(done),
                        }
                    }
                }
                respond.as_mut().poll(cx)
            })
            .await
        };
        match sent {
            // The upstream stopped taking the request but answered: the answer stands.
            Some((Err(e), _)) if result.is_ok() => {
                tracing::debug!(request_id = %ctx.request_id, error = %e, "upstream ended the request side early");
                ctx.request_done = true;
            }
            Some(sent) => self.note_sent(ctx, sent)?,
            None => {}
        }
        result
    }

    /// The framing of the request to the upstream: masked prompts change length, so they go
    /// open-ended (chunked on HTTP/1.1).
    fn to_upstream(&self) -> BodyFraming {
        match self.head.framing {
            BodyFraming::Empty => BodyFraming::Empty,
            _ if Stages::rewrites(self.request_masking()) => BodyFraming::Chunked,
            f => f,
        }
    }

    fn request_masking(
        &self,
    ) -> Option<(
        &std::sync::Arc<crate::masking::Masker>,
        crate::masking::Mode,
    )> {
        self.config
            .masker
            .as_ref()
            .zip(self.route.masking)
            .filter(|_| self.route.mask_requests)
    }

    /// Calls `f` with what the gateway adds to and removes from the request: forwarding
    /// fields, the identity assertion, and the client fields never passed on.
    fn with_forwarding<R>(&self, ctx: &RequestCtx, f: impl FnOnce(&Forwarding<'_>) -> R) -> R {
        let mut ip = IpText::default();
        let client_ip = ip.of(ctx.client_ip);
        let identity = self.config.identity.as_deref();
        let assertion = identity
            .and_then(|i| i.assertion.as_deref().zip(ctx.identity.as_ref()))
            .and_then(|(signer, who)| who.assertion(signer, self.pool_name));
        // Never forwarded: a client's identity assertion (it could be forged), its token when
        // the gateway replaces it, and on masked gRPC routes `grpc-accept-encoding` (masked
        // responses must arrive uncompressed; a server compresses only what the client
        // accepts).
        let mut drop = [DEFAULT_ASSERTION_HEADER; 4];
        let mut n = 1;
        for (name, on) in [
            (
                identity.map_or("", |i| i.assertion_header.as_str()),
                identity.is_some(),
            ),
            (
                "authorization",
                identity.is_some_and(|i| !i.forward_client_authorization),
            ),
            (
                "grpc-accept-encoding",
                self.grpc && self.config.masker.is_some() && self.route.masking.is_some(),
            ),
        ] {
            if on {
                drop[n] = name;
                n += 1;
            }
        }
        f(&Forwarding {
            client_ip,
            proto: if ctx.tls { "https" } else { "http" },
            request_id: &ctx.request_id,
            drop: &drop[..n],
            identity: identity
                .zip(assertion.as_deref())
                .map(|(i, a)| (i.assertion_header.as_str(), a)),
            fallback_host: self.pool_name,
        })
    }

    /// Opens the request's stream on the upstream's HTTP/2 connection with its head.
    fn start_h2(
        &self,
        ctx: &RequestCtx,
        mut sender: SendRequest<Bytes>,
    ) -> Result<(ResponseFuture, H2Send), Error> {
        let framing = self.to_upstream();
        let request = self
            .with_forwarding(ctx, |fwd| {
                convert::upstream_request(self.head, framing, fwd, self.scheme, self.pool_name)
            })
            .map_err(|_| Error::downstream(ErrorKind::BadRequest("request cannot be forwarded")))?;
        let end = framing == BodyFraming::Empty;
        let (response, stream) = sender
            .send_request(request, end)
            .map_err(|e| Error::upstream(ErrorKind::UpstreamClosed(h2_io(e))))?;
        Ok((
            response,
            if end {
                H2Send::Done
            } else {
                H2Send::Opened(stream)
            },
        ))
    }

    /// The request body, upstream, with the context updated afterwards.
    async fn request_body(
        &self,
        src: &mut Source<'_>,
        dst: &mut Sink<'_>,
        ctx: &RequestCtx,
    ) -> Sent {
        let guard = ctx.model_from_body.then(|| ctx.model.clone());
        self.request_stream(src, dst, guard, self.config.timeouts.body_idle)
            .await
    }

    /// The request body through its stages (prompt masking, recording, the model guard).
    async fn request_stream(
        &self,
        src: &mut Source<'_>,
        dst: &mut Sink<'_>,
        guard: Option<Option<String>>,
        read_idle: Duration,
    ) -> Sent {
        let t = &self.config.timeouts;
        let up = Transfer {
            dir: Dir::Request,
            read_idle,
            write_limit: t.upstream_idle,
        };
        let content_type = self.head.fields.get("content-type");
        let grpc_path = self.grpc.then_some(&*self.head.path);
        let mut stages = Stages::new(
            Dir::Request,
            self.request_masking(),
            content_type,
            grpc_path,
            self.session,
        );
        if let Some(decided) = guard {
            stages.guard_model(decided, self.grpc);
        }
        let sent = transfer(src, dst, &mut stages, &up).await;
        (sent, stages.verdict().cloned())
    }

    fn note_sent(&self, ctx: &mut RequestCtx, (sent, verdict): Sent) -> Result<(), Error> {
        ctx.note_verdict(verdict.as_ref());
        ctx.bytes_in += sent?;
        ctx.request_done = true;
        ctx.request_sent = Some(ctx.started.elapsed());
        Ok(())
    }

    /// Waits for an HTTP/2 upstream's response head.
    async fn h2_response(&self, response: ResponseFuture) -> Result<(ResponseHead, H2Recv), Error> {
        let limit = self.config.timeouts.upstream_first_byte;
        let response = match crate::clock::timeout(limit, response).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Error::upstream(ErrorKind::UpstreamClosed(h2_io(e)))),
            Err(_) => return Err(Error::upstream(ErrorKind::FirstByteTimeout)),
        };
        let (parts, body) = response.into_parts();
        let res = convert::response_head(&parts, body.is_end_stream(), &self.head.method);
        Ok((res, H2Recv::new(body)))
    }

    /// The response head and body, to the client: masked, recorded, chunk by chunk.
    async fn respond(
        &self,
        ctx: &mut RequestCtx,
        out: ClientOut<'_>,
        res: ResponseHead,
        mut src: Source<'_>,
    ) -> Result<(), Error> {
        ctx.ttfb = Some(ctx.started.elapsed());
        ctx.status = res.status;
        // A Trailers-Only answer carries its status in the head.
        ctx.grpc_status = res.fields.get("grpc-status").and_then(Code::parse);
        record::response_head(ctx, self.session, &res)?;

        // HTTP/1.1 clients get open-ended bodies chunked (so the connection survives); HTTP/1.0
        // clients cannot take chunked and get them delimited by close. A masked body's length
        // is not known in advance, so it is open-ended too. HTTP/2 frames bodies itself.
        let masking = self.config.masker.as_ref().zip(self.route.masking);
        let to_client = match res.framing {
            BodyFraming::Length(_) if Stages::rewrites(masking) => BodyFraming::UntilClose,
            f => f,
        };
        let to_client = match to_client {
            BodyFraming::Chunked | BodyFraming::UntilClose if self.head.http11 => {
                BodyFraming::Chunked
            }
            BodyFraming::Chunked | BodyFraming::UntilClose => BodyFraming::UntilClose,
            f => f,
        };
        let mut dst = match out {
            ClientOut::H1(conn) => {
                let close = self.must_close || to_client == BodyFraming::UntilClose;
                conn.out.clear();
                encode_response_head(&res, to_client, close, &ctx.request_id, &mut conn.out);
                ctx.bytes_out += conn.out.len() as u64;
                Sink::H1 {
                    conn,
                    framing: to_client,
                    head_pending: true,
                }
            }
            ClientOut::H2(send) => {
                let response = convert::client_response(&res, to_client, &ctx.request_id)
                    .map_err(|_| Error::upstream(ErrorKind::BadResponse("unrepresentable head")))?;
                if let H2Send::Waiting(_) = send {
                    let H2Send::Waiting(respond) = std::mem::replace(send, H2Send::Done) else {
                        unreachable!("matched above")
                    };
                    *send = H2Send::Head(respond, response);
                }
                Sink::H2(send)
            }
        };

        let down = Transfer {
            dir: Dir::Response,
            read_idle: self.config.timeouts.upstream_idle,
            write_limit: self.config.timeouts.body_idle,
        };
        let content_type = res.fields.get("content-type");
        let grpc_path = self.grpc.then_some(&*self.head.path);
        let mut stages = Stages::new(
            Dir::Response,
            masking,
            content_type,
            grpc_path,
            self.session,
        );
        if ctx.record_upstream_body {
            stages.record_upstream();
        }
        let received = transfer(&mut src, &mut dst, &mut stages, &down).await;
        // Once the head went out, errors can only cut the response short.
        ctx.response_started = dst.head_sent();
        ctx.grpc_status = stages.grpc_status.or(ctx.grpc_status);
        ctx.note_verdict(stages.verdict());
        ctx.bytes_out += received?;
        Ok(())
    }
}

/// Awaits `fut` (the model server working on its answer) unless the HTTP/2 client resets its
/// stream first: a cancelled call then stops here, and dropping the upstream exchange tells the
/// model server (RST_STREAM, or the HTTP/1.1 connection closed) so it stops generating too.
async fn unless_reset<T>(
    client: &mut Client<'_>,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let send = match client {
        Client::H1(_) => None,
        Client::H2(x) => Some(&mut x.send),
    };
    watch_reset(send, fut).await
}

async fn unless_reset_h2<T>(
    send: &mut H2Send,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    watch_reset(Some(send), fut).await
}

/// One poll loop for both: `fut` is pinned in place once, not moved into a second future per
/// protocol (it holds an upstream read, and every HTTP/1.1 request would copy it).
async fn watch_reset<T>(
    mut send: Option<&mut H2Send>,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let Some(send) = send.as_mut() else {
            return Poll::Pending;
        };
        send.poll_reset(cx).map(|()| {
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            Err(Error::downstream(ErrorKind::ClientClosed(reset)))
        })
    })
    .await
}

fn client_out<'a>(client: &'a mut Client<'_>) -> ClientOut<'a> {
    match client {
        Client::H1(conn) => ClientOut::H1(conn),
        Client::H2(x) => ClientOut::H2(&mut x.send),
    }
}

/// Reads the upstream's response head, skipping interim 1xx responses (the gateway already
/// answered any `Expect` itself; `Upgrade` is never forwarded, so 101 is an error).
async fn read_response_head(
    upstream: &mut Conn,
    req: &RequestHead,
    first_byte: Duration,
) -> Result<ResponseHead, Error> {
    let deadline = crate::clock::now() + first_byte;
    loop {
        match parse_response(&mut upstream.buf, MAX_RESPONSE_HEAD, &req.method)
            .map_err(Error::from_response_head)?
        {
            Some(res) if res.status == 101 => {
                return Err(Error::upstream(ErrorKind::BadResponse("unexpected 101")))
            }
            Some(res) if (100..200).contains(&res.status) => continue,
            Some(res) => return Ok(res),
            None => {}
        }
        let left = deadline.saturating_duration_since(crate::clock::now());
        match upstream.fill(left).await {
            Ok(0) => {
                let eof = std::io::ErrorKind::UnexpectedEof.into();
                return Err(Error::upstream(ErrorKind::UpstreamClosed(eof)));
            }
            Ok(_) => {}
            Err(crate::conn::ReadError::TimedOut) => {
                return Err(Error::upstream(ErrorKind::FirstByteTimeout))
            }
            Err(crate::conn::ReadError::Io(e)) => {
                return Err(Error::upstream(ErrorKind::UpstreamClosed(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IpText;
    use std::net::IpAddr;

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut octets = vec![0u8, 1, 9, 10, 11, 99, 100, 101, 199, 200, 255];
        octets.extend([7, 42, 128, 250]);
        for &a in &octets {
            for &b in &octets {
                let ip = IpAddr::from([a, b, 255 - a, b / 2]);
                assert_eq!(IpText::default().of(ip), ip.to_string());
            }
        }
        for text in [
            "::1",
            "::ffff:10.0.0.1",
            "fe80::1:2:3:4",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(IpText::default().of(ip), ip.to_string());
        }
        let long = IpAddr::from([0xffffu16; 8]);
        assert_eq!(IpText::default().of(long), long.to_string());
    }
}
