//! One HTTPS request to a coordinator from a test, with plain blocking rustls: the status line
//! and body a user with `curl --cacert` would see.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The header block.
    pub head: String,
    /// The body.
    pub body: String,
}

/// `method path` on the coordinator at `addr` (`ip:port`), verifying it against `ca_pem`,
/// sending `token` as a bearer token when given.
pub fn request(addr: &str, ca_pem: &str, token: Option<&str>, method: &str, path: &str) -> Answer {
    let config: Arc<rustls::ClientConfig> =
        adora_pki::tls::client_config(ca_pem, None).expect("a valid CA");
    let name = adora_pki::tls::server_name(addr).expect("a valid address");
    let conn = rustls::ClientConnection::new(config, name).expect("a client connection");
    let tcp = TcpStream::connect(addr).expect("the coordinator accepts");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = Vec::new();
    // A peer closing without close_notify is fine here: everything was read.
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A plaintext `GET path` on `addr`: the whole answer as text (what an old client would get).
pub fn plaintext_get(addr: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).expect("the coordinator accepts");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // One write: the coordinator answers once it has the request's head.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).expect("request sent");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    response
}
