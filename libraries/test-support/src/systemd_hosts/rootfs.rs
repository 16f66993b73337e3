//! The Debian root filesystem the systemd hosts boot: built once with `debootstrap`, kept as a
//! zstd tarball in the cargo target directory (`<target>/test-hosts/rootfs-<key>.tar.zst`, so
//! CI keeps it with its target dir), and unpacked once beside it (`rootfs-<key>/`) as the
//! read-only lower layer every host's overlay shares. Unpacking per fixture would cost ~1.5 s
//! on an idle machine but 10 s on a loaded one, and removing the tree again up to 20 s.
//!
//! The key hashes everything that decides the tarball's contents: the suite, the variant, the
//! package list and [`LAYOUT_VERSION`]. Building happens under an `flock` on
//! `<target>/test-hosts/rootfs.lock`, so tests running in parallel (threads or processes) build
//! it once; the others wait and then find it.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

use super::{container::unmount_under, SUDO_USER};
use crate::{hosts::Skip, run_with_timeout};

/// The Debian release the hosts run.
pub(crate) const SUITE: &str = "bookworm";

/// The `debootstrap` variant: only what `apt` needs, plus [`PACKAGES`].
const VARIANT: &str = "minbase";

/// What the hosts need on top of `minbase`: systemd as PID 1, D-Bus (for `systemctl`,
/// `logind`), sshd, `ip`, and `sudo` for the non-root user.
pub(crate) const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "sudo",
];

/// Bumped whenever [`customize`] changes what it writes, so cached tarballs are rebuilt.
const LAYOUT_VERSION: u32 = 2;

/// `debootstrap` takes ~1 min 45 s here (downloads ~50 MB); this leaves room for a slow mirror.
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Packing (~2 s) or unpacking (~1.5 s) the ~180 MB tree.
const TAR_TIMEOUT: Duration = Duration::from_secs(120);

/// `chroot <rootfs> useradd ...` and the like.
const CHROOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the apt sources of this machine are.
const APT_SOURCES_LIST: &str = "/etc/apt/sources.list";
const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// The tarball's file name: `rootfs-<16 hex digits>.tar.zst`, keyed on its contents' recipe.
pub(crate) fn tarball_name() -> String {
    let recipe = format!(
        "{SUITE} {VARIANT} {} layout={LAYOUT_VERSION}",
        PACKAGES.join(",")
    );
    format!("rootfs-{:016x}.tar.zst", fnv1a(recipe.as_bytes()))
}

/// FNV-1a, 64 bit: a hash that stays the same across Rust releases (unlike `DefaultHasher`),
/// so a cached tarball keeps its name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `<target>/test-hosts`: the cache directory, beside `debug/` in the cargo target directory.
pub(crate) fn cache_dir() -> PathBuf {
    let profile = crate::bin_dir();
    profile
        .parent()
        .expect("the profile directory lies inside the target directory")
        .join("test-hosts")
}

/// The cached tarball, built first (under the lock) when it is missing. Returns [`Skip`] when
/// it cannot be built here: `debootstrap` missing, no Debian mirror in the apt sources, or
/// `debootstrap` failing (offline).
fn tarball(chroot: &Path) -> Result<PathBuf, Skip> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let tarball = dir.join(tarball_name());
    if tarball.is_file() {
        return Ok(tarball);
    }
    let _lock = lock(&dir.join("rootfs.lock"));
    if tarball.is_file() {
        return Ok(tarball); // another test built it while this one waited
    }
    build(&dir, &tarball, chroot)?;
    Ok(tarball)
}

