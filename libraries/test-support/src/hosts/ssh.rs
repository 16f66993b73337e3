//! Keys and configuration files for the test hosts' `sshd`s and for the `ssh` client that
//! talks to them. Everything lives in the fixture's temporary directory.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::run_with_timeout;

/// How long `ssh-keygen` may take for one ed25519 key.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(10);

/// `ssh`'s `ConnectTimeout`, in seconds: a cut host fails fast instead of hanging a test.
const SSH_CONNECT_TIMEOUT_SECS: u32 = 5;

/// sshd refuses to start without its privilege separation directory; a container where the
/// `openssh-server` package was installed but never started does not have it.
const PRIVSEP_DIR: &str = "/run/sshd";

/// The client side: the user key pair, `known_hosts` and the `ssh` config file.
pub(crate) struct ClientFiles {
    pub(crate) identity: PathBuf,
    pub(crate) known_hosts: PathBuf,
    pub(crate) config: PathBuf,
}

/// What the client config needs to know about one host.
pub(crate) struct HostEntry<'a> {
    pub(crate) alias: &'a str,
    pub(crate) ip: Ipv4Addr,
    /// The host's public key line (`ssh-ed25519 AAAA... comment`).
    pub(crate) host_key: String,
}

/// Generates an ed25519 key pair at `path` (`path.pub` for the public half) and returns the
/// public key line.
pub(crate) fn keygen(ssh_keygen: &Path, path: &Path, comment: &str) -> String {
    let mut cmd = Command::new(ssh_keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    let out = run_with_timeout(cmd, KEYGEN_TIMEOUT);
    assert!(out.status.success(), "ssh-keygen failed:\n{out}");
    let public = path.with_extension("pub");
    std::fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", public.display()))
        .trim()
        .to_owned()
}

/// Creates `/run/sshd` if it is missing.
pub(super) fn ensure_privsep_dir() {
    if !Path::new(PRIVSEP_DIR).is_dir() {
        std::fs::create_dir_all(PRIVSEP_DIR)
            .unwrap_or_else(|e| panic!("cannot create {PRIVSEP_DIR}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(PRIVSEP_DIR, std::fs::Permissions::from_mode(0o755));
    }
}

/// The `sshd_config` of one host: listens only on the host's address, accepts only the
/// fixture's user key, for root, without PAM.
pub(super) fn sshd_config(
    ip: Ipv4Addr,
    host_key: &Path,
    authorized_keys: &Path,
    pid_file: &Path,
) -> String {
    format!(
        "ListenAddress {ip}:22\n\
         HostKey {host_key}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         PidFile {pid_file}\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         MaxStartups 100\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n",
        host_key = host_key.display(),
        authorized_keys = authorized_keys.display(),
        pid_file = pid_file.display(),
    )
}

/// Writes `known_hosts` and the client `ssh` config into `dir`. Each host is reachable by its
/// alias and by its address; host keys are pinned, so `StrictHostKeyChecking yes` holds.
pub(crate) fn write_client_files(
    dir: &Path,
    identity: PathBuf,
    hosts: &[HostEntry<'_>],
) -> ClientFiles {
    let known_hosts = dir.join("known_hosts");
    let config = dir.join("ssh_config");
    let mut known = String::new();
    let mut cfg = String::new();
    for host in hosts {
        let _ = writeln!(known, "{},{} {}", host.alias, host.ip, host.host_key);
        let _ = write!(
            cfg,
            "Host {alias} {ip}\n\
             \x20 HostName {ip}\n\
             \x20 User root\n\
             \x20 IdentityFile {identity}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile {known_hosts}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 CheckHostIP no\n\
             \x20 BatchMode yes\n\
             \x20 ConnectTimeout {SSH_CONNECT_TIMEOUT_SECS}\n\
             \x20 LogLevel ERROR\n\n",
            alias = host.alias,
            ip = host.ip,
            identity = identity.display(),
            known_hosts = known_hosts.display(),
        );
    }
    write(&known_hosts, &known);
    write(&config, &cfg);
    ClientFiles {
        identity,
        known_hosts,
        config,
    }
}

/// Writes a file, panicking with its path on failure.
pub(crate) fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
