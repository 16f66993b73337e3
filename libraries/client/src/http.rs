//! One HTTP/1.1 request on a fresh (TLS) connection to the coordinator, with hyper's client half:
//! the artifact store's uploads and downloads, and enrollment. Answers are read up to a limit.

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;

use crate::{
    artifacts::{ArtifactError, TRANSFER_TIMEOUT},
    tls::Auth,
};

/// One request on a fresh connection.
pub(crate) struct Exchange<'a> {
    addr: &'a str,
    auth: &'a Auth,
    method: &'a str,
    path: &'a str,
    /// Largest answer body accepted.
    limit: usize,
    /// `Content-Type` of the request body, if any.
    content_type: Option<&'static str>,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(
        addr: &'a str,
        auth: &'a Auth,
        method: &'a str,
        path: &'a str,
        limit: usize,
    ) -> Self {
        Self {
            addr,
            auth,
            method,
            path,
            limit,
            content_type: None,
        }
    }

    /// The same request with a body of this `Content-Type`.
    pub(crate) fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    /// Sends `body` and reads the answer, under [`TRANSFER_TIMEOUT`]; error statuses are errors.
    pub(crate) async fn run(
        &self,
        body: Vec<u8>,
    ) -> Result<(hyper::HeaderMap, Vec<u8>), ArtifactError> {
        tokio::time::timeout(TRANSFER_TIMEOUT, self.run_untimed(body))
            .await
            .map_err(|_| ArtifactError::Timeout)?
    }

    async fn run_untimed(
        &self,
        body: Vec<u8>,
    ) -> Result<(hyper::HeaderMap, Vec<u8>), ArtifactError> {
        let stream = crate::tls::open(self.addr, self.auth).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header(hyper::header::HOST, self.addr);
        if let Some(content_type) = self.content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = self.auth.bearer() {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let work = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = read_limited(response.into_body(), self.limit).await?;
            Ok::<_, ArtifactError>((status, headers, bytes))
        };
        // The connection is driven here, next to the request: no task outlives the exchange.
        let mut work = std::pin::pin!(work);
        let (status, headers, bytes) = tokio::select! {
            biased;
            done = &mut work => done?,
            closed = conn => {
                closed?;
                work.await?
            }
        };
        if !status.is_success() {
            return Err(ArtifactError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim().to_owned(),
            });
        }
        Ok((headers, bytes))
    }
}

/// Reads a whole body, failing with [`ArtifactError::TooLarge`] as soon as it exceeds `limit`
/// bytes (whatever its `Content-Length` says).
async fn read_limited(
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Vec<u8>, ArtifactError> {
    let too_large = ArtifactError::TooLarge { limit };
    let announced = hyper::body::Body::size_hint(&body).lower();
    if usize::try_from(announced).map_or(true, |n| n > limit) {
        return Err(too_large);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or_default());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}
