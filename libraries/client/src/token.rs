//! The token: a 256-bit random secret shared by the coordinator, its daemons and CLI clients.
//!
//! The token lives in a file only its owner can read (mode 0600, refused when wider) or in the
//! `ADORA_TOKEN` environment variable; it never appears on a command line. Clients send it as
//! `Authorization: Bearer <token>`; the coordinator compares it in constant time (its own
//! `auth` module: checking a token is server-side).

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rand::RngCore;

/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "ADORA_TOKEN";

/// Name of the default token file in a state directory (written by `adora up` and
/// `adora coordinator`).
pub const TOKEN_FILE: &str = "token";

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

    /// The token text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A token could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file or variable is empty.
    #[error("the token is empty")]
    Empty,
    /// [`TOKEN_ENV`] is set but empty.
    #[error("{TOKEN_ENV}: the token is empty")]
    EmptyEnv,
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

/// Token discovery shared by clients and daemons: `token_file` (`--token-file`), else
/// [`TOKEN_ENV`], else `<state_dir>/token` ([`TOKEN_FILE`]) when it exists. The token itself never
/// comes from a command line.
pub fn find_token(
    token_file: Option<&Path>,
    state_dir: &Path,
) -> Result<Option<Token>, TokenError> {
    find(token_file, std::env::var(TOKEN_ENV).ok(), state_dir)
}

/// [`find_token`] with the value of [`TOKEN_ENV`] given.
fn find(
    token_file: Option<&Path>,
    env: Option<String>,
    state_dir: &Path,
) -> Result<Option<Token>, TokenError> {
    if let Some(path) = token_file {
        return read_token_file(path).map(Some);
    }
    if let Some(token) = env {
        return Token::new(&token)
            .map(Some)
            .map_err(|_| TokenError::EmptyEnv);
    }
    let default = state_dir.join(TOKEN_FILE);
    if default.exists() {
        return read_token_file(&default).map(Some);
    }
    Ok(None)
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
    fn debug_does_not_print_the_token() {
        let token = Token::new(" abc\n").expect("non-empty");
        assert_eq!(token.as_str(), "abc");
        assert!(format!("{token:?}").contains("redacted"));
        assert!(!format!("{token:?}").contains("abc"));
    }

    #[test]
    fn token_file_then_variable_then_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let given = dir.path().join("given");
        fs::write(&given, "from-flag\n").expect("write");
        fs::set_permissions(&given, fs::Permissions::from_mode(0o600)).expect("chmod");
        let state = dir.path().join("state");
        let stored = load_or_create_token_file(&state.join(TOKEN_FILE)).expect("create");
        let env = || Some("from-env".to_owned());

        let found = find(Some(&given), env(), &state).expect("readable");
        assert_eq!(found.map(Token::into_string).as_deref(), Some("from-flag"));
        let found = find(None, env(), &state).expect("set");
        assert_eq!(found.map(Token::into_string).as_deref(), Some("from-env"));
        assert_eq!(find(None, None, &state).expect("readable"), Some(stored));
        assert_eq!(
            find(None, None, &dir.path().join("none")).expect("absent"),
            None
        );
        let err = find(None, Some(" ".into()), &state).expect_err("empty variable");
        assert_eq!(err.to_string(), "ADORA_TOKEN: the token is empty");
    }
}