/// Runs `debootstrap`, customizes the tree and packs it into `tarball`. Holds the lock.
fn build(dir: &Path, tarball: &Path, chroot: &Path) -> Result<(), Skip> {
    let debootstrap = crate::hosts::find_program("debootstrap")
        .ok_or_else(|| Skip("`debootstrap` is not installed (package debootstrap)".into()))?;
    let mirror = apt_mirror().ok_or_else(|| {
        Skip(format!(
            "no Debian {SUITE} mirror in {APT_SOURCES_LIST} or {APT_SOURCES_DIR}/ \
             to debootstrap the systemd hosts' rootfs from"
        ))
    })?;
    remove_stale_builds(dir);
    let stage = dir.join(format!("build-{}", std::process::id()));
    let started = Instant::now();
    eprintln!(
        "systemd hosts: building the {SUITE} rootfs with debootstrap from {mirror} \
         (~2 min, once; cached as {})",
        tarball.display()
    );
    let mut cmd = Command::new(debootstrap);
    cmd.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&stage)
        .arg(&mirror);
    let out = run_with_timeout(cmd, DEBOOTSTRAP_TIMEOUT);
    if !out.status.success() {
        let log =
            std::fs::read_to_string(stage.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        remove_build(&stage);
        return Err(Skip(format!(
            "debootstrap {SUITE} from {mirror} failed ({}):\n{}\n{}",
            out.status,
            out.stderr.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    customize(&stage, chroot);
    let partial = tarball.with_extension(format!("partial-{}", std::process::id()));
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&stage)
        .args(["--numeric-owner", "-I", "zstd -T0", "-cf"])
        .arg(&partial)
        .arg(".");
    let out = run_with_timeout(tar, TAR_TIMEOUT);
    assert!(out.status.success(), "cannot pack the rootfs:\n{out}");
    std::fs::rename(&partial, tarball)
        .unwrap_or_else(|e| panic!("cannot rename {}: {e}", partial.display()));
    remove_build(&stage);
    eprintln!(
        "systemd hosts: rootfs built in {:.0?} ({} MB)",
        started.elapsed(),
        std::fs::metadata(tarball).map_or(0, |m| m.len() >> 20)
    );
    Ok(())
}

/// The unpacked rootfs (`<target>/test-hosts/rootfs-<key>/`), unpacked from the cached
/// tarball (built first when missing) under the lock when it is not there yet. Nothing ever
/// writes into it: it is only the lower layer of overlays.
pub(crate) fn lower(chroot: &Path) -> Result<PathBuf, Skip> {
    let tarball = tarball(chroot)?;
    let name = tarball_name();
    let tree = tarball.with_file_name(name.trim_end_matches(".tar.zst"));
    if tree.is_dir() {
        return Ok(tree);
    }
    let _lock = lock(&cache_dir().join("rootfs.lock"));
    if tree.is_dir() {
        return Ok(tree);
    }
    remove_stale_builds(&cache_dir());
    let partial = tree.with_extension(format!("partial-{}", std::process::id()));
    std::fs::create_dir(&partial)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", partial.display()));
    unpack(&tarball, &partial);
    std::fs::rename(&partial, &tree)
        .unwrap_or_else(|e| panic!("cannot rename {}: {e}", partial.display()));
    Ok(tree)
}

/// Unpacks `tarball` into the empty directory `dest`.
fn unpack(tarball: &Path, dest: &Path) {
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(dest)
        .args(["--numeric-owner", "-I", "zstd", "-xpf"])
        .arg(tarball);
    let out = run_with_timeout(tar, TAR_TIMEOUT);
    assert!(
        out.status.success(),
        "cannot unpack {}:\n{out}",
        tarball.display()
    );
}

/// What every host has in common, written once into the built tree: an empty machine id (each
/// boot gets its own), no ssh host keys (each host gets its own), the sudo user, an sshd
/// drop-in, no package caches, apt's timers masked (the hosts have no route out), and an empty
/// `/dev` (`systemd-nspawn` mounts its own; no device nodes in the target directory).
fn customize(root: &Path, chroot: &Path) {
    let at = |p: &str| root.join(p);
    remove_matching(&at("dev"), |_| true);
    write(&at("etc/machine-id"), "", 0o444);
    for file in ["var/lib/dbus/machine-id", "etc/hostname"] {
        let _ = std::fs::remove_file(at(file));
    }
    remove_matching(&at("etc/ssh"), |name| name.starts_with("ssh_host_"));
    remove_matching(&at("var/cache/apt/archives"), |name| name.ends_with(".deb"));
    remove_matching(&at("var/lib/apt/lists"), |name| name != "partial");
    for unit in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
        let link = at("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .unwrap_or_else(|e| panic!("cannot mask {unit}: {e}"));
    }
    let mut useradd = Command::new(chroot);
    useradd.arg(root).args([
        "useradd",
        "--create-home",
        "--shell",
        "/bin/bash",
        SUDO_USER,
    ]);
    let out = run_with_timeout(useradd, CHROOT_TIMEOUT);
    assert!(out.status.success(), "useradd {SUDO_USER} failed:\n{out}");
    write(
        &at("etc/sudoers.d").join(SUDO_USER),
        &format!("{SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n"),
        0o440,
    );
    write(
        &at("etc/ssh/sshd_config.d/adora-test-hosts.conf"),
        "# Written by adora-test-support: one host key per host, keys only.\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UseDNS no\n\
         MaxStartups 100\n",
        0o644,
    );
}

/// Removes the entries of `dir` whose name satisfies `remove` (files, or trees).
fn remove_matching(dir: &Path, remove: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(&remove) {
            let path = entry.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
        }
    }
}

/// Writes `contents` to `path` with permissions `mode`.
pub(crate) fn write(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Removes `build-*` directories a crashed build left (the lock is held: nobody else builds).
/// debootstrap mounts `/proc` and `/sys` inside the tree; those are unmounted first.
fn remove_stale_builds(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("build-") || name.contains(".partial-") {
            eprintln!("systemd hosts: removing an unfinished rootfs build {name}");
            remove_build(&entry.path());
        }
    }
}

fn remove_build(path: &Path) {
    unmount_under(path);
    let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
}

/// Takes an exclusive `flock` on `path`; released when the returned value drops.
fn lock(path: &Path) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", path.display()))
}

/// The Debian mirror apt is configured with for [`SUITE`], from `sources.list` and the
/// `sources.list.d` files (one-line `.list` and deb822 `.sources`).
fn apt_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from(APT_SOURCES_LIST)];
    if let Ok(entries) = std::fs::read_dir(APT_SOURCES_DIR) {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        match file.extension()?.to_str()? {
            "list" => mirror_in_list(&text, SUITE),
            "sources" => mirror_in_deb822(&text, SUITE),
            _ => None,
        }
    })
}

