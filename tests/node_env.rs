//! Nodes get no secrets: a node's environment (and its `build` command's) is built from an
//! allow-list of the runtime's variables plus what the dataflow sets, so the token, join code and
//! state directory the runtime has never reach third-party code.

use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use adora_test_support::{adora, run_with_timeout, temp_dir};

const TIMEOUT: Duration = Duration::from_secs(120);
const SECRET: &str = "secret-marker-0f3c";

/// Writes its own environment (`/proc/<its pid>/environ`, one variable a line) to `$1`, else to
/// `$OUT_FILE`; exits without connecting to the daemon (a node may).
const ENV_NODE: &str = "#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ > \"${1:-$OUT_FILE}\"\n";

fn read_env(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn assert_no_secrets(what: &str, env: &BTreeMap<String, String>, raw: &str) {
    assert!(!raw.contains(SECRET), "{what} got the secret:\n{raw}");
    for name in [
        "ADORA_TOKEN",
        "ADORA_JOIN_CODE",
        "ADORA_STATE_DIR",
        "ADORA_COORDINATOR_ADDR",
        "UNRELATED_SETTING",
    ] {
        assert!(!env.contains_key(name), "{what} got {name}:\n{raw}");
    }
    assert_eq!(
        env.get("PATH").map(String::as_str),
        std::env::var("PATH").ok().as_deref(),
        "{what} keeps PATH:\n{raw}"
    );
    assert_eq!(
        env.get("LC_ALL").map(String::as_str),
        Some("C.UTF-8"),
        "{raw}"
    );
}

#[test]
fn nodes_and_builds_get_no_secrets_of_the_runtime() {
    let (state, dir) = (temp_dir(), temp_dir());
    let script = dir.path().join("env-node.sh");
    std::fs::write(&script, ENV_NODE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (node_out, build_out) = (
        dir.path().join("node-env.txt"),
        dir.path().join("build-env.txt"),
    );
    let dataflow = dir.path().join("dataflow.yml");
    std::fs::write(
        &dataflow,
        format!(
            "nodes:\n  - id: printer\n    path: ./env-node.sh\n    build: ./env-node.sh {build}\n    \
             env: {{ OUT_FILE: {node}, WIDTH: 640 }}\n",
            build = build_out.display(),
            node = node_out.display(),
        ),
    )
    .unwrap();

    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap(), "--build"])
        .args(["--env", "EXTRA=from-cli"])
        .env("ADORA_TOKEN", SECRET)
        .env("ADORA_JOIN_CODE", format!("ADORA1.ab.cd.{SECRET}"))
        .env("ADORA_COORDINATOR_ADDR", "10.0.0.1")
        .env("UNRELATED_SETTING", SECRET)
        .env("LC_ALL", "C.UTF-8");
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");

    let raw = std::fs::read_to_string(&node_out).unwrap_or_default();
    let env = read_env(&node_out);
    assert_no_secrets("the node", &env, &raw);
    assert_eq!(env.get("WIDTH").map(String::as_str), Some("640"), "{raw}");
    assert_eq!(
        env.get("EXTRA").map(String::as_str),
        Some("from-cli"),
        "{raw}"
    );
    assert_eq!(
        env.get("ADORA_NODE_ID").map(String::as_str),
        Some("printer")
    );
    assert!(env.contains_key("ADORA_NODE_CONFIG"), "{raw}");

    let raw = std::fs::read_to_string(&build_out).unwrap_or_default();
    let env = read_env(&build_out);
    assert_no_secrets("the build", &env, &raw);
    assert_eq!(env.get("WIDTH").map(String::as_str), Some("640"), "{raw}");
}
