//! One booted container: its overlay root, its cgroup, and the loop that runs
//! `systemd-nspawn -b` again when the container reboots. Everything is undone on drop; what a
//! crashed test process left behind is found by the creator pid in the names and removed.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{
    hosts::{net::creator_pid, Skip},
    process_alive, run_with_timeout,
};

/// `systemd-nspawn` exits with this code when the container asked for a reboot.
const REBOOT_EXIT_CODE: i32 = 133;

/// How long teardown keeps killing the processes of a container's cgroup.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `mount`/`umount` may take.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `systemd-nspawn` keeps a per-machine directory for mount propagation; a killed
/// `systemd-nspawn` leaves it behind.
const PROPAGATE_DIR: &str = "/run/systemd/nspawn/propagate";

/// Fixture directories are `<tmp>/adora-systemd-hosts-<pid>-XXXXXX`.
pub(crate) const TEMP_PREFIX: &str = "adora-systemd-hosts-";

/// The boot loop, run by `bash -c`: `<n> <cgroup dir>... <boot log> <systemd-nspawn command>`.
/// It moves itself into the container's cgroups first, so that `systemd-nspawn --keep-unit`
/// puts its `supervisor`/`payload` cgroups there instead of beside another container's. Exit
/// code 133 is a reboot: start again; anything else ends the loop.
const BOOT_LOOP: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 97; shift; n=$((n - 1)); done
log=$1; shift
while :; do
  echo start >> "$log"
  "$@"
  rc=$?
  echo "exit $rc" >> "$log"
  [ "$rc" -eq 133 ] || exit "$rc"
done"#;

/// What a container is made of.
pub(crate) struct ContainerParams<'a> {
    pub(crate) nspawn: &'a Path,
    /// Machine name (unique on this machine): `adora-<pid>-<seq>-<test>-h<i>` in hostname form.
    pub(crate) machine: &'a str,
    pub(crate) hostname: &'a str,
    pub(crate) netns: &'a str,
    /// The host's directory: `upper/`, `work/`, `root/`, `console.log`, `boots`.
    pub(crate) dir: &'a Path,
    /// Where the container's cgroups are created.
    pub(crate) cgroups: &'a Cgroups,
}

/// The host's overlay, mounted (unmounted on drop).
pub(crate) struct Overlay {
    root: PathBuf,
}

impl Overlay {
    /// Mounts `lower` + `<dir>/upper` on `<dir>/root`. Failing is a missing capability (no
    /// overlayfs, or an upper layer on a filesystem it does not support, e.g. overlayfs).
    pub(crate) fn mount(lower: &Path, dir: &Path) -> Result<Overlay, Skip> {
        let [upper, work, root] = ["upper", "work", "root"].map(|d| dir.join(d));
        for d in [&upper, &work, &root] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root);
        let out = run_with_timeout(cmd, MOUNT_TIMEOUT);
        if !out.status.success() {
            return Err(Skip(format!(
                "cannot mount an overlay in {}: {}",
                dir.display(),
                out.stderr.trim()
            )));
        }
        Ok(Overlay { root })
    }

    /// The merged tree (the container's `/`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        unmount(&self.root);
    }
}

/// A running boot loop and the cgroup holding it, its `systemd-nspawn` and the container;
/// the container's overlay is unmounted once they are gone.
pub(crate) struct Container {
    boot_loop: Child,
    cgroups: Vec<PathBuf>,
    machine: String,
    // Dropped after `Drop::drop` killed everything that could use it.
    _overlay: Overlay,
}

