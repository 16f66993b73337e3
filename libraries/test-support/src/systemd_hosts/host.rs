//! One booted host of [`SystemdHosts`](super::SystemdHosts): reaching it over `ssh`, its
//! files, its boots and reboots.

use super::*;

/// How the fixture runs `ssh`: the binary and the config with every host pinned.
#[derive(Debug)]
pub(super) struct SshClient {
    pub(super) ssh: PathBuf,
    pub(super) config: PathBuf,
}

impl SshClient {
    /// `ssh -F <config> [-l user] <alias> -- <args>`, not yet run.
    fn command(&self, alias: &str, user: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ssh);
        cmd.arg("-F").arg(&self.config);
        if let Some(user) = user {
            cmd.args(["-l", user]);
        }
        cmd.arg(alias).arg("--").args(args);
        cmd
    }

    /// Runs `args` as root on `alias`, killed after `limit` (never panics on a timeout: a
    /// poll of a host that is shutting down may hang, and is simply not an answer).
    fn poll(&self, alias: &str, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=1", &format!("{:.1}", limit.as_secs_f64())])
            .arg(&self.ssh)
            .arg("-F")
            .arg(&self.config)
            .arg(alias)
            .arg("--")
            .args(args);
        run_with_timeout(cmd, limit + Duration::from_secs(5))
    }
}

/// One booted host. See the [module docs](super).
#[derive(Debug)]
pub struct SystemdHost {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) machine: String,
    pub(super) netns: String,
    pub(super) ip: Ipv4Addr,
    pub(super) dir: PathBuf,
    pub(super) first_boot: Duration,
    pub(super) ssh: Arc<SshClient>,
}

impl SystemdHost {
    /// The host's index in [`SystemdHosts::hosts`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// `h0`, `h1`, ...: the hostname inside, and the alias in [`SystemdHosts::ssh_config`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's machine name (unique on this machine; also its cgroup's name).
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The host's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The network namespace the container runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's directory in the fixture: `console.log` (systemd-nspawn and the console),
    /// `boots` (the boot loop's log), `upper/` (everything the host wrote).
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// The host's `/` seen from the test process (its overlay): read a file the host wrote,
    /// or put one there.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Puts the file `local` at the absolute path `remote` on the host's filesystem (parents
    /// created), executable: how a test installs `adora` or a node binary on a host.
    pub fn put_file(&self, local: &Path, remote: &Path) {
        let relative = remote
            .strip_prefix("/")
            .expect("an absolute path on the host");
        let target = self.root().join(relative);
        let parent = target.parent().expect("a path with a parent");
        std::fs::create_dir_all(parent).expect("create the parent directory on the host");
        std::fs::copy(local, &target).expect("copy the file onto the host");
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&target, executable).expect("make it executable");
    }

    /// How long the first boot took, from starting `systemd-nspawn` to `running`.
    pub fn first_boot(&self) -> Duration {
        self.first_boot
    }

    /// `ssh -F <config> [-l user] h<i> -- <args>` (root without `user`), not yet run.
    pub fn ssh_command(&self, user: Option<&str>, args: &[&str]) -> Command {
        self.ssh.command(&self.name, user, args)
    }

    /// Runs `args` on this host as root over ssh; fails the test after [`SSH_TIMEOUT`].
    pub fn ssh(&self, args: &[&str]) -> Output {
        run_with_timeout(self.ssh_command(None, args), SSH_TIMEOUT)
    }

    /// Runs `args` on this host as `user` over ssh; fails the test after [`SSH_TIMEOUT`].
    pub fn ssh_as(&self, user: &str, args: &[&str]) -> Output {
        run_with_timeout(self.ssh_command(Some(user), args), SSH_TIMEOUT)
    }

    /// The current boot's id (`/proc/sys/kernel/random/boot_id`, new at every boot).
    pub fn boot_id(&self) -> String {
        let out = self.ssh(&["cat", "/proc/sys/kernel/random/boot_id"]);
        assert!(out.status.success(), "boot id of {}:\n{out}", self.name);
        out.stdout.trim().to_owned()
    }

    /// How many times the container has been started (1 + the reboots so far).
    pub fn boots(&self) -> usize {
        self.boot_log().0
    }

    fn boot_log(&self) -> (usize, Option<i32>) {
        let text = std::fs::read_to_string(self.dir.join("boots")).unwrap_or_default();
        container::boot_log(&text)
    }

    /// `systemctl reboot` inside the host; returns once the container has shut down and
    /// `systemd-nspawn` has been started again (then [`wait_running`](Self::wait_running)).
    pub fn reboot(&self) {
        let boots = self.boots();
        let started = Instant::now();
        // The answer does not matter: the connection may drop while systemd goes down.
        let _ = self
            .ssh
            .poll(&self.name, &["systemctl", "reboot"], POLL_TIMEOUT);
        while self.boots() == boots {
            self.assert_not_stopped();
            assert!(
                started.elapsed() < REBOOT_TIMEOUT,
                "{} did not restart within {REBOOT_TIMEOUT:?} of `systemctl reboot`\n{}",
                self.name,
                self.console_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until systemd in the host reports `running` (`systemctl is-system-running
    /// --wait`, polled over ssh, each poll under `POLL_TIMEOUT` (10 s)); returns how long that took.
    /// Fails the test when the host reports `degraded` (with the failed units), when its boot
    /// loop ended, or after `timeout`.
    pub fn wait_running(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            self.assert_not_stopped();
            let left = timeout.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "{} is not running after {timeout:?}\n{}",
                self.name,
                self.console_tail()
            );
            let args = ["systemctl", "is-system-running", "--wait"];
            let out = self.ssh.poll(&self.name, &args, left.min(POLL_TIMEOUT));
            match out.stdout.trim() {
                "running" => return started.elapsed(),
                "degraded" => {
                    let failed = self.ssh(&["systemctl", "--failed", "--no-pager"]);
                    panic!("{} booted degraded:\n{failed}", self.name)
                }
                _ => thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Fails the test when the boot loop has ended (the container stopped for good).
    fn assert_not_stopped(&self) {
        if let (_, Some(code)) = self.boot_log() {
            panic!(
                "the container of {} stopped (systemd-nspawn exit code {code})\n{}",
                self.name,
                self.console_tail()
            );
        }
    }

    /// The last lines of the console, for failure messages.
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- {}/console.log (tail) ---\n{tail}", self.dir.display())
    }
}
