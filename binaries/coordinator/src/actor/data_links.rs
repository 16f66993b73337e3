//! Which daemons link to which over Zenoh (`DataLinks`), and the links' state they report.
//!
//! A daemon links directly only to the daemons of its site whose nodes' outputs its own nodes
//! read, in the dataflows that are running; a node being moved counts on both its daemons until
//! the move ends. Data between sites goes through the sites' routers instead. After every event
//! the coordinator recomputes the sets and sends each daemon its own when it changed (see
//! `binaries/daemon/src/remote/topology.rs` for the daemon's side).

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{descriptor::InputSource, Descriptor, NodeId};
use adora_message::{
    coordinator_to_daemon::DaemonCommand,
    data_links::{DataLinkStatus, DataPeer},
    envelope::Envelope,
};

use super::{peers::ZenohState, ConnId, Coordinator, Outgoing};

/// Daemon name → the daemons it reads data from directly.
pub(crate) type LinkSets = BTreeMap<String, BTreeSet<String>>;

/// One running dataflow as links see it: its descriptor and, per node, the daemons it runs on
/// (two during a move).
pub(crate) struct FlowPlacement<'a> {
    pub descriptor: &'a Descriptor,
    pub daemons: BTreeMap<&'a NodeId, BTreeSet<&'a str>>,
}

/// The direct links the dataflows need: a daemon running a node links to each daemon of the
/// same site (`same_site`) running a node it reads from.
pub(crate) fn needed_links<'a>(
    flows: impl IntoIterator<Item = FlowPlacement<'a>>,
    same_site: impl Fn(&str, &str) -> bool,
) -> LinkSets {
    let mut links = LinkSets::new();
    for flow in flows {
        for node in &flow.descriptor.nodes {
            let Some(readers) = flow.daemons.get(&node.id) else {
                continue;
            };
            for input in node.inputs.values() {
                let Ok(InputSource::Node { node: from, .. }) = input.resolve() else {
                    continue;
                };
                let Some(sources) = flow.daemons.get(&from) else {
                    continue;
                };
                for reader in readers {
                    for source in sources {
                        if reader != source && same_site(reader, source) {
                            links
                                .entry((*reader).to_owned())
                                .or_default()
                                .insert((*source).to_owned());
                        }
                    }
                }
            }
        }
    }
    links
}