impl Container {
    /// Creates the container's cgroup and starts the boot loop on `overlay` (returns at once;
    /// the caller waits for the boot).
    pub(crate) fn start(p: &ContainerParams<'_>, overlay: Overlay) -> Container {
        let cgroups: Vec<PathBuf> = p
            .cgroups
            .parents
            .iter()
            .map(|d| d.join(p.machine))
            .collect();
        for cgroup in &cgroups {
            std::fs::create_dir(cgroup)
                .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", cgroup.display()));
        }
        let console = std::fs::File::create(p.dir.join("console.log"))
            .unwrap_or_else(|e| panic!("cannot create console.log: {e}"));
        let console_err = console.try_clone().expect("a cloned file handle");
        let mut cmd = Command::new("bash");
        cmd.args(["-c", BOOT_LOOP, "adora-boot-loop"])
            .arg(cgroups.len().to_string())
            .args(&cgroups)
            .arg(p.dir.join("boots"))
            .arg(p.nspawn)
            .arg("--boot")
            .arg("--directory")
            .arg(overlay.root())
            .arg(format!("--machine={}", p.machine))
            .arg(format!("--hostname={}", p.hostname))
            .arg(format!("--network-namespace-path=/run/netns/{}", p.netns))
            .args([
                // No host D-Bus or machined (this machine's PID 1 need not be systemd).
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--link-journal=no",
                "--resolv-conf=off",
                "--setenv=SYSTEMD_COLORS=0",
            ])
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            // Its own process group: a Ctrl-C of `cargo test` does not reach the containers
            // before the fixture's teardown does.
            .process_group(0);
        let boot_loop = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the boot loop: {e}"));
        Container {
            boot_loop,
            cgroups,
            machine: p.machine.to_owned(),
            _overlay: overlay,
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The loop first, so that it cannot start the container again; then everything in the
        // cgroup tree (systemd-nspawn, the container's init, so its whole PID namespace).
        let _ = self.boot_loop.kill();
        let _ = self.boot_loop.wait();
        for cgroup in &self.cgroups {
            kill_cgroup_tree(cgroup);
        }
        for cgroup in &self.cgroups {
            remove_cgroup_tree(cgroup);
        }
        let _ = std::fs::remove_dir_all(Path::new(PROPAGATE_DIR).join(&self.machine));
    }
}

/// Interprets the boot log (`start` / `exit <code>` lines): how many times the container was
/// started, and the exit code of the loop when it ended (anything but a reboot).
pub(crate) fn boot_log(text: &str) -> (usize, Option<i32>) {
    let starts = text.lines().filter(|l| *l == "start").count();
    let last_exit = text
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("exit "))
        .and_then(|code| code.trim().parse().ok())
        .filter(|code| *code != REBOOT_EXIT_CODE);
    (starts, last_exit)
}

/// Where containers' cgroups go: this process's cgroup in the unified (v2) hierarchy, and in
/// the `name=systemd` v1 hierarchy when there is one. `systemd-nspawn` (252) places itself by
/// its v2 cgroup even on a host with v1 controllers, so a v2 hierarchy is always needed; on
/// such a host none is mounted, and the fixture mounts one in its directory.
pub(crate) struct Cgroups {
    parents: Vec<PathBuf>,
    /// The fixture's own cgroup2 mount, unmounted on drop.
    mount: Option<PathBuf>,
}

impl Cgroups {
    /// Finds (or mounts, at `<dir>/cgroup2`) the hierarchies.
    pub(crate) fn find(dir: &Path) -> Result<Cgroups, Skip> {
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = |controllers: &str| {
            mine.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, c, path) = (parts.next()?, parts.next()?, parts.next()?);
                (c == controllers).then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let no_v2 = || Skip("this process has no cgroup v2 path (/proc/self/cgroup)".into());
        let mut cgroups = Cgroups {
            parents: Vec::new(),
            mount: None,
        };
        let v2_root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .map(PathBuf::from)
            .into_iter()
            .find(|root| root.join("cgroup.controllers").is_file());
        let v2_root = match v2_root {
            Some(root) => root,
            None => {
                let point = dir.join("cgroup2");
                std::fs::create_dir(&point).expect("a cgroup2 mount point");
                let mut cmd = Command::new("mount");
                cmd.args(["-t", "cgroup2", "cgroup2"]).arg(&point);
                let out = run_with_timeout(cmd, MOUNT_TIMEOUT);
                if !out.status.success() {
                    return Err(Skip(format!("cannot mount cgroup2: {}", out.stderr.trim())));
                }
                cgroups.mount = Some(point.clone());
                point
            }
        };
        cgroups
            .parents
            .push(v2_root.join(own("").ok_or_else(no_v2)?));
        let v1 = Path::new("/sys/fs/cgroup/systemd");
        if v1.join("cgroup.procs").is_file() && !v1.join("cgroup.controllers").exists() {
            if let Some(path) = own("name=systemd") {
                cgroups.parents.push(v1.join(path));
            }
        }
        Ok(cgroups)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        if let Some(point) = &self.mount {
            unmount(point);
        }
    }
}

