//! Binary distribution (`_unstable_deploy.distribute`): where the binary of a node built by the
//! CLI can be found on its machine. Travels from the CLI (`StartDataflow`) through the coordinator
//! (stored with the dataflow) to the daemons (`SpawnDataflow`).

use std::{collections::BTreeMap, io::Read, path::PathBuf};

use adora_core::NodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Header of an artifact upload's answer and download: the SHA-256 the coordinator computed.
pub const SHA256_HEADER: &str = "x-adora-sha256";

/// Largest artifact the store accepts and a daemon downloads (a node binary; debug builds of big
/// nodes reach a few 100 MiB).
pub const MAX_ARTIFACT_BYTES: usize = 1 << 30;

/// Path of the coordinator's artifact store: `/api/v1/artifacts/{build_id}/{node_id}`.
pub fn artifact_path(build_id: Uuid, node: &str) -> String {
    format!("/api/v1/artifacts/{build_id}/{node}")
}

/// The binary of one node, distributed by the CLI instead of built by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeArtifact {
    /// `distribute: scp`: the CLI copied the binary to this absolute path on the node's machine.
    Copied {
        /// Where the daemon finds it.
        path: PathBuf,
        /// Lowercase hex SHA-256 of the bytes the CLI copied; the daemon refuses a copy that
        /// differs. `None` from a CLI that predates it (the copy is then not checked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// `distribute: http`: the CLI uploaded the binary to the coordinator's artifact store.
    Uploaded {
        /// The upload's build id (one per `adora start`).
        build_id: Uuid,
        /// Lowercase hex SHA-256 of the binary; the daemon rejects anything else.
        sha256: String,
    },
}

impl NodeArtifact {
    /// The strategy's name as written in the descriptor (`scp`, `http`), for error messages.
    pub fn strategy(&self) -> &'static str {
        match self {
            Self::Copied { .. } => "scp",
            Self::Uploaded { .. } => "http",
        }
    }
}

/// Artifacts of a dataflow's nodes (only the nodes with `distribute: scp | http`).
pub type NodeArtifacts = BTreeMap<NodeId, NodeArtifact>;

/// True when `segment` may be used as one path component of an artifact location: not empty,
/// not `.` or `..`, no `/`, `\` or NUL, and at most 255 bytes.
pub fn is_safe_path_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && segment != "."
        && segment != ".."
        && !segment.contains(['/', '\\', '\0'])
}

/// True when `digest` looks like a lowercase hex SHA-256.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex SHA-256 of `bytes`: the content address of an artifact.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of everything `reader` yields (a file hashed without reading it into
/// memory at once). Blocking when the reader is.
pub fn sha256_hex_of_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_round_trip_as_json() {
        let mut artifacts = NodeArtifacts::new();
        artifacts.insert(
            "a".into(),
            NodeArtifact::Copied {
                path: "/srv/x/a".into(),
                sha256: Some("ab".repeat(32)),
            },
        );
        artifacts.insert(
            "c".into(),
            NodeArtifact::Copied {
                path: "/srv/x/c".into(),
                sha256: None,
            },
        );
        artifacts.insert(
            "b".into(),
            NodeArtifact::Uploaded {
                build_id: Uuid::new_v4(),
                sha256: "00".repeat(32),
            },
        );
        let json = serde_json::to_string(&artifacts).expect("serializes");
        let back: NodeArtifacts = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, artifacts);
        // An artifact of a CLI that predates the checksum of copies still decodes.
        let old: NodeArtifact =
            serde_json::from_str(r#"{"copied":{"path":"/srv/x/a"}}"#).expect("old artifact");
        assert_eq!(
            old,
            NodeArtifact::Copied {
                path: "/srv/x/a".into(),
                sha256: None
            }
        );
    }

    #[test]
    fn unsafe_segments_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "x\0"] {
            assert!(!is_safe_path_segment(bad), "{bad:?}");
        }
        assert!(is_safe_path_segment("camera_1.v2-x"));
        assert!(!is_sha256_hex("abc"));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(is_sha256_hex(&"0f".repeat(32)));
    }

    #[test]
    fn sha256_hex_is_the_lowercase_digest_however_it_is_read() {
        // `printf abc | sha256sum`
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        assert_eq!(sha256_hex_of_reader(&b"abc"[..]).expect("in memory"), abc);
        let big = vec![7u8; 200_000];
        assert_eq!(
            sha256_hex_of_reader(&big[..]).expect("in memory"),
            sha256_hex(&big)
        );
        assert!(is_sha256_hex(&sha256_hex(b"")));
    }
}
