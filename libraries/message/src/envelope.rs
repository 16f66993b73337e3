//! The control-plane framing shared by every WebSocket connection (CLI ↔ coordinator ↔ daemon):
//! the versioned handshake and the generic `{ id, body }` envelope, encoded as JSON text frames.
//!
//! Every connection opens with the client sending [`Hello`]; the server answers [`Welcome`] or
//! [`HandshakeReply::Reject`] and closes. After that both sides exchange [`Envelope`]s whose body
//! is the enum of their direction; a reply carries the id of the request it answers.
//!
//! [`Welcome`]: HandshakeReply::Welcome

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ADORA_VERSION;

/// Version of the control-plane protocol. Peers with another version are rejected at the
/// handshake, with a reason naming both versions. Bump it whenever a peer of the previous version
/// would misunderstand or ignore a message (2: the two-phase start, `Prepare`/`Discard`/`Build`;
/// 3: daemons answer `Spawned`/`Prepared`/`Built` with a typed `ControlError`).
pub const CONTROL_PROTOCOL_VERSION: u32 = 3;

/// The first frame of every control-plane connection, sent by the connecting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The sender's [`CONTROL_PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The sender's Adora version, for error messages.
    pub adora_version: String,
}

impl Hello {
    /// The hello of this build.
    pub fn current() -> Self {
        Self {
            protocol_version: CONTROL_PROTOCOL_VERSION,
            adora_version: ADORA_VERSION.to_owned(),
        }
    }

    /// Checks that the peer speaks our protocol; the error is the reason for a
    /// [`HandshakeReply::Reject`].
    pub fn check(&self) -> Result<(), String> {
        if self.protocol_version == CONTROL_PROTOCOL_VERSION {
            return Ok(());
        }
        Err(format!(
            "protocol version mismatch: the peer speaks control protocol version {} (adora {}), \
             this side speaks version {CONTROL_PROTOCOL_VERSION} (adora {ADORA_VERSION}); \
             run the same adora version on every machine",
            self.protocol_version, self.adora_version
        ))
    }
}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// The connection is accepted.
    Welcome {
        /// The server's [`CONTROL_PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The server's Adora version.
        adora_version: String,
    },
    /// The connection is refused; the server closes it after this frame.
    Reject {
        /// Why, in words for a user.
        reason: String,
    },
}

impl HandshakeReply {
    /// The welcome of this build.
    pub fn welcome() -> Self {
        Self::Welcome {
            protocol_version: CONTROL_PROTOCOL_VERSION,
            adora_version: ADORA_VERSION.to_owned(),
        }
    }
}

/// A message with a correlation id: a reply carries the id of its request; unsolicited messages
/// (heartbeats, streamed log lines) carry the id of the request that subscribed to them, or 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    /// Correlation id.
    pub id: u64,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// Wraps `body` with `id`.
    pub fn new(id: u64, body: T) -> Self {
        Self { id, body }
    }
}

/// A control-plane frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed control-plane frame: {0}")]
pub struct JsonError(#[from] serde_json::Error);

/// Encodes a control-plane message as the text of a WebSocket frame.
pub fn to_json<T: Serialize>(msg: &T) -> Result<String, JsonError> {
    Ok(serde_json::to_string(msg)?)
}

/// Decodes the text of a WebSocket frame.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    Ok(serde_json::from_str(text)?)
}

/// Round-trip helper for the tests of every control-plane module.
#[cfg(test)]
pub(crate) fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
    let envelope = Envelope::new(7, msg);
    let text = to_json(&envelope).expect("test messages serialize");
    record_seed(std::any::type_name::<T>(), &text);
    let back: Envelope<T> = from_json(&text).expect("what we encode decodes");
    assert_eq!(back, envelope, "round trip through {text}");
}

/// With `ADORA_FUZZ_SEEDS` set (a file), appends `type<TAB>json` of every message a round-trip
/// test encodes: how `tools/fuzz/seeds/control.tsv`, the fuzzer's corpus of valid messages, is
/// regenerated (see that crate's docs).
#[cfg(test)]
pub(crate) fn record_seed(type_name: &str, text: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("ADORA_FUZZ_SEEDS") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("ADORA_FUZZ_SEEDS names a writable file");
    // One write per line: tests run in parallel and append to the same file.
    file.write_all(format!("{type_name}\t{text}\n").as_bytes())
        .expect("the seed file is writable");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_replies_round_trip() {
        round_trip(Hello::current());
        round_trip(HandshakeReply::welcome());
        round_trip(HandshakeReply::Reject {
            reason: "no".into(),
        });
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let hello = Hello {
            protocol_version: 99,
            adora_version: "9.9.9".into(),
        };
        let reason = hello.check().expect_err("version 99 is not ours");
        assert!(reason.contains("protocol version mismatch"), "{reason}");
        assert!(
            reason.contains("99") && reason.contains("9.9.9"),
            "{reason}"
        );
        assert!(reason.contains(&CONTROL_PROTOCOL_VERSION.to_string()));
        assert!(Hello::current().check().is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_json::<Envelope<Hello>>("{not json").is_err());
        assert!(from_json::<Hello>(r#"{"protocol_version":1}"#).is_err());
    }
}
