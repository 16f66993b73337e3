//! The environment of the processes the daemon starts for users (nodes and `build` commands):
//! built, not inherited. The daemon's own environment may hold secrets (`ADORA_TOKEN`, a join
//! code, the paths of its keys); a node is third-party code and gets none of them.
//!
//! A node's environment is, in this order (later entries win):
//! 1. the variables of [`INHERITED_ENV`] (and every `LC_*`) that the daemon itself has;
//! 2. the descriptor's `env` of the node, then `--env` of `adora run` / `adora start`;
//! 3. what the runtime sets: `ADORA_NODE_CONFIG`, `ADORA_DATAFLOW_ID`, `ADORA_NODE_ID`.
//!
//! A `build` command gets 1 and the node's descriptor `env` (it runs user code too).

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
};

/// The variables a node inherits from the daemon, when the daemon has them: what programs need
/// to find executables, libraries and the user's files (`PATH`, `HOME`, `LD_LIBRARY_PATH`,
/// `PYTHONPATH`, `VIRTUAL_ENV`), to read and print text (`LANG`, every `LC_*`, `TZ`, `TERM`),
/// temporary files (`TMPDIR`), logging (`RUST_LOG`, `RUST_BACKTRACE`), the GPU
/// (`CUDA_VISIBLE_DEVICES`) and the display (`XDG_RUNTIME_DIR`, `DISPLAY`, `WAYLAND_DISPLAY`).
/// Never any `ADORA_*` variable: the daemon's token, join code, state directory and
/// coordinator settings stay with the daemon. Anything else a node needs goes in the
/// descriptor's `env` (or `--env`).
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "TZ",
    "TMPDIR",
    "TERM",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "CUDA_VISIBLE_DEVICES",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
];

/// Variables with this prefix are inherited too (the locale categories).
pub const INHERITED_ENV_PREFIX: &str = "LC_";

/// True when a node inherits the daemon's variable `name`.
pub fn is_inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    INHERITED_ENV.contains(&name) || name.starts_with(INHERITED_ENV_PREFIX)
}

/// The part of `from` (a process environment) a node inherits.
pub fn inherited_from(
    from: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    from.into_iter().filter(|(k, _)| is_inherited(k)).collect()
}

/// The part of this process's environment a node inherits (see [`INHERITED_ENV`]).
pub fn inherited() -> BTreeMap<OsString, OsString> {
    inherited_from(std::env::vars_os())
}

/// The whole environment of a process the daemon starts: `inherited`, then `set` over it.
pub fn build(
    inherited: BTreeMap<OsString, OsString>,
    set: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let mut env = inherited;
    env.extend(set.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// The whole environment of `node`'s `build` command: the inherited part of this process's
/// environment, then the node's descriptor `env` (a build runs user code too).
pub fn of_build(node: &adora_core::NodeSpec) -> BTreeMap<OsString, OsString> {
    let set = node
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    build(inherited(), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn only_the_allow_list_is_inherited_never_adora_variables() {
        let daemon = os(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/robot"),
            ("LC_ALL", "C.UTF-8"),
            ("ADORA_TOKEN", "secret-marker"),
            ("ADORA_JOIN_CODE", "ADORA1.x.y.z"),
            ("ADORA_STATE_DIR", "/var/lib/adora"),
            ("ADORA_COORDINATOR_ADDR", "10.0.0.1"),
            ("AWS_SECRET_ACCESS_KEY", "nope"),
            ("PATHX", "not PATH"),
        ]);
        let env = inherited_from(daemon);
        let names: Vec<_> = env.keys().filter_map(|k| k.to_str()).collect();
        assert_eq!(names, ["HOME", "LC_ALL", "PATH"]);
    }

    #[test]
    fn descriptor_and_runtime_variables_go_over_the_inherited_ones() {
        let inherited = inherited_from(os(&[("PATH", "/usr/bin"), ("LANG", "C")]));
        let set = BTreeMap::from([
            ("PATH".to_owned(), "/opt/robot/bin".to_owned()),
            ("WIDTH".to_owned(), "640".to_owned()),
            ("ADORA_NODE_CONFIG".to_owned(), "{}".to_owned()),
        ]);
        let env = build(inherited, &set);
        let get = |k: &str| env.get(OsStr::new(k)).and_then(|v| v.to_str());
        assert_eq!(get("PATH"), Some("/opt/robot/bin"));
        assert_eq!(get("LANG"), Some("C"));
        assert_eq!(get("WIDTH"), Some("640"));
        assert_eq!(get("ADORA_NODE_CONFIG"), Some("{}"));
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn the_allow_list_names_no_adora_variable() {
        assert!(INHERITED_ENV.iter().all(|v| !v.starts_with("ADORA")));
        assert!(!is_inherited(OsStr::new("ADORA_TOKEN")));
    }
}
