//! `adora cluster status --links`: each daemon's Zenoh data links (to the daemons of its site it
//! reads from, and to its site's router), up or down and since when, as the daemons report them.

use adora_message::{
    coordinator_to_cli::CoordinatorStatus,
    data_links::{DataLinkStatus, LinkKind},
};
use serde::Serialize;

use crate::table::Table;

/// `--links --json` output.
#[derive(Debug, Serialize)]
pub(super) struct LinksReport {
    daemons: Vec<DaemonLinks>,
}

#[derive(Debug, Serialize)]
struct DaemonLinks {
    /// Machine id, or the hostname of a daemon without one.
    id: String,
    site: Option<String>,
    connected: bool,
    links: Vec<DataLinkStatus>,
}

/// The links of every daemon in a coordinator status.
pub(super) fn report(status: &CoordinatorStatus) -> LinksReport {
    let daemons = status
        .daemons
        .iter()
        .map(|d| DaemonLinks {
            id: d.machine_id.clone().unwrap_or_else(|| d.hostname.clone()),
            site: d.site.clone(),
            connected: d.connected,
            links: d.links.clone(),
        })
        .collect();
    LinksReport { daemons }
}

/// `2m ago`-style age of a moment (milliseconds since the epoch) at `now_ms`.
fn age(since_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(since_ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// The human-readable table: one row per link.
pub(super) fn render(report: &LinksReport, now_ms: u64) -> String {
    let mut table = Table::new(["DAEMON", "SITE", "PEER", "KIND", "STATE", "SINCE"]);
    let mut rows = 0;
    for d in &report.daemons {
        let site = d.site.clone().unwrap_or_else(|| "-".into());
        if d.links.is_empty() {
            let state = if d.connected { "no links" } else { "lost" };
            table.row([
                d.id.clone(),
                site,
                "-".into(),
                "-".into(),
                state.into(),
                "-".into(),
            ]);
            continue;
        }
        for l in &d.links {
            let kind = match l.kind {
                LinkKind::Daemon => "daemon",
                LinkKind::Router => "router",
                LinkKind::Site => "site",
            };
            let state = if l.up { "up" } else { "DOWN" };
            let row = [
                d.id.clone(),
                site.clone(),
                l.peer.clone(),
                kind.into(),
                state.into(),
                age(l.since_ms, now_ms),
            ];
            table.row(row);
            rows += 1;
        }
    }
    let mut out = table.render();
    out.push_str(&format!(
        "\n{rows} data links (a daemon links only to the daemons of its site it reads from, \
         and to its site's router; `site` rows are the other sites, reached through the \
         routers).\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, kind: LinkKind, up: bool) -> DataLinkStatus {
        DataLinkStatus {
            peer: peer.into(),
            kind,
            up,
            since_ms: 10_000,
        }
    }

    #[test]
    fn renders_one_row_per_link_and_daemons_without_links() {
        let report = LinksReport {
            daemons: vec![
                DaemonLinks {
                    id: "robot".into(),
                    site: Some("lab".into()),
                    connected: true,
                    links: vec![
                        link("gpu", LinkKind::Daemon, true),
                        link("tls/10.0.0.1:7448", LinkKind::Router, false),
                    ],
                },
                DaemonLinks {
                    id: "idle".into(),
                    site: None,
                    connected: true,
                    links: vec![],
                },
            ],
        };
        let text = render(&report, 40_000);
        assert!(text.contains("robot"), "{text}");
        assert!(text.contains("gpu") && text.contains("up") && text.contains("30s ago"));
        assert!(text.contains("router") && text.contains("DOWN"), "{text}");
        assert!(text.contains("no links"), "{text}");
        assert!(text.contains("2 data links"), "{text}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["daemons"][0]["links"][1]["kind"], "router");
        assert_eq!(json["daemons"][0]["links"][0]["up"], true);
    }
}
