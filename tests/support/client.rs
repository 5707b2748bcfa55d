//! A raw HTTP/1.1 client: writes exactly the bytes a test gives it and parses what comes back,
//! including interim 1xx responses, trailers, bodies cut short and the connection closing.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use super::http::{find, Framing, Head, HttpConn, Message, GUARD};

pub struct Client {
    conn: HttpConn,
    /// Method of the last request written, to know whether a response can have a body.
    last_method: String,
    sse_buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, GUARD)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client {
            conn: HttpConn::new(stream, Arc::new(Mutex::new(Vec::new())), GUARD),
            last_method: "GET".into(),
            sse_buf: Vec::new(),
        }
    }

    /// A second handle on the socket, for writing from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.conn.stream().try_clone().expect("clone client stream")
    }

    /// Every byte received on this connection so far.
    pub fn received(&self) -> Vec<u8> {
        self.conn.recorded()
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("client write failed: {e}"));
    }

    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        let bytes = bytes.as_ref();
        if let Some(sp) = bytes.iter().position(|b| *b == b' ') {
            if sp < 16 && bytes[..sp].iter().all(|b| b.is_ascii_uppercase()) {
                self.last_method = String::from_utf8_lossy(&bytes[..sp]).into_owned();
            }
        }
        self.conn.write_all(bytes)
    }

    /// Half-closes the write side (the client sends FIN).
    pub fn shutdown_write(&self) {
        let _ = self.conn.stream().shutdown(Shutdown::Write);
    }

    /// Sends a request and reads its final response (1xx responses are skipped).
    pub fn request(&mut self, raw: impl AsRef<[u8]>) -> Message {
        self.send(raw);
        loop {
            let m = self.read_response();
            if !(100..200).contains(&m.status()) {
                return m;
            }
        }
    }

    /// Reads the next response, interim (1xx) ones included. Panics if the connection closes
    /// before a head or the guard runs out.
    pub fn read_response(&mut self) -> Message {
        self.try_read_response()
            .unwrap_or_else(|e| {
                panic!(
                    "reading response failed: {e}; received so far: {:?}",
                    String::from_utf8_lossy(&self.received())
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "connection closed before a response head; received: {:?}",
                    String::from_utf8_lossy(&self.received())
                )
            })
    }

    /// Ok(None) when the connection closed before any byte of a response.
    pub fn try_read_response(&mut self) -> io::Result<Option<Message>> {
        let method = self.last_method.clone();
        self.conn.read_message(Some(&method))
    }

    /// Reads only the head of the next final response, leaving the body for `next_piece`,
    /// `read_event` and `finish`.
    pub fn read_head(&mut self) -> Head {
        loop {
            let head = self
                .conn
                .read_head()
                .unwrap_or_else(|e| panic!("reading response head failed: {e}"))
                .expect("connection closed before a response head");
            let framing = Framing::of_response(&head, &self.last_method);
            self.conn.begin_body(framing);
            if !(100..200).contains(&head.status()) {
                self.sse_buf.clear();
                return head;
            }
        }
    }

    /// Next piece of decoded body; None when the body is complete. Panics on EOF mid-body.
    pub fn next_piece(&mut self) -> Option<Vec<u8>> {
        self.conn
            .next_piece()
            .unwrap_or_else(|e| panic!("reading body failed: {e}"))
    }

    /// Next server-sent event (text up to and excluding the blank line), None at a clean end of
    /// the body. Panics if the body breaks off or the guard runs out.
    pub fn read_event(&mut self) -> Option<String> {
        loop {
            if let Some(i) = find(&self.sse_buf, b"\n\n") {
                let event = String::from_utf8_lossy(&self.sse_buf[..i]).into_owned();
                self.sse_buf.drain(..i + 2);
                return Some(event);
            }
            match self.next_piece() {
                Some(p) => self.sse_buf.extend_from_slice(&p),
                None => {
                    assert!(
                        self.sse_buf.is_empty(),
                        "body ended inside an event: {:?}",
                        String::from_utf8_lossy(&self.sse_buf)
                    );
                    return None;
                }
            }
        }
    }

    /// Reads the rest of the body: (data, trailers, complete).
    pub fn finish(&mut self) -> (Vec<u8>, Vec<(String, String)>, bool) {
        let (mut data, complete) = self
            .conn
            .read_rest()
            .unwrap_or_else(|e| panic!("reading body failed: {e}"));
        let mut all = std::mem::take(&mut self.sse_buf);
        all.append(&mut data);
        (all, self.conn.trailers(), complete)
    }

    /// Waits (up to the guard) for the gateway to close the connection; returns bytes received
    /// first. Panics if the connection stays open.
    pub fn wait_closed(&mut self) -> Vec<u8> {
        self.conn
            .wait_closed()
            .unwrap_or_else(|e| panic!("connection was not closed by the gateway: {e}"))
    }

    /// Like `wait_closed` but reports instead of panicking.
    pub fn closed_within_guard(&mut self) -> Result<Vec<u8>, String> {
        self.conn.wait_closed().map_err(|e| e.to_string())
    }
}

/// One request on a fresh connection, returning the final response.
pub fn one_shot(addr: SocketAddr, raw: impl AsRef<[u8]>) -> Message {
    Client::connect(addr).request(raw)
}

/// `GET path` with a Host header, as bytes.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n")
}

/// `POST path` with a Content-Length body.
pub fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Asserts the response is the gateway's JSON error with the given status and type, and that
/// its request id matches the `x-request-id` header.
#[track_caller]
pub fn assert_error(resp: &Message, status: u16, kind: &str) {
    assert_eq!(
        resp.status(),
        status,
        "status; response: {:?} {:?}",
        resp.head,
        resp.body_str()
    );
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let json = resp.json();
    assert_eq!(json["error"]["type"], kind, "error body {json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message in {json}"
    );
    let id = resp
        .header("x-request-id")
        .expect("x-request-id on error response");
    assert_eq!(
        json["error"]["request_id"], id,
        "request_id in body vs header"
    );
}

/// Asserts a string is a generated request id: 32 lowercase hex digits.
#[track_caller]
pub fn assert_generated_id(id: &str) {
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not 32 lowercase hex: {id:?}"
    );
}
