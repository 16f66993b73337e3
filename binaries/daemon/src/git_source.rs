//! Nodes whose code comes from a git repository (`git:` with `branch`, `tag` or `rev`), for every
//! place a dataflow is built or run: `adora build` and `adora run` on this machine (the CLI) and
//! a daemon's `distribute: local` builds. One implementation, driven through the `git` command
//! line (no shell: arguments are passed as a list, and values starting with `-` were refused by
//! validation; `--` / `--end-of-options` end the options anyway).
//!
//! The cache, under a root directory (the CLI: `<state dir>/git`; a daemon:
//! `<artifact dir>/git`), holds per repository URL:
//!
//! ```text
//! <root>/<name>-<sha256(url), 16 hex>/mirror.git   bare mirror of the repository
//! <root>/<name>-<sha256(url), 16 hex>/<commit>/    one checkout per commit, built in place
//! ```
//!
//! A checkout is keyed by commit, so it never changes once made: a build's output stays next to
//! its sources, and a later build of the same commit starts from it. Fetching happens on
//! building only (`Fetch::Yes`); running without a build resolves the branch or tag against
//! the mirror as last fetched, and fails with a hint when the repository was never fetched.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use adora_core::{
    descriptor::{GitRef, GitSource},
    Descriptor, NodeId,
};

/// Upper bound of one `git` command (a clone of a large repository over a slow link).
pub const GIT_COMMAND_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Whether to contact the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Clone or fetch first (building).
    Yes,
    /// Use what was fetched before (running without a build).
    No,
}

