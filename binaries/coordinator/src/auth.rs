//! Authentication: a 256-bit random token shared by the coordinator, its daemons and CLI clients.
//!
//! The token lives in a file only its owner can read (mode 0600, refused when wider) or in the
//! `ADORA_TOKEN` environment variable; it never appears on a command line. Clients send it as
//! `Authorization: Bearer <token>`; the coordinator compares it in constant time.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "ADORA_TOKEN";

/// Token length in bytes (256 bits); written as 64 hex digits.
pub const TOKEN_BYTES: usize = 32;

/// The shared secret. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Wraps a token read from somewhere (surrounding whitespace removed).
    pub fn new(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Self(s.to_owned()))
    }

    /// The token text (for an `Authorization` header).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time check of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        bool::from(given.trim().as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// A token could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file or variable is empty.
    #[error("the token is empty")]
    Empty,
    /// The token file can be read by other users.
    #[error(
        "token file {path} has mode {mode:o}, which lets other users read it; run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing the file failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a token file, refusing files that group or others can access.
pub fn read_token_file(path: &Path) -> Result<Token, TokenError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Token::new(&fs::read_to_string(path).map_err(io(path))?)
}

/// Reads the token file, or creates it (mode 0600) with a fresh token when it does not exist.
pub fn load_or_create_token_file(path: &Path) -> Result<Token, TokenError> {
    if path.exists() {
        return read_token_file(path);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let token = Token::generate();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    writeln!(file, "{}", token.as_str()).map_err(io(path))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_is_private_and_reread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/token");
        let token = load_or_create_token_file(&path).expect("create");
        assert_eq!(token.as_str().len(), 2 * TOKEN_BYTES);
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_token_file(&path).expect("reread"), token);
    }

    #[test]
    fn wide_mode_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        fs::write(&path, "secret").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_token_file(&path).expect_err("0644 is too open");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn header_check() {
        let token = Token::new("abc").expect("non-empty");
        assert!(token.verify_header(Some("Bearer abc")));
        assert!(!token.verify_header(Some("Bearer abd")));
        assert!(!token.verify_header(Some("abc")));
        assert!(!token.verify_header(None));
        assert!(format!("{token:?}").contains("redacted"));
    }
}
