//! The routers of `cluster.yml`'s sites in `cluster up`: one `adora router` per site, started
//! detached over SSH after the daemons (a router on a daemon's machine uses the identity that
//! daemon enrolled; a dedicated router machine enrolls with its own single-use join code).

use std::path::PathBuf;

use adora_cluster::{quote, router_args, HostSession, SshTarget};
use adora_core::cluster::{ClusterConfig, Machine};

use super::machine::state_dir;
use crate::commands::client::Client;

/// Lines of a router's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 15;

/// Starts (or restarts) the router of `site` on `machine` detached, the join code on stdin
/// (empty when the machine is enrolled already); its pid in `<state_dir>/router-<site>.pid`,
/// its log in `<state_dir>/router-<site>.log`. Prints the router's pid.
pub(crate) fn router_start_script(
    cluster: &ClusterConfig,
    machine: &Machine,
    site: &str,
) -> String {
    let args = router_args(cluster, site).unwrap_or_default();
    let install_path = match &machine.install_dir {
        Some(dir) => format!("PATH={}:\"$PATH\"; export PATH; ", quote::path(dir)),
        None => String::new(),
    };
    format!(
        r#"set -e
{install_path}D={state}
S={site}
alive() {{ kill -0 "$1" 2>/dev/null && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }}
umask 077
mkdir -p "$D"
cat > "$D/router-$S.code"
old=$(cat "$D/router-$S.pid" 2>/dev/null || true)
if [ -n "$old" ] && alive "$old" && grep -q adora "/proc/$old/cmdline" 2>/dev/null; then
  kill "$old" 2>/dev/null || true
  i=0; while alive "$old" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$old" 2>/dev/null || true
fi
rm -f "$D/router-$S.pid"
ADORA_STATE_DIR="$D"; export ADORA_STATE_DIR
nohup setsid sh -c 'echo $$ > "$0"; exec "$@"' "$D/router-$S.pid" adora {args} --join-code-file "$D/router-$S.code" >> "$D/router-$S.log" 2>&1 < /dev/null &
i=0; while [ ! -s "$D/router-$S.pid" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.5
pid=$(cat "$D/router-$S.pid" 2>/dev/null || true)
if [ -z "$pid" ] || ! alive "$pid"; then
  echo "the router exited at once; last lines of $D/router-$S.log:" >&2
  tail -n {LOG_TAIL_LINES} "$D/router-$S.log" >&2
  exit 3
fi
echo "$pid"
"#,
        state = quote::path(state_dir(machine)),
        site = quote::quote(site),
        args = quote::line(&args),
    )
}

/// Stops the router of `site` `cluster up` started (from its pid file); prints `stopped PID` or
/// `not-running`.
pub(crate) fn router_stop_script(machine: &Machine, site: &str) -> String {
    format!(
        r#"D={state}
S={site}
alive() {{ kill -0 "$1" 2>/dev/null && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }}
old=$(cat "$D/router-$S.pid" 2>/dev/null || true)
if [ -n "$old" ] && alive "$old" && grep -q adora "/proc/$old/cmdline" 2>/dev/null; then
  kill "$old" 2>/dev/null || true
  i=0; while alive "$old" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$old" 2>/dev/null || true
  echo "stopped $old"
else
  echo not-running
fi
rm -f "$D/router-$S.pid"
"#,
        state = quote::path(state_dir(machine)),
        site = quote::quote(site),
    )
}

/// Stops every site's router over SSH (`cluster down cluster.yml`); returns how many failed.
pub(super) async fn stop_routers(cluster: &ClusterConfig, ssh_config: Option<&PathBuf>) -> usize {
    let mut failures = 0;
    for (site, at) in &cluster.sites {
        let Some(machine) = cluster.machine(&at.router.machine) else {
            continue;
        };
        let target = SshTarget::of(machine, ssh_config.cloned());
        let result = match HostSession::connect(target).await {
            Ok(session) => {
                let out = session.sh(&router_stop_script(machine, site)).await;
                session.close().await;
                out.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(out) if out.success() => {
                let what = out.stdout.trim().to_owned();
                println!("Router of site {site} on {}: {what}", machine.id);
            }
            Ok(out) => {
                println!(
                    "Router of site {site} on {}: FAILED: {}",
                    machine.id,
                    out.stderr.trim()
                );
                failures += 1;
            }
            Err(e) => {
                println!("Router of site {site} on {}: FAILED: {e}", machine.id);
                failures += 1;
            }
        }
    }
    failures
}

/// Starts every site's router; returns the failures as (site, reason).
pub(super) async fn start_routers(
    cluster: &ClusterConfig,
    ssh_config: Option<&PathBuf>,
    client: &mut Client,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut failures = Vec::new();
    for (site, at) in &cluster.sites {
        let Some(machine) = cluster.machine(&at.router.machine) else {
            continue; // validated: every router machine is in `machines`
        };
        let code = if cluster.runs_daemon(&machine.id) {
            String::new()
        } else {
            let codes = super::join_code::machine_codes(client, [machine.id.as_str()]).await?;
            codes.get(&machine.id).cloned().unwrap_or_default()
        };
        let result = start_router(cluster, machine, site, ssh_config.cloned(), &code).await;
        let verdict = match &result {
            Ok(()) => "OK".to_owned(),
            Err(e) => format!("FAILED: {e}"),
        };
        println!(
            "Starting the router of site {site} on {} ({}), port {}... {verdict}",
            machine.id,
            machine.destination(),
            at.router.port
        );
        if let Err(e) = result {
            failures.push((site.clone(), e));
        }
    }
    Ok(failures)
}

async fn start_router(
    cluster: &ClusterConfig,
    machine: &Machine,
    site: &str,
    ssh_config: Option<PathBuf>,
    code: &str,
) -> Result<(), String> {
    let session = HostSession::connect(SshTarget::of(machine, ssh_config))
        .await
        .map_err(|e| e.to_string())?;
    let script = router_start_script(cluster, machine, site);
    let result = session.sh_with_stdin(&script, code.as_bytes()).await;
    session.close().await;
    match result {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(out.stderr.trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_script_quotes_everything_and_passes_the_code_on_stdin() {
        let cluster = ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: gw, host: 10.1.0.1, state_dir: '/var/lib/my adora' }\n  - { id: gpu, host: 10.2.0.2 }\nsites:\n  lab: { machines: [gpu], router: { machine: gw } }\n",
            std::path::Path::new("cluster.yml"),
        )
        .expect("valid");
        let gw = cluster.machine("gw").expect("gw");
        let script = router_start_script(&cluster, gw, "lab");
        assert!(script.contains("D='/var/lib/my adora'"), "{script}");
        assert!(
            script.contains("adora router --machine-id gw --site lab"),
            "{script}"
        );
        assert!(
            script.contains("--join-code-file \"$D/router-$S.code\""),
            "{script}"
        );
        assert!(!cluster.runs_daemon("gw"));
    }
}
