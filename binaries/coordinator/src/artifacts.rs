//! The artifact store of `distribute: http`: `PUT|GET /api/v1/artifacts/{build_id}/{node_id}`.
//!
//! The CLI uploads each built binary once per `adora start` (one `build_id`, a UUID, per start);
//! daemons download it with their token and check its SHA-256 against the digest in their spawn
//! command. On disk, next to the coordinator's store, content is addressed by its digest:
//!
//! ```text
//! <dir>/blobs/<sha256>                 the bytes (identical binaries are stored once)
//! <dir>/builds/<build_id>/<node_id>    the digest of that node's upload
//! ```
//!
//! so artifacts survive a coordinator restart. A task collects garbage every [`GC_INTERVAL`]:
//! uploads no stored dataflow or build (`adora build`) references (and older than [`GC_GRACE`]) are removed, then blobs no
//! upload refers to. Node ids and build ids are checked before they touch a path.

use std::{
    collections::BTreeSet,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use adora_message::distribute::MAX_ARTIFACT_BYTES;
use adora_message::distribute::{
    is_safe_path_segment, is_sha256_hex, sha256_hex, NodeArtifact, SHA256_HEADER,
};
use adora_store::Store;
use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{access::PeerCert, AppState};

/// How often unreferenced artifacts are collected.
pub const GC_INTERVAL: Duration = Duration::from_secs(60);
/// An upload no dataflow references yet is kept at least this long: the CLI uploads before it
/// asks the coordinator to start the dataflow that references it.
pub const GC_GRACE: Duration = Duration::from_secs(600);

/// Content-addressed artifacts in one directory.
#[derive(Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
    /// Held by an upload and by a garbage collection: a collection running between an
    /// upload's blob and its upload file would remove the blob (not referenced yet) or the new,
    /// still empty build directory (the upload then failed with a 500).
    writing: std::sync::Mutex<()>,
}

/// What a garbage collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// `(build_id, node)` uploads removed.
    pub uploads: usize,
    /// Blobs removed.
    pub blobs: usize,
}