/// Why a git node's code could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started.
    #[error("cannot run `git` (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// A `git` command failed.
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        /// What it was doing, e.g. "cloning <url>".
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its error output.
        stderr: String,
    },
    /// A `git` command ran longer than [`GIT_COMMAND_TIMEOUT`].
    #[error("{0} did not finish within {GIT_COMMAND_TIMEOUT:?}")]
    Timeout(String),
    /// The branch, tag or rev does not exist in the repository.
    #[error("{reference} not found in {url}")]
    UnknownRef {
        /// The repository.
        url: String,
        /// What was asked for.
        reference: GitRef,
    },
    /// Running without a build, but the repository was never fetched here.
    #[error("{url} has not been fetched on this machine yet: build the dataflow first (`adora build`, or `adora run --build`)")]
    NotFetched {
        /// The repository.
        url: String,
    },
    /// The cache directory could not be written.
    #[error("git cache {path}: {source}")]
    Cache {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The checkout of `source` (a directory), fetching first when `fetch` says so.
pub async fn checkout(root: &Path, source: &GitSource, fetch: Fetch) -> Result<PathBuf, GitError> {
    let repo_dir = root.join(repo_key(&source.url));
    let mirror = repo_dir.join("mirror.git");
    tokio::fs::create_dir_all(&repo_dir)
        .await
        .map_err(cache_error(&repo_dir))?;
    let fetched = update_mirror(&repo_dir, &mirror, source, fetch).await?;
    let commit = match resolve(&mirror, &source.reference).await {
        Some(commit) => commit,
        None => match (&source.reference, fetched) {
            (GitRef::Rev(rev), true) => {
                // A commit on no branch or tag: ask for it by hash (servers may allow it).
                let args = ["fetch", "--quiet", "--", &source.url, rev];
                let fetched = git(&format!("fetching {rev}"), Some(&mirror), &args).await;
                match (fetched, resolve(&mirror, &source.reference).await) {
                    (Ok(_), Some(commit)) => commit,
                    _ => return Err(unknown(source)),
                }
            }
            _ => return Err(unknown(source)),
        },
    };
    let dir = repo_dir.join(&commit);
    if dir.exists() {
        return Ok(dir);
    }
    let tmp = repo_dir.join(format!("{commit}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let (mirror_arg, tmp_arg) = (mirror.display().to_string(), tmp.display().to_string());
    let made = async {
        let what = format!("checking out {commit} of {}", source.url);
        let args = [
            "clone",
            "--quiet",
            "--no-checkout",
            "--",
            &mirror_arg,
            &tmp_arg,
        ];
        git(&what, None, &args).await?;
        let args = ["checkout", "--quiet", "--detach", &commit, "--"];
        git(&what, Some(&tmp), &args).await
    }
    .await;
    if let Err(e) = made {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(e);
    }
    publish(&tmp, &dir).await?;
    Ok(dir)
}

/// Clones the bare mirror, or fetches into it, as `fetch` says; true when it was brought up to
/// date. Without fetching, the mirror must already exist.
async fn update_mirror(
    repo_dir: &Path,
    mirror: &Path,
    source: &GitSource,
    fetch: Fetch,
) -> Result<bool, GitError> {
    match (fetch, mirror.exists()) {
        (Fetch::No, false) => Err(GitError::NotFetched {
            url: source.url.clone(),
        }),
        (Fetch::No, true) => Ok(false),
        (Fetch::Yes, false) => {
            let tmp = repo_dir.join(format!("mirror.tmp-{}", uuid::Uuid::new_v4().simple()));
            let tmp_arg = tmp.display().to_string();
            let args = ["clone", "--bare", "--quiet", "--", &source.url, &tmp_arg];
            git(&format!("cloning {}", source.url), None, &args).await?;
            publish(&tmp, mirror).await?;
            Ok(true)
        }
        (Fetch::Yes, true) => {
            let refs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
            let mut args = vec!["fetch", "--quiet", "--prune", "--force", "--", &source.url];
            args.extend(refs);
            git(&format!("fetching {}", source.url), Some(mirror), &args).await?;
            Ok(true)
        }
    }
}

/// Renames the finished `tmp` to `dir`; when another build made `dir` meanwhile, keeps that.
async fn publish(tmp: &Path, dir: &Path) -> Result<(), GitError> {
    if let Err(e) = tokio::fs::rename(tmp, dir).await {
        let _ = tokio::fs::remove_dir_all(tmp).await;
        if !dir.exists() {
            return Err(cache_error(dir)(e));
        }
    }
    Ok(())
}

fn cache_error(path: &Path) -> impl FnOnce(std::io::Error) -> GitError {
    let path = path.to_owned();
    move |source| GitError::Cache { path, source }
}

/// Checks out every git node of `descriptor` (fetching first when `fetch` says so) and makes
/// its `path` absolute inside the checkout; returns each git node's checkout (where its `build`
/// runs). Every failing node is reported, one line each.
pub async fn check_out_nodes(
    root: &Path,
    descriptor: &mut Descriptor,
    only: impl Fn(&NodeId) -> bool,
    fetch: Fetch,
) -> Result<BTreeMap<NodeId, PathBuf>, String> {
    let mut checkouts = BTreeMap::new();
    let mut problems = Vec::new();
    let mut done: HashMap<GitSource, PathBuf> = HashMap::new();
    for node in descriptor.nodes.iter_mut().filter(|n| only(&n.id)) {
        let Some(source) = node.git_source() else {
            continue;
        };
        let dir = match done.get(&source) {
            Some(dir) => dir.clone(),
            None => match checkout(root, &source, fetch).await {
                Ok(dir) => {
                    done.insert(source.clone(), dir.clone());
                    dir
                }
                Err(e) => {
                    problems.push(format!("node `{}` (git {}): {e}", node.id, source.url));
                    continue;
                }
            },
        };
        node.path = dir.join(&node.path).display().to_string();
        checkouts.insert(node.id.clone(), dir);
    }
    if problems.is_empty() {
        Ok(checkouts)
    } else {
        Err(problems.join("\n"))
    }
}

fn unknown(source: &GitSource) -> GitError {
    GitError::UnknownRef {
        url: source.url.clone(),
        reference: source.reference.clone(),
    }
}

/// The commit `reference` names in `mirror`, if any.
async fn resolve(mirror: &Path, reference: &GitRef) -> Option<String> {
    let spec = match reference {
        GitRef::DefaultBranch => "HEAD^{commit}".to_owned(),
        GitRef::Branch(b) => format!("refs/heads/{b}^{{commit}}"),
        GitRef::Tag(t) => format!("refs/tags/{t}^{{commit}}"),
        GitRef::Rev(r) => format!("{r}^{{commit}}"),
    };
    let args = [
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        &spec,
    ];
    let out = git("resolving", Some(mirror), &args).await.ok()?;
    let commit = out.trim();
    (commit.len() >= 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then(|| commit.to_owned())
}

/// The cache directory name of a repository: a readable tail of the URL and a hash of all of it.
fn repo_key(url: &str) -> String {
    let tail: String = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches(".git")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let hash = adora_message::distribute::sha256_hex(url.as_bytes());
    let tail = tail.trim_start_matches('.');
    format!(
        "{}-{}",
        if tail.is_empty() { "repo" } else { tail },
        &hash[..16]
    )
}

/// Runs `git <args>` (in `dir` when given) without a shell and without prompting for
/// credentials; returns its standard output. `what` names the step in errors.
async fn git(what: &str, dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    let mut command = tokio::process::Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| GitError::Timeout(what.to_owned()))?
        .map_err(GitError::Spawn)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(GitError::Command {
        what: what.to_owned(),
        status: output.status,
        stderr: lines[lines.len().saturating_sub(3)..].join(" / "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_keys_are_readable_and_distinct() {
        let a = repo_key("https://github.com/org/node.git");
        assert!(
            a.starts_with("node-") && a.len() == "node-".len() + 16,
            "{a}"
        );
        assert_ne!(a, repo_key("https://example.com/other/node.git"));
        assert!(repo_key("file:///").starts_with("repo-"));
        assert!(repo_key("git@host:x/..").starts_with("repo-"));
    }
}
