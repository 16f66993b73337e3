//! Client of the coordinator's artifact store (`distribute: http`): the CLI uploads a node's
//! binary, a daemon downloads it and checks its SHA-256 against the digest in its spawn command.
//! One HTTP/1.1 request per TLS connection (hyper's client half), authenticated by the client's
//! certificate (daemons) or the bearer token (the CLI). An answer
//! larger than [`MAX_ARTIFACT_BYTES`] is refused before it fills the memory.

use std::time::Duration;

pub use adora_message::distribute::MAX_ARTIFACT_BYTES;
use adora_message::distribute::{artifact_path, sha256_hex, SHA256_HEADER};
use hyper::StatusCode;
use uuid::Uuid;

use crate::{
    http::Exchange,
    tls::{Auth, TlsError},
};

/// Upper bound of one upload or download (binaries can be large; links can be slow).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The coordinator could not be reached, or the TLS handshake failed.
    #[error(transparent)]
    Connect(#[from] TlsError),
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
    /// The answer is larger than the limit ([`MAX_ARTIFACT_BYTES`] for a download).
    #[error("the coordinator's answer is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
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
    auth: &Auth,
    build_id: Uuid,
    node: &str,
    bytes: Vec<u8>,
) -> Result<String, ArtifactError> {
    let ours = sha256_hex(&bytes);
    let path = artifact_path(build_id, node);
    let put = Exchange::new(addr, auth, "PUT", &path, MAX_ARTIFACT_BYTES);
    let (headers, _) = put.run(bytes).await?;
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

/// Downloads the binary of `node` in build `build_id` and checks it has SHA-256 `expected`;
/// refuses a binary larger than [`MAX_ARTIFACT_BYTES`] ([`ArtifactError::TooLarge`]).
pub async fn download(
    addr: &str,
    auth: &Auth,
    build_id: Uuid,
    node: &str,
    expected: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let path = artifact_path(build_id, node);
    let get = Exchange::new(addr, auth, "GET", &path, MAX_ARTIFACT_BYTES);
    let (_, bytes) = get.run(Vec::new()).await?;
    verify(&bytes, expected)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// Upper bound of every await in these tests.
    const T: Duration = Duration::from_secs(20);

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(T, f).await.expect("timed out")
    }

    /// A one-shot HTTP/1.1 server on `127.0.0.1:0` that reads one request head and answers with
    /// `head` followed by `body` written in pieces (the framing is exactly what the test wrote,
    /// which is the point: a lying or missing `Content-Length`). Returns its address.
    async fn serve_once(head: String, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound").to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client closed before its request was complete");
                request.extend_from_slice(&buf[..n]);
            }
            // The client may hang up early (that is what is tested): write errors are expected.
            let _ = stream.write_all(head.as_bytes()).await;
            for piece in body.chunks(4096) {
                if stream.write_all(piece).await.is_err() {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        });
        addr
    }

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

    #[tokio::test]
    async fn a_download_is_checked_against_its_digest() {
        let binary = b"\x7fELF a small node".to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            binary.len()
        );
        let addr = serve_once(head, binary.clone()).await;
        let digest = sha256_hex(&binary);
        let got = within(download(
            &addr,
            &Auth::plaintext(None),
            Uuid::nil(),
            "node",
            &digest,
        ))
        .await;
        assert_eq!(got.expect("served and intact"), binary);
    }

    #[tokio::test]
    async fn a_download_announced_larger_than_the_limit_is_refused() {
        let too_many = MAX_ARTIFACT_BYTES + 1;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {too_many}\r\n\r\n");
        let addr = serve_once(head, vec![0u8; 64 * 1024]).await;
        let err = within(download(
            &addr,
            &Auth::plaintext(None),
            Uuid::nil(),
            "node",
            &"0".repeat(64),
        ))
        .await
        .expect_err("over the limit");
        assert!(
            matches!(err, ArtifactError::TooLarge { limit } if limit == MAX_ARTIFACT_BYTES),
            "{err:?}"
        );
        assert!(err.to_string().contains("larger than the limit"), "{err}");
    }

    #[tokio::test]
    async fn a_streamed_answer_is_cut_off_at_the_limit() {
        // Chunked: no length announced, the limit is enforced while reading.
        let limit = 10_000;
        let chunk = vec![b'x'; 4096];
        let mut body = Vec::new();
        for _ in 0..4 {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
        let addr = serve_once(head, body).await;
        let plain = Auth::plaintext(None);
        let get = Exchange::new(&addr, &plain, "GET", "/artifact", limit);
        let err = within(get.run(Vec::new()))
            .await
            .expect_err("over the limit");
        assert!(
            matches!(err, ArtifactError::TooLarge { limit: 10_000 }),
            "{err:?}"
        );
    }
}