impl ArtifactStore {
    /// Opens (creating) the store in `dir`. Blocking.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("builds"))?;
        Ok(Self {
            dir: dir.to_owned(),
            writing: std::sync::Mutex::new(()),
        })
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(digest)
    }

    fn upload(&self, build_id: Uuid, node: &str) -> PathBuf {
        self.dir
            .join("builds")
            .join(build_id.to_string())
            .join(node)
    }

    /// Stores `bytes` as the artifact of `node` in build `build_id`; returns its SHA-256.
    /// Blocking (hashing, file writes); `node` must be a safe path segment.
    pub fn put(&self, build_id: Uuid, node: &str, bytes: &[u8]) -> io::Result<String> {
        let digest = sha256_hex(bytes);
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let blob = self.blob(&digest);
        if !blob.is_file() {
            write_atomically(&blob, bytes)?;
        }
        let upload = self.upload(build_id, node);
        if let Some(parent) = upload.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&upload, digest.as_bytes())?;
        Ok(digest)
    }

    /// The digest and bytes of an upload, `None` when there is none. Blocking.
    pub fn get(&self, build_id: Uuid, node: &str) -> io::Result<Option<(String, Vec<u8>)>> {
        let digest = match std::fs::read_to_string(self.upload(build_id, node)) {
            Ok(d) => d.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !is_sha256_hex(&digest) {
            return Ok(None);
        }
        match std::fs::read(self.blob(&digest)) {
            Ok(bytes) => Ok(Some((digest, bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes uploads not in `referenced` and last written before `now - GC_GRACE`, then every
    /// blob no remaining upload points to (and stray temporary files). Blocking.
    pub fn collect_garbage(
        &self,
        referenced: &BTreeSet<(Uuid, String)>,
        now: SystemTime,
    ) -> io::Result<GcReport> {
        let expired = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map(|t| t + GC_GRACE < now)
                .unwrap_or(false)
        };
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = GcReport::default();
        let mut live = BTreeSet::new();
        for build in std::fs::read_dir(self.dir.join("builds"))?.filter_map(Result::ok) {
            let Some(build_id) = build.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            for upload in std::fs::read_dir(build.path())?.filter_map(Result::ok) {
                let node = upload.file_name().to_string_lossy().into_owned();
                let path = upload.path();
                if referenced.contains(&(build_id, node)) || !expired(&path) {
                    if let Ok(digest) = std::fs::read_to_string(&path) {
                        live.insert(digest.trim().to_owned());
                    }
                } else {
                    std::fs::remove_file(&path)?;
                    report.uploads += 1;
                }
            }
            // Only succeeds once the build has no uploads left.
            let _ = std::fs::remove_dir(build.path());
        }
        for blob in std::fs::read_dir(self.dir.join("blobs"))?.filter_map(Result::ok) {
            let name = blob.file_name().to_string_lossy().into_owned();
            let keep = if is_sha256_hex(&name) {
                live.contains(&name)
            } else {
                !expired(&blob.path())
            };
            if !keep {
                std::fs::remove_file(blob.path())?;
                report.blobs += 1;
            }
        }
        Ok(report)
    }
}

/// Writes `path` through a temporary file in the same directory and a rename, so readers never
/// see a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The uploads stored dataflows and builds reference.
fn referenced(store: &dyn Store) -> Result<BTreeSet<(Uuid, String)>, adora_store::StoreError> {
    let flows = store.dataflows()?;
    let builds = store.builds()?;
    Ok(flows
        .iter()
        .map(|r| &r.artifacts)
        .chain(builds.iter().map(|b| &b.artifacts))
        .flat_map(|artifacts| artifacts.iter())
        .filter_map(|(node, artifact)| match artifact {
            NodeArtifact::Uploaded { build_id, .. } => Some((*build_id, node.to_string())),
            _ => None,
        })
        .collect())
}

/// Collects garbage every [`GC_INTERVAL`] (first right away) until `shutdown`.
pub(crate) async fn gc_loop(
    artifacts: Arc<ArtifactStore>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(GC_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (artifacts, store) = (artifacts.clone(), store.clone());
        let result = tokio::task::spawn_blocking(move || {
            let referenced = referenced(store.as_ref()).map_err(|e| e.to_string())?;
            artifacts
                .collect_garbage(&referenced, SystemTime::now())
                .map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(Ok(r)) if r != GcReport::default() => tracing::info!(
                "artifact store: removed {} unreferenced upload(s), {} blob(s)",
                r.uploads,
                r.blobs
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("artifact garbage collection failed: {e}"),
            Err(e) => tracing::warn!("artifact garbage collection panicked: {e}"),
        }
    }
}

/// Why an artifact request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArtifactError {
    #[error("this coordinator has no artifact store")]
    Disabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("no artifact for node `{node}` in build {build_id}")]
    NotFound { build_id: Uuid, node: String },
    #[error("the artifact is larger than {MAX_ARTIFACT_BYTES} bytes")]
    TooLarge,
    #[error("artifact store: {0}")]
    Io(String),
}

impl IntoResponse for ArtifactError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Disabled => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!("{self}");
        }
        (status, format!("{self}\n")).into_response()
    }
}

/// Checks the path parameters before they are used in a path.
fn parse_target(build_id: &str, node: &str) -> Result<(Uuid, String), ArtifactError> {
    let build_id = Uuid::parse_str(build_id)
        .map_err(|_| ArtifactError::BadRequest(format!("build id `{build_id}` is not a UUID")))?;
    if !is_safe_path_segment(node) {
        return Err(ArtifactError::BadRequest(format!(
            "node id `{}` cannot name an artifact (empty, `.`, `..`, `/` or `\\`)",
            node.escape_debug()
        )));
    }
    Ok((build_id, node.to_owned()))
}

/// `PUT /api/v1/artifacts/{build_id}/{node_id}`: answers with the SHA-256 (body and header).
pub(crate) async fn put(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
    UrlPath((build_id, node)): UrlPath<(String, String)>,
    body: Body,
) -> Response {
    // Authentication before anything else: no bytes are read for a client without the token.
    // Uploading is the admin's (`adora build`); daemons only download.
    let caller = crate::access::authorize(&state, peer.as_deref(), &headers);
    if let Err(e) = caller.and_then(|c| crate::access::admin_only(&c, "uploading an artifact")) {
        return e.into_response();
    }
    match put_checked(&state, &build_id, &node, body).await {
        Ok(digest) => (
            StatusCode::OK,
            [(SHA256_HEADER, digest.clone())],
            format!("{digest}\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn put_checked(
    state: &AppState,
    build_id: &str,
    node: &str,
    body: Body,
) -> Result<String, ArtifactError> {
    let store = state.artifacts.clone().ok_or(ArtifactError::Disabled)?;
    let (build_id, node) = parse_target(build_id, node)?;
    let bytes: Bytes = axum::body::to_bytes(body, MAX_ARTIFACT_BYTES)
        .await
        .map_err(|_| ArtifactError::TooLarge)?;
    let size = bytes.len();
    let digest = tokio::task::spawn_blocking(move || store.put(build_id, &node, &bytes))
        .await
        .map_err(|e| ArtifactError::Io(e.to_string()))?
        .map_err(|e| ArtifactError::Io(e.to_string()))?;
    tracing::info!("artifact stored: build {build_id}, {size} bytes, sha256 {digest}");
    Ok(digest)
}

/// `GET /api/v1/artifacts/{build_id}/{node_id}`: the bytes, with their SHA-256 in a header.
pub(crate) async fn get(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
    UrlPath((build_id, node)): UrlPath<(String, String)>,
) -> Response {
    if let Err(e) = crate::access::authorize(&state, peer.as_deref(), &headers) {
        return e.into_response();
    }
    let found = async {
        let store = state.artifacts.clone().ok_or(ArtifactError::Disabled)?;
        let (build_id, node) = parse_target(&build_id, &node)?;
        let lookup = node.clone();
        tokio::task::spawn_blocking(move || store.get(build_id, &lookup))
            .await
            .map_err(|e| ArtifactError::Io(e.to_string()))?
            .map_err(|e| ArtifactError::Io(e.to_string()))?
            .ok_or(ArtifactError::NotFound { build_id, node })
    };
    match found.await {
        Ok((digest, bytes)) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE.as_str(),
                    "application/octet-stream".to_owned(),
                ),
                (SHA256_HEADER, digest),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests;
