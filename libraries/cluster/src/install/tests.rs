use std::{path::Path, sync::Mutex};

use adora_core::cluster::ClusterConfig;

use super::*;

/// A machine whose answers are scripted: what the probe prints, whether the root part fails.
struct FakeRemote {
    probe: RemoteOutput,
    root: RemoteOutput,
    /// Every root command with what it got on stdin.
    root_calls: Mutex<Vec<(Vec<String>, String)>>,
}

fn output(code: i32, stdout: &str, stderr: &str) -> RemoteOutput {
    RemoteOutput {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

impl FakeRemote {
    fn new(probe: RemoteOutput, root: RemoteOutput) -> Self {
        Self {
            probe,
            root,
            root_calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(Vec<String>, String)> {
        self.root_calls.lock().expect("not poisoned").clone()
    }
}

impl Remote for FakeRemote {
    async fn sh(&self, _script: &str) -> Result<RemoteOutput, SshError> {
        Ok(self.probe.clone())
    }

    async fn run_with_input(
        &self,
        argv: &[String],
        stdin: &[u8],
    ) -> Result<RemoteOutput, SshError> {
        let stdin = String::from_utf8_lossy(stdin).into_owned();
        self.root_calls
            .lock()
            .expect("not poisoned")
            .push((argv.to_vec(), stdin));
        Ok(self.root.clone())
    }
}

fn machine(user: &str) -> Machine {
    let yaml = format!(
        "coordinator: {{ addr: 10.0.0.1 }}\nmachines:\n  - {{ id: robot, host: 10.0.0.2, user: {user} }}\n"
    );
    ClusterConfig::parse(&yaml, Path::new("cluster.yml"))
        .expect("a valid cluster file")
        .machines
        .remove(0)
}

fn render(probe: &Probe) -> Result<Rendered, String> {
    Ok(Rendered {
        unit: format!("[Service]\nExecStart={} daemon\n", probe.binary),
        pid_file: format!("{}/.local/state/adora/daemon.pid", probe.home),
    })
}

#[tokio::test]
async fn install_probes_renders_and_installs_as_root_with_the_token_on_stdin() {
    let remote = FakeRemote::new(
        output(0, "/home/ops\n/opt/adora/bin/adora\n", ""),
        output(0, "", ""),
    );
    let steps = Mutex::new(Vec::new());
    let progress = |s: Step| steps.lock().expect("not poisoned").push(s);
    install(&remote, &machine("ops"), render, "s3cret-token", &progress)
        .await
        .expect("installs");
    assert_eq!(
        *steps.lock().expect("not poisoned"),
        vec![Step::Probe, Step::Render, Step::Install]
    );
    let calls = remote.calls();
    assert_eq!(calls.len(), 1);
    let (argv, stdin) = &calls[0];
    assert_eq!(
        &argv[..2],
        ["sudo", "-n"],
        "a non-root user goes through sudo: {argv:?}"
    );
    let script = argv.last().expect("a script");
    assert!(
        script.contains("ExecStart=/opt/adora/bin/adora daemon"),
        "{script}"
    );
    assert!(
        script.contains("/home/ops/.local/state/adora/daemon.pid"),
        "{script}"
    );
    assert!(
        !script.contains("s3cret-token"),
        "the token is never on a command line"
    );
    assert!(stdin.contains("s3cret-token"), "the token goes on stdin");
}

#[tokio::test]
async fn a_machine_without_adora_stops_at_the_probe() {
    let remote = FakeRemote::new(
        output(
            crate::ssh::COMMAND_NOT_FOUND,
            "",
            &format!("{}/usr/bin:/bin\n", installed::NOT_FOUND_MARKER),
        ),
        output(0, "", ""),
    );
    let err = install(&remote, &machine("root"), render, "t", &|_| {})
        .await
        .expect_err("fails");
    assert!(
        matches!(
            err,
            InstallError::NotInstalled(_) | InstallError::NoBinary { .. }
        ),
        "{err:?}"
    );
    assert!(remote.calls().is_empty(), "nothing is installed");
}

#[tokio::test]
async fn a_failed_root_part_says_whether_sudo_was_the_problem() {
    let remote = FakeRemote::new(
        output(0, "/home/ops\n/usr/local/bin/adora\n", ""),
        output(1, "", "sudo: a password is required\n"),
    );
    let err = install(&remote, &machine("ops"), render, "t", &|_| {})
        .await
        .expect_err("fails");
    assert_eq!(
        err.to_string(),
        "the systemd setup failed: sudo: a password is required"
    );
    assert!(
        err.hint().contains("ops needs passwordless sudo on robot"),
        "{}",
        err.hint()
    );
}

#[tokio::test]
async fn uninstall_tells_removed_from_not_installed() {
    let removed = FakeRemote::new(output(0, "", ""), output(0, "", ""));
    let m = machine("root");
    assert_eq!(
        uninstall(&removed, &m, &|_| {}).await.expect("ok"),
        Uninstalled::Removed
    );
    assert_eq!(removed.calls()[0].0[0], "sh", "root runs it directly");
    let absent = FakeRemote::new(
        output(0, "", ""),
        output(0, &format!("{}\n", systemd::NOT_INSTALLED), ""),
    );
    assert_eq!(
        uninstall(&absent, &m, &|_| {}).await.expect("ok"),
        Uninstalled::WasNotInstalled
    );
}
