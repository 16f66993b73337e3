//! How a client reaches the coordinator's port, which speaks TLS only: the settings of a client
//! ([`Auth`]: whom it trusts, which certificate or token it presents), where the CLI finds the
//! cluster CA ([`find_ca`]), and opening a verified stream ([`open`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use crate::Token;

/// Environment variable naming the cluster CA file a client trusts.
pub const CA_FILE_ENV: &str = "ADORA_CA_FILE";
pub use adora_pki::CA_CERT_FILE;

/// How a client connects: TLS settings (trusted CA, optional client certificate) and the token.
#[derive(Clone)]
pub struct Auth {
    /// `None` only for tests of the coordinator library served in plain HTTP.
    tls: Option<Arc<ClientConfig>>,
    token: Option<Token>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Auth {
    /// TLS with `config` (see [`adora_pki::tls::client_config`]), no token.
    pub fn tls(config: Arc<ClientConfig>) -> Self {
        Self {
            tls: Some(config),
            token: None,
        }
    }

    /// Trusts the CA `ca_pem`, presents no certificate, sends `token`.
    pub fn with_ca(ca_pem: &str, token: Option<Token>) -> Result<Self, adora_pki::PkiError> {
        Ok(Self::tls(adora_pki::tls::client_config(ca_pem, None)?).token(token))
    }

    /// Plain TCP: only the coordinator library's own tests serve without TLS.
    #[doc(hidden)]
    pub fn plaintext(token: Option<Token>) -> Self {
        Self { tls: None, token }
    }

    /// The same settings sending `token` as `Authorization: Bearer`.
    pub fn token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    /// The token sent, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.token.as_ref().map(Token::as_str)
    }

    /// `wss` or `ws`.
    pub(crate) fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

/// Why a TLS connection to the coordinator failed, in words that say what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Nothing answers at the address.
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("TLS with the coordinator at {addr} failed: {reason}")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// What went wrong, with a hint.
        reason: String,
    },
    /// The address has no valid host name.
    #[error(transparent)]
    Address(#[from] adora_pki::PkiError),
}

/// Explains a handshake failure.
fn explain(e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " — the coordinator's certificate is not signed by the cluster CA this client trusts \
         (wrong --ca-file / ADORA_CA_FILE, or the coordinator's state directory was reset)"
    } else if text.contains("NotValidForName") {
        " — the coordinator's certificate does not name this address; connect by an address it \
         listens on, or restart it with `--tls-san <name>`"
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " — the server does not speak TLS (an older Adora coordinator, or another service?)"
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        " — the coordinator requires a client certificate"
    } else if text.contains("BadCertificate") || text.contains("bad certificate") {
        " — the coordinator refused this client's certificate"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Opens a TCP connection to `addr` and, with TLS settings, a verified TLS session on it (the
/// server name is the host of `addr`).
pub async fn open(addr: &str, auth: &Auth) -> Result<MaybeTlsStream<TcpStream>, TlsError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| TlsError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &auth.tls else {
        return Ok(MaybeTlsStream::Plain(tcp));
    };
    let name = adora_pki::tls::server_name(addr)?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| TlsError::Handshake {
            addr: addr.to_owned(),
            reason: explain(&e),
        })?;
    Ok(MaybeTlsStream::Rustls(tls))
}

/// The local address of a stream from [`open`].
pub fn local_addr(stream: &MaybeTlsStream<TcpStream>) -> Option<std::net::SocketAddr> {
    match stream {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().ok(),
        _ => None,
    }
}

/// The cluster CA could not be found or read.
#[derive(Debug, thiserror::Error)]
#[error("no cluster CA to trust: {0}")]
pub struct NoCa(String);

/// The cluster CA a CLI client trusts: `ca_file` (`--ca-file`), else [`CA_FILE_ENV`], else
/// `<state_dir>/ca.pem` (where `adora up` / `adora coordinator` create it). Returns the file and
/// its PEM.
pub fn find_ca(ca_file: Option<&Path>, state_dir: &Path) -> Result<(PathBuf, String), NoCa> {
    let env = std::env::var_os(CA_FILE_ENV).map(PathBuf::from);
    let path = ca_file
        .map(Path::to_path_buf)
        .or(env)
        .unwrap_or_else(|| state_dir.join(CA_CERT_FILE));
    match std::fs::read_to_string(&path) {
        Ok(pem) => Ok((path, pem)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NoCa(format!(
            "{} does not exist; the coordinator creates its CA in its state directory on first \
             start — copy that ca.pem here, or point at it with --ca-file / {CA_FILE_ENV}",
            path.display()
        ))),
        Err(e) => Err(NoCa(format!("{}: {e}", path.display()))),
    }
}
