//! Node sources other than `path` (dora 1.x), end to end through the real `adora` binary:
//! `git:` at a tag and at a rev from a local `file://` repository made here (CI has no
//! internet), the errors for an unknown branch and an unreachable URL, and `module:` with
//! `params:`.

use std::{path::Path, process::Command, time::Duration};

use adora_test_support::{
    adora, bin, run_with_timeout, temp_dir, write_dataflow, MarkedCli, Output,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn adora_cmd(state: &Path, args: &[&str]) -> Output {
    let mut cmd = adora(state);
    cmd.args(args);
    run_with_timeout(cmd, TIMEOUT)
}

/// Runs `git <args>` in `dir`, which must succeed; returns its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with a node launcher (`run.sh`, which runs the `node-bin` its build copies in)
/// and a `version.txt`: `v1` at tag `v1`, then `v2` at the returned commit on `main`.
fn make_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    let script = "#!/bin/sh\ncd \"$(dirname \"$0\")\"\nexport VERSION=\"$(cat version.txt)\"\nexec ./node-bin\n";
    std::fs::write(dir.join("run.sh"), script).unwrap();
    let mut perms = std::fs::metadata(dir.join("run.sh")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.join("run.sh"), perms).unwrap();
    for version in ["v1", "v2"] {
        std::fs::write(dir.join("version.txt"), format!("{version}\n")).unwrap();
        git(dir, &["add", "."]);
        git(dir, &["commit", "--quiet", "-m", version]);
        if version == "v1" {
            git(dir, &["tag", "v1"]);
        }
    }
    git(dir, &["rev-parse", "HEAD"])
}

/// A dataflow with one git node at `reference` (e.g. `tag: v1`) printing `VERSION`.
fn git_dataflow(dir: &Path, url: &str, reference: &str) -> std::path::PathBuf {
    write_dataflow(
        dir,
        &format!(
            "nodes:\n  - id: remote\n    git: {url}\n    {reference}\n    path: run.sh\n    \
             build: cp \"$SRC\" node-bin\n    env: {{ SRC: {{node}}, MODE: print-env, PRINT_ENV: VERSION }}\n"
        ),
    )
}

#[test]
fn git_nodes_build_and_run_at_a_tag_and_at_a_rev() {
    let (state, work) = (temp_dir(), temp_dir());
    let repo = work.path().join("repo");
    let head = make_repo(&repo);
    let url = format!("file://{}", repo.display());

    // At a tag, built and run in one go.
    let at_tag = work.path().join("tag");
    std::fs::create_dir_all(&at_tag).unwrap();
    let dataflow = git_dataflow(&at_tag, &url, "tag: v1");
    let out = adora_cmd(
        state.path(),
        &["run", dataflow.to_str().unwrap(), "--build"],
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("remote | VERSION=v1"), "{out}");

    // At a rev: `adora build`, then `adora run` without a build uses the checkout.
    let at_rev = work.path().join("rev");
    std::fs::create_dir_all(&at_rev).unwrap();
    let dataflow = git_dataflow(&at_rev, &url, &format!("rev: \"{}\"", &head[..12]));
    let out = adora_cmd(state.path(), &["build", dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    let out = adora_cmd(state.path(), &["run", dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("remote | VERSION=v2"), "{out}");

    // The cache: one mirror and one checkout per commit, under the state directory.
    let cache = state.path().join("git");
    let repos: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(repos.len(), 1, "one repository in {}", cache.display());
    let repo_dir = repos[0].as_ref().unwrap().path();
    assert!(repo_dir.join("mirror.git").is_dir());
    assert!(
        repo_dir.join(&head).join("node-bin").is_file(),
        "built in the checkout"
    );
    let v1 = git(&repo, &["rev-parse", "v1"]);
    assert!(repo_dir.join(&v1).join("run.sh").is_file());
}

/// Marks the processes of the daemon-side test (coordinator, daemon, nodes).
const MARKER: &str = "ADORA_E2E_COMPAT_SOURCES_TEST";

/// `adora down` and a kill of whatever is left, when the test ends (even by a panic).
struct Down<'a>(&'a MarkedCli);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = run_with_timeout(self.0.cmd(&["down"]), TIMEOUT);
        for pid in self.0.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_daemon_clones_and_builds_a_git_node_itself() {
    let (state, work) = (temp_dir(), temp_dir());
    let repo = work.path().join("repo");
    make_repo(&repo);
    let url = format!("file://{}", repo.display());
    let cli = MarkedCli::new(state.path(), MARKER, TIMEOUT);
    let _down = Down(&cli);
    let out = cli.ok(&["up", "--port", "0"]);
    assert!(out.stdout.contains("adora is up"), "{out}");
    let dataflow = git_dataflow(work.path(), &url, "branch: main");
    let out = cli.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "git-node",
        "--attach",
        "--build",
    ]);
    assert!(out.stderr.contains("finished successfully"), "{out}");
    // The node's own log, as the daemon stored it: `--attach` can end before the last lines of a
    // node that prints and exits at once are relayed (a known race, see the closing note).
    let logs = cli.ok(&["logs", "git-node"]);
    assert!(logs.stdout.contains("remote | VERSION=v2"), "{logs}");
    // The daemon's cache is under its own state: `<state>/dataflows/<daemon>/git`.
    let daemons: Vec<_> = std::fs::read_dir(state.path().join("dataflows"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert!(
        daemons.iter().any(|d| d.join("git").is_dir()),
        "no git cache in {daemons:?}"
    );
    assert!(
        !state.path().join("git").exists(),
        "the CLI checked nothing out"
    );
}

#[test]
fn unknown_branch_unreachable_url_and_unfetched_repository_are_clear_errors() {
    let (state, work) = (temp_dir(), temp_dir());
    let repo = work.path().join("repo");
    make_repo(&repo);
    let url = format!("file://{}", repo.display());

    let dataflow = git_dataflow(work.path(), &url, "branch: nope");
    let out = adora_cmd(
        state.path(),
        &["run", dataflow.to_str().unwrap(), "--build"],
    );
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "node `remote` (git {url}): branch `nope` not found in {url}"
        )),
        "{out}"
    );

    let missing = format!("file://{}/nowhere", work.path().display());
    let dataflow = git_dataflow(work.path(), &missing, "tag: v1");
    let out = adora_cmd(state.path(), &["build", dataflow.to_str().unwrap()]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "node `remote` (git {missing}): cloning {missing} failed (exit status: 128): \
             fatal: Could not read from remote repository."
        )),
        "{out}"
    );

    let out = adora_cmd(state.path(), &["run", dataflow.to_str().unwrap()]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("has not been fetched on this machine yet: build the dataflow first"),
        "{out}"
    );
}

