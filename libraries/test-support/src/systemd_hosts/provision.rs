//! What one systemd host gets on top of the shared rootfs, written into its overlay before it
//! boots: its ssh host key, the fixture's key for `root` and the sudo user, `/etc/hosts`.

use std::{net::Ipv4Addr, path::Path};

use super::{host_name, rootfs, SUDO_USER};
use crate::hosts::ssh;

/// `/etc/hosts` naming every host of the fixture (sudo wants its own name to resolve).
pub(crate) fn etc_hosts(addresses: &[(String, Ipv4Addr)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    for (i, (_, ip)) in addresses.iter().enumerate() {
        text.push_str(&format!("{ip}\t{}\n", host_name(i)));
    }
    text
}

/// What one host gets on top of the shared rootfs, written into its overlay before it boots.
pub(crate) struct Provision<'a> {
    pub(crate) ssh_keygen: &'a Path,
    pub(crate) hostname: &'a str,
    /// The public key `root` and [`SUDO_USER`] accept.
    pub(crate) user_key: &'a str,
    pub(crate) etc_hosts: &'a str,
}

impl Provision<'_> {
    /// Writes the host key, the authorized keys and `/etc/hosts` under `root`; returns the
    /// host's public key line.
    pub(crate) fn write(&self, root: &Path) -> String {
        let host_key = ssh::keygen(
            self.ssh_keygen,
            &root.join("etc/ssh/ssh_host_ed25519_key"),
            self.hostname,
        );
        rootfs::write(&root.join("etc/hosts"), self.etc_hosts, 0o644);
        let authorized = format!("{}\n", self.user_key);
        let (uid, gid) = user_ids(root, SUDO_USER);
        for (home, owner) in [
            (root.join("root"), (0, 0)),
            (root.join("home").join(SUDO_USER), (uid, gid)),
        ] {
            let ssh_dir = home.join(".ssh");
            std::fs::create_dir_all(&ssh_dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", ssh_dir.display()));
            let keys = ssh_dir.join("authorized_keys");
            rootfs::write(&keys, &authorized, 0o600);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))
                .and_then(|()| std::os::unix::fs::chown(&ssh_dir, Some(owner.0), Some(owner.1)))
                .and_then(|()| std::os::unix::fs::chown(&keys, Some(owner.0), Some(owner.1)))
                .unwrap_or_else(|e| panic!("cannot set up {}: {e}", ssh_dir.display()));
        }
        host_key
    }
}

/// The uid and gid of `user` in `<root>/etc/passwd`.
fn user_ids(root: &Path, user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap_or_else(|e| panic!("cannot read the rootfs's /etc/passwd: {e}"));
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&user))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| panic!("{user} is not in the rootfs's /etc/passwd"))
}