impl Coordinator {
    /// The running dataflows' placements, with moving nodes on both their daemons.
    fn flow_placements(&self) -> Vec<FlowPlacement<'_>> {
        let mut out = Vec::new();
        for (id, flow) in &self.flows {
            if flow.record.status.is_done() {
                continue;
            }
            let mut daemons: BTreeMap<&NodeId, BTreeSet<&str>> = BTreeMap::new();
            for (node, daemon) in &flow.record.placement {
                daemons.entry(node).or_default().insert(daemon);
            }
            for ((dataflow, node), m) in &self.moves {
                if dataflow == id {
                    let on = daemons.entry(node).or_default();
                    on.insert(&m.from);
                    on.insert(&m.to);
                }
            }
            out.push(FlowPlacement {
                descriptor: &flow.record.descriptor,
                daemons,
            });
        }
        out
    }

    /// Sends every connected daemon whose Zenoh session is open its set of direct links, when
    /// it differs from the last one sent on its connection.
    pub(super) fn sync_data_links(&mut self) {
        let sites: BTreeMap<&str, Option<&str>> = self
            .daemons
            .iter()
            .map(|d| (d.name(), d.site.as_deref()))
            .collect();
        let needed = needed_links(self.flow_placements(), |a, b| {
            sites.get(a).copied().flatten() == sites.get(b).copied().flatten()
        });
        // A peer's last known locators, even while it is not connected to the coordinator:
        // the data link may well be up.
        let endpoints: BTreeMap<String, Vec<String>> = self
            .daemons
            .iter()
            .filter(|d| !d.zenoh_locators.is_empty())
            .map(|d| (d.name().to_owned(), d.zenoh_locators.clone()))
            .collect();
        for d in &mut self.daemons {
            let Some(tx) = d.tx.as_ref() else { continue };
            if d.zenoh != ZenohState::Listening || d.zenoh_locators.is_empty() {
                continue;
            }
            let peers: Vec<DataPeer> = needed
                .get(d.machine_id.as_deref().unwrap_or(&d.hostname))
                .into_iter()
                .flatten()
                // A peer whose locators are not known (yet: after a coordinator restart, until
                // it registers again) goes without endpoints: the daemon keeps its link as is.
                .map(|peer| DataPeer {
                    machine: peer.clone(),
                    endpoints: endpoints.get(peer).cloned().unwrap_or_default(),
                })
                .collect();
            if d.data_links.as_ref() != Some(&peers) {
                let command = DaemonCommand::DataLinks {
                    peers: peers.clone(),
                };
                let _ = tx.send(Outgoing::Message(Envelope::new(0, command)));
                d.data_links = Some(peers);
            }
        }
    }

    /// `DataLinks` from a daemon: the state of its links, for `cluster status --links`.
    pub(super) fn data_links_reported(&mut self, conn: ConnId, links: Vec<DataLinkStatus>) {
        if let Some(d) = self.daemons.iter_mut().find(|d| d.conn == conn) {
            d.link_status = links;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn descriptor() -> Descriptor {
        Descriptor::parse(
            "nodes:\n  - id: cam\n    path: ./cam\n    outputs: [frame]\n  - id: detect\n    path: ./d\n    inputs: { frame: cam/frame, tick: adora/timer/millis/100 }\n    outputs: [boxes]\n  - id: arm\n    path: ./a\n    inputs: { boxes: detect/boxes }\n",
            Path::new("d.yml"),
        )
        .expect("valid descriptor")
    }

    fn placed<'a>(
        descriptor: &'a Descriptor,
        ids: &'a [NodeId],
        on: &[&[&'a str]],
    ) -> FlowPlacement<'a> {
        let daemons = ids
            .iter()
            .zip(on)
            .map(|(id, daemons)| (id, daemons.iter().copied().collect()))
            .collect();
        FlowPlacement {
            descriptor,
            daemons,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn readers_link_to_the_daemons_they_read_from_and_no_other() {
        let d = descriptor();
        let ids: Vec<NodeId> = ["cam", "detect", "arm"].map(NodeId::from).to_vec();
        let links = needed_links(
            [placed(&d, &ids, &[&["robot"], &["gpu"], &["robot"]])],
            |_, _| true,
        );
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(links["gpu"], set(&["robot"]));
        assert_eq!(links["robot"], set(&["gpu"]));
        // All on one daemon: no link at all.
        let links = needed_links([placed(&d, &ids, &[&["a"], &["a"], &["a"]])], |_, _| true);
        assert!(links.is_empty(), "{links:?}");
        // A chain across three daemons: nobody links to the one it does not read from.
        let links = needed_links([placed(&d, &ids, &[&["a"], &["b"], &["c"]])], |_, _| true);
        assert_eq!(
            links,
            [("b".into(), set(&["a"])), ("c".into(), set(&["b"]))].into()
        );
    }

    #[test]
    fn a_moving_node_counts_on_both_daemons_and_other_sites_go_through_routers() {
        let d = descriptor();
        let ids: Vec<NodeId> = ["cam", "detect", "arm"].map(NodeId::from).to_vec();
        let moving = placed(&d, &ids, &[&["a"], &["b", "c"], &["a"]]);
        let links = needed_links([moving], |_, _| true);
        assert_eq!(links["a"], set(&["b", "c"]));
        assert_eq!(links["b"], set(&["a"]));
        assert_eq!(links["c"], set(&["a"]));
        // `c` is in another site: no direct link to or from it.
        let moving = placed(&d, &ids, &[&["a"], &["b", "c"], &["a"]]);
        let links = needed_links([moving], |x, y| (x == "c") == (y == "c"));
        assert_eq!(links["a"], set(&["b"]));
        assert!(!links.contains_key("c"), "{links:?}");
    }
}