/// Pids in every `cgroup.procs` of the tree at `cgroup`.
fn cgroup_pids(cgroup: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for child in subdirectories(cgroup) {
        pids.extend(cgroup_pids(&child));
    }
    pids
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process in the cgroup tree until none is left or [`KILL_TIMEOUT`] passes.
fn kill_cgroup_tree(cgroup: &Path) {
    let started = Instant::now();
    loop {
        let pids = cgroup_pids(cgroup);
        if pids.is_empty() {
            return;
        }
        if started.elapsed() > KILL_TIMEOUT {
            eprintln!(
                "systemd hosts: processes {pids:?} of {} survive SIGKILL",
                cgroup.display()
            );
            return;
        }
        for pid in pids {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the (empty) cgroup tree, children first; a cgroup whose last process is still
/// exiting is busy for a moment, so each removal is retried briefly.
fn remove_cgroup_tree(cgroup: &Path) {
    for child in subdirectories(cgroup) {
        remove_cgroup_tree(&child);
    }
    let started = Instant::now();
    while let Err(e) = std::fs::remove_dir(cgroup) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        if started.elapsed() > KILL_TIMEOUT {
            eprintln!("systemd hosts: cannot remove {}: {e}", cgroup.display());
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts `path`; when it is busy, detaches it (`umount --lazy`), so that removing the
/// directory afterwards never reaches into the mounted tree.
fn unmount(path: &Path) {
    let mut cmd = Command::new("umount");
    cmd.arg(path);
    if quiet(cmd) {
        return;
    }
    let mut lazy = Command::new("umount");
    lazy.arg("--lazy").arg(path);
    if !quiet(lazy) {
        eprintln!("systemd hosts: cannot unmount {}", path.display());
    }
}

/// Unmounts every mount at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub(crate) fn unmount_under(dir: &Path) {
    let mut points = mount_points(|point| point.starts_with(dir));
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        unmount(&point);
    }
}

/// Mount points (field 5 of `/proc/self/mountinfo`) that satisfy `keep`.
fn mount_points(keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| keep(point))
        .collect()
}

/// The creator pid in a fixture directory name (`adora-systemd-hosts-<pid>-XXXXXX`).
pub(crate) fn temp_dir_creator(name: &str) -> Option<u32> {
    name.strip_prefix(TEMP_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Whether something created by `pid` is left over from a crashed run.
fn is_stale(pid: u32) -> bool {
    pid != std::process::id() && !process_alive(pid)
}

/// Removes what crashed runs left: container cgroups (killing what still runs in them, the
/// boot loops and the containers), `systemd-nspawn` propagation directories, overlay mounts
/// and fixture directories, when the process that created them is gone. The namespaces
/// themselves are removed by the namespace hosts' own cleanup.
pub(crate) fn remove_stale(cgroups: &Cgroups) {
    let stale: Vec<PathBuf> = cgroups
        .parents
        .iter()
        .flat_map(|parent| subdirectories(parent))
        .filter(|cgroup| {
            let name = cgroup.file_name().map(|n| n.to_string_lossy().into_owned());
            name.as_deref().and_then(creator_pid).is_some_and(is_stale)
        })
        .collect();
    for cgroup in &stale {
        eprintln!(
            "systemd hosts: removing stale container {}",
            cgroup.display()
        );
        kill_cgroup_tree(cgroup);
    }
    for cgroup in &stale {
        remove_cgroup_tree(cgroup);
    }
    for dir in subdirectories(Path::new(PROPAGATE_DIR)) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().and_then(creator_pid).is_some_and(is_stale) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    for point in mount_points(|point| {
        point.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            temp_dir_creator(&c).is_some_and(is_stale)
        })
    }) {
        eprintln!("systemd hosts: unmounting stale {}", point.display());
        unmount(&point);
    }
    for dir in subdirectories(&std::env::temp_dir()) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if name
            .as_deref()
            .and_then(temp_dir_creator)
            .is_some_and(is_stale)
        {
            eprintln!("systemd hosts: removing stale {}", dir.display());
            unmount_under(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Runs a cleanup command; true when it succeeded. Never panics (it runs in `Drop`).
fn quiet(mut cmd: Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_boot_log() {
        assert_eq!(boot_log(""), (0, None));
        assert_eq!(boot_log("start\n"), (1, None));
        assert_eq!(boot_log("start\nexit 133\nstart\n"), (2, None));
        assert_eq!(boot_log("start\nexit 133\n"), (1, None));
        assert_eq!(boot_log("start\nexit 133\nstart\nexit 1\n"), (2, Some(1)));
    }

    #[test]
    fn fixture_directories_name_their_creator() {
        assert_eq!(
            temp_dir_creator("adora-systemd-hosts-4242-x1Yz"),
            Some(4242)
        );
        assert_eq!(temp_dir_creator("adora-hosts-4242-x1Yz"), None);
        assert_eq!(temp_dir_creator("adora-systemd-hosts-abc"), None);
    }
}
