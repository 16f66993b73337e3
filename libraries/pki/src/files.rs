//! Private files: keys and identities are written 0600 (atomically: temp file + rename) and refused
//! when group or others can read them.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::PkiError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` with mode 0600, atomically; creates the directory (0700).
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a private file, refusing one that group or others can access.
pub fn read_private(path: &Path) -> Result<String, PkiError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::invalid(
            path.display(),
            format!(
                "mode {mode:o} lets other users read this key; run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    fs::read_to_string(path).map_err(io(path))
}

/// Reads a public file (a certificate).
pub(crate) fn read_public(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_wider_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/key.pem");
        write_private(&path, "secret").expect("write");
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&path).expect("read"), "secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_private(&path).expect_err("0640 is too open");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
