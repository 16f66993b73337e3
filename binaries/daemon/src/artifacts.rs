//! Client of the coordinator's artifact store (`distribute: http`): the CLI uploads a node's
//! binary, a daemon downloads it and checks its SHA-256 against the digest in its spawn command.
//! One HTTP/1.1 request per connection (hyper's client half), with the bearer token.

use std::time::Duration;

use adora_message::distribute::{artifact_path, SHA256_HEADER};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Upper bound of one upload or download (binaries can be large; links can be slow).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The coordinator could not be reached.
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the coordinator failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (bad address or node id).
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The coordinator answered with an error status.
    #[error("the coordinator answered {status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// Its explanation.
        message: String,
    },
    /// The transfer took longer than [`TRANSFER_TIMEOUT`].
    #[error("the transfer did not finish within {TRANSFER_TIMEOUT:?}")]
    Timeout,
    /// The bytes are not the ones expected.
    #[error("checksum mismatch: expected sha256 {expected}, got {actual} (corrupt or replaced artifact)")]
    Checksum {
        /// The digest from the spawn command.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `bytes` have the SHA-256 `expected`.
pub fn verify(bytes: &[u8], expected: &str) -> Result<(), ArtifactError> {
    let actual = sha256_hex(bytes);
    if actual == expected.to_ascii_lowercase() {
        Ok(())
    } else {
        Err(ArtifactError::Checksum {
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// Uploads `bytes` as the binary of `node` in build `build_id`; returns the SHA-256 the
/// coordinator computed (checked against ours).
pub async fn upload(
    addr: &str,
    token: Option<&str>,
    build_id: Uuid,
    node: &str,
    bytes: Vec<u8>,
) -> Result<String, ArtifactError> {
    let ours = sha256_hex(&bytes);
    let (headers, _) = exchange(addr, token, "PUT", &artifact_path(build_id, node), bytes).await?;
    let theirs = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if theirs != ours {
        return Err(ArtifactError::Checksum {
            expected: ours,
            actual: theirs.to_owned(),
        });
    }
    Ok(ours)
}

/// Downloads the binary of `node` in build `build_id` and checks it has SHA-256 `expected`.
pub async fn download(
    addr: &str,
    token: Option<&str>,
    build_id: Uuid,
    node: &str,
    expected: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let path = artifact_path(build_id, node);
    let (_, bytes) = exchange(addr, token, "GET", &path, Vec::new()).await?;
    verify(&bytes, expected)?;
    Ok(bytes)
}

/// One request on a fresh connection, under [`TRANSFER_TIMEOUT`]; error statuses are errors.
async fn exchange(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(hyper::HeaderMap, Vec<u8>), ArtifactError> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ArtifactError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr);
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes().to_vec();
        driver.abort();
        if !status.is_success() {
            return Err(ArtifactError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim().to_owned(),
            });
        }
        Ok((headers, bytes))
    };
    tokio::time::timeout(TRANSFER_TIMEOUT, work)
        .await
        .map_err(|_| ArtifactError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupted_artifact_fails_the_checksum_check() {
        let good = b"\x7fELF the real binary".to_vec();
        let digest = sha256_hex(&good);
        assert!(verify(&good, &digest).is_ok());
        let mut corrupt = good.clone();
        corrupt[5] ^= 0x01;
        let err = verify(&corrupt, &digest)
            .expect_err("corrupt bytes")
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(&digest), "{err}");
    }
}