#[test]
fn module_nodes_run_inlined_with_params() {
    let (state, work) = (temp_dir(), temp_dir());
    let modules = work.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let module = format!(
        "module:\n  name: relay\n  inputs: [raw]\n  outputs: [out]\nnodes:\n  - id: relay\n    \
         path: {node}\n    env: {{ MODE: relay }}\n    inputs: {{ in: _mod/raw }}\n    outputs: [out]\n  \
         - id: show\n    path: show.sh\n    args: --speed $PARAM_SPEED --mode=$PARAM_MODE\n    \
         env: {{ SRC: {node}, MODE: print-env, PRINT_ENV: \"PARAM_SPEED,PARAM_MODE\" }}\n",
        node = bin("adora-test-node").display()
    );
    std::fs::write(modules.join("relay.yml"), module).unwrap();
    std::fs::write(
        modules.join("show.sh"),
        "#!/bin/sh\necho \"args: $*\"\nexec \"$SRC\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(modules.join("show.sh"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(modules.join("show.sh"), perms).unwrap();
    let dataflow = write_dataflow(
        work.path(),
        "nodes:
  - id: source
    path: {node}
    env: { MODE: seq-source, COUNT: 20 }
    inputs: { tick: adora/timer/millis/10 }
    outputs: [data]
  - id: pipe
    module: modules/relay.yml
    params: { speed: 2.5, mode: fast }
    inputs: { raw: source/data }
  - id: sink
    path: {node}
    env: { MODE: seq-sink }
    inputs: { in: pipe/out }
",
    );
    let out = adora_cmd(
        state.path(),
        &["run", dataflow.to_str().unwrap(), "--stop-after", "20s"],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("args: --speed 2.5 --mode=fast"),
        "{out}"
    );
    assert!(out.stdout.contains("PARAM_SPEED=2.5"), "{out}");
    assert!(out.stdout.contains("PARAM_MODE=fast"), "{out}");
    assert!(
        out.stdout.contains("pipe.relay"),
        "inlined id in the log prefix: {out}"
    );
    assert!(
        out.stdout.contains("seq-sink done received=20 lost=0"),
        "{out}"
    );

    // `adora validate` reports a module file's errors with that file and line.
    std::fs::write(
        modules.join("relay.yml"),
        "module: { name: relay, inputs: [raw], outputs: [out] }\nnodes:\n  - id: relay\n    path: x\n    inputs: { in: _mod/rwa }\n    outputs: [out]\n",
    )
    .unwrap();
    let out = adora_cmd(state.path(), &["validate", dataflow.to_str().unwrap()]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{}:5: node `relay`: field `inputs.in`: node `_mod` has no output `rwa`",
            modules.join("relay.yml").display()
        )),
        "{out}"
    );
}
