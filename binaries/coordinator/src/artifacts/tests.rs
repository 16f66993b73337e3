//! The artifact store through the router (`oneshot`, no socket) and its garbage collection.

use std::{sync::Arc, time::Duration};

use adora_store::{DataflowRecord, MemoryStore};
use axum::{body::Body, http::Request};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::{router, CoordinatorConfig, Token};

/// Upper bound for every await in these tests.
const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "artifact-test-token";

fn state(dir: &Path) -> AppState {
    let mut config = CoordinatorConfig::new(Token::new(TOKEN).unwrap());
    config.artifact_dir = Some(dir.to_owned());
    crate::start(
        Arc::new(MemoryStore::new()),
        config,
        CancellationToken::new(),
    )
}

/// Sends one request; returns status, the SHA-256 header and the body.
async fn send(
    state: &AppState,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(
        T,
        router(state.clone()).oneshot(req.body(Body::from(body)).unwrap()),
    )
    .await
    .expect("timed out")
    .unwrap();
    let status = response.status().as_u16();
    let digest = response
        .headers()
        .get(SHA256_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, digest, body.to_vec())
}

#[tokio::test]
async fn upload_and_download_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let path = format!("/api/v1/artifacts/{}/camera", Uuid::new_v4());
    for auth in [None, Some("wrong-token")] {
        let (status, _, body) = send(&state, "PUT", &path, auth, b"bin".to_vec()).await;
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        let (status, _, _) = send(&state, "GET", &path, auth, Vec::new()).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn an_upload_comes_back_with_the_same_bytes_and_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let path = format!("/api/v1/artifacts/{}/camera", Uuid::new_v4());
    let (status, digest, _) = send(&state, "PUT", &path, Some(TOKEN), bytes.clone()).await;
    assert_eq!(status, 200);
    let digest = digest.unwrap();
    assert_eq!(digest, sha256_hex(&bytes));
    let (status, got_digest, got) = send(&state, "GET", &path, Some(TOKEN), Vec::new()).await;
    assert_eq!(status, 200);
    assert_eq!(got_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(got, bytes);
    // Content-addressed: stored once under its digest.
    assert!(dir.path().join("blobs").join(&digest).is_file());

    let unknown = format!("/api/v1/artifacts/{}/camera", Uuid::new_v4());
    let (status, _, _) = send(&state, "GET", &unknown, Some(TOKEN), Vec::new()).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn build_ids_must_be_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    for build in ["latest", "..", "%2E%2E", "1234"] {
        let path = format!("/api/v1/artifacts/{build}/camera");
        let (status, _, body) = send(&state, "PUT", &path, Some(TOKEN), b"x".to_vec()).await;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        let (status, _, _) = send(&state, "GET", &path, Some(TOKEN), Vec::new()).await;
        assert_eq!(status, 400, "{path}");
    }
}

#[tokio::test]
async fn traversal_attempts_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("artifacts");
    let state = state(&store_dir);
    let build = Uuid::new_v4();
    let attempts = [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "..",
        "%2E%2E",
        "a%5C..%5C..%5Cb",
        "..%5C..%5Cetc",
        "%2Fetc%2Fpasswd",
        "x%00y",
        "../../etc/passwd",
    ];
    for node in attempts {
        let path = format!("/api/v1/artifacts/{build}/{node}");
        for method in ["PUT", "GET"] {
            let (status, _, body) = send(&state, method, &path, Some(TOKEN), b"x".to_vec()).await;
            assert!(
                status == 400 || status == 404,
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // Double encoding decodes once, to a literal `..%2F..%2Fetc` file name: stored harmlessly
    // inside the store, like any other name.
    let path = format!("/api/v1/artifacts/{build}/..%252F..%252Fetc");
    let (status, _, _) = send(&state, "PUT", &path, Some(TOKEN), b"x".to_vec()).await;
    assert_eq!(status, 200);
    let written: Vec<_> = walk(dir.path());
    assert!(
        written
            .iter()
            .all(|p| p.starts_with(&store_dir) && !p.ends_with("passwd")),
        "{written:?}"
    );
    assert!(!dir.path().join("etc").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn without_a_store_directory_the_routes_answer_503() {
    let state = crate::start(
        Arc::new(MemoryStore::new()),
        CoordinatorConfig::new(Token::new(TOKEN).unwrap()),
        CancellationToken::new(),
    );
    let path = format!("/api/v1/artifacts/{}/camera", Uuid::new_v4());
    let (status, _, _) = send(&state, "PUT", &path, Some(TOKEN), b"x".to_vec()).await;
    assert_eq!(status, 503);
}

#[test]
fn artifacts_survive_reopening_and_unreferenced_ones_are_collected_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (kept_build, old_build) = (Uuid::new_v4(), Uuid::new_v4());
    let store = ArtifactStore::open(dir.path()).unwrap();
    let kept = store.put(kept_build, "a", b"kept binary").unwrap();
    let gone = store.put(old_build, "b", b"old binary").unwrap();
    // The same bytes twice are one blob.
    assert_eq!(store.put(old_build, "c", b"kept binary").unwrap(), kept);
    drop(store);

    // A coordinator restart: the store is reopened from disk.
    let store = ArtifactStore::open(dir.path()).unwrap();
    let mut record = DataflowRecord::new(
        Uuid::new_v4(),
        "demo".into(),
        adora_core::Descriptor::parse("nodes:\n  - id: a\n    path: ./a\n", "d.yml".as_ref())
            .unwrap(),
        "/w".into(),
        Default::default(),
    );
    record.artifacts.insert(
        "a".into(),
        NodeArtifact::Uploaded {
            build_id: kept_build,
            sha256: kept.clone(),
        },
    );
    let memory = MemoryStore::new();
    memory.put_dataflow(&record).unwrap();
    let referenced = referenced(&memory).unwrap();

    // Within the grace period nothing goes (the CLI uploads before it starts the dataflow).
    let report = store
        .collect_garbage(&referenced, SystemTime::now())
        .unwrap();
    assert_eq!(report, GcReport::default());

    let later = SystemTime::now() + GC_GRACE + Duration::from_secs(1);
    let report = store.collect_garbage(&referenced, later).unwrap();
    assert_eq!(
        report,
        GcReport {
            uploads: 2,
            blobs: 1
        }
    );
    assert_eq!(
        store.get(kept_build, "a").unwrap().unwrap().1,
        b"kept binary"
    );
    assert!(store.get(old_build, "b").unwrap().is_none());
    assert!(!dir.path().join("blobs").join(gone).exists());
    assert!(!dir
        .path()
        .join("builds")
        .join(old_build.to_string())
        .exists());
}

#[test]
fn uploads_racing_a_garbage_collection_are_all_kept_whole() {
    // CI once got a 500 for an upload made while the collection the coordinator runs at start
    // removed the upload's new, still empty build directory.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ArtifactStore::open(dir.path()).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = std::thread::spawn({
        let (store, done) = (store.clone(), done.clone());
        move || {
            let mut runs = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .collect_garbage(&BTreeSet::new(), SystemTime::now())
                    .expect("collects");
                runs += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            runs
        }
    });
    let mut uploads = Vec::new();
    for i in 0..200u32 {
        let (build, bytes) = (Uuid::new_v4(), format!("binary {i}").into_bytes());
        store
            .put(build, "node", &bytes)
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
        uploads.push((build, bytes));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.join().unwrap();
    assert!(runs > 0);
    // Within the grace period every upload and its blob is still there.
    for (i, (build, bytes)) in uploads.iter().enumerate() {
        let got = store.get(*build, "node").unwrap();
        assert_eq!(got.map(|g| g.1).as_ref(), Some(bytes), "upload {i} of 200");
    }
}