/// The URI of the first `deb` line for `suite` with the `main` component in a one-line-style
/// list (`deb [options] URI suite components...`).
fn mirror_in_list(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (uri, line_suite) = (words.next()?, words.next()?);
        (line_suite == suite && words.any(|c| c == "main")).then(|| uri.to_owned())
    })
}

/// The first URI of the first deb822 stanza with `Types: deb`, `suite` among its `Suites` and
/// `main` among its `Components` (and not `Enabled: no`).
fn mirror_in_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanza = String::new();
    for line in text.lines().chain([""]) {
        if line.trim().is_empty() {
            if let Some(uri) = deb822_stanza_mirror(&stanza, suite) {
                return Some(uri);
            }
            stanza.clear();
        } else if !line.starts_with('#') {
            let _ = writeln!(stanza, "{line}");
        }
    }
    None
}

fn deb822_stanza_mirror(stanza: &str, suite: &str) -> Option<String> {
    let field = |name: &str| {
        stanza.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let has = |name: &str, word: &str| {
        field(name).is_some_and(|v| v.split_whitespace().any(|w| w == word))
    };
    let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
    (enabled && has("Types", "deb") && has("Suites", suite) && has("Components", "main"))
        .then(|| field("URIs"))
        .flatten()
        .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_deb822_sources() {
        let text = "Types: deb\n\
                    # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                    URIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                    \n\
                    Types: deb\n\
                    URIs: http://deb.debian.org/debian-security\n\
                    Suites: bookworm-security\n\
                    Components: main\n";
        assert_eq!(
            mirror_in_deb822(text, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let mut stanzas: Vec<&str> = text.split("\n\n").collect();
        stanzas.reverse();
        let security_first = stanzas.join("\n\n");
        assert_eq!(
            mirror_in_deb822(&security_first, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let disabled = format!("Enabled: no\n{text}");
        assert_eq!(mirror_in_deb822(&disabled, "bookworm"), None);
        assert_eq!(mirror_in_deb822(text, "trixie"), None);
        let sources = "Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(mirror_in_deb822(sources, "bookworm"), None);
    }

    #[test]
    fn finds_the_mirror_in_a_sources_list() {
        let text = "# comment\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n\
                    deb http://later.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_list(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in_list("deb http://x/debian bookworm contrib\n", "bookworm"),
            None
        );
    }

    #[test]
    fn the_tarball_name_is_stable_and_follows_the_package_list() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let name = tarball_name();
        assert!(
            name.starts_with("rootfs-") && name.ends_with(".tar.zst"),
            "{name}"
        );
        assert_eq!(name.len(), "rootfs-".len() + 16 + ".tar.zst".len());
        assert_eq!(name, tarball_name());
    }
}
