//! `sites:` in `cluster.yml`: machines grouped by network, each group with a Zenoh router.
//!
//! ```yaml
//! sites:
//!   warehouse:
//!     machines: [robot1, robot2]
//!     router: { machine: gateway, port: 7448 }   # port defaults to 7448
//!   cloud:
//!     machines: [gpu1]
//!     router: { machine: gpu1 }
//! ```
//!
//! Daemons of one site exchange data peer to peer; data between sites goes through the sites'
//! routers (`adora router`), which are the only machines that need to reach each other. A
//! site's router is one of its machines or a dedicated machine of `machines:` listed in no
//! site (it then runs the router only, no daemon). Machines in no site form one implicit group
//! without a router: they reach each other directly and no other site.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use super::{err, unknown_keys, ClusterConfig};
use crate::{
    ids::is_valid_id,
    validate::{describe, locate::Seg, Report},
};

/// Default port of a site's router.
pub const DEFAULT_ROUTER_PORT: u16 = 7448;

/// One site: machines on one network, and the router joining it to the other sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Ids of the machines (of `machines:`) whose daemons belong to the site.
    pub machines: Vec<String>,
    /// The site's Zenoh router.
    pub router: SiteRouter,
}

/// Where a site's router runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRouter {
    /// Id of the machine (of `machines:`) running `adora router`.
    pub machine: String,
    /// Port it listens on, on every interface (default 7448).
    #[serde(default = "default_router_port")]
    pub port: u16,
}

fn default_router_port() -> u16 {
    DEFAULT_ROUTER_PORT
}

const SITE_FIELDS: &[&str] = &["machines", "router"];
const ROUTER_FIELDS: &[&str] = &["machine", "port"];

impl ClusterConfig {
    /// The site a machine's daemon belongs to, by name.
    pub fn site_of(&self, machine: &str) -> Option<(&str, &Site)> {
        self.sites
            .iter()
            .find(|(_, s)| s.machines.iter().any(|m| m == machine))
            .map(|(name, s)| (name.as_str(), s))
    }

    /// The sites whose router runs on `machine`.
    pub fn routed_by<'a>(&'a self, machine: &'a str) -> impl Iterator<Item = (&'a str, &'a Site)> {
        self.sites
            .iter()
            .filter(move |(_, s)| s.router.machine == machine)
            .map(|(name, s)| (name.as_str(), s))
    }

    /// True when `machine` runs a daemon: it is in a site, or it routes none (machines in no
    /// site and routing none run a daemon; a dedicated router machine runs only the router).
    pub fn runs_daemon(&self, machine: &str) -> bool {
        self.site_of(machine).is_some() || self.routed_by(machine).next().is_none()
    }

    /// The Zenoh endpoint of a site's router as daemons and other routers reach it
    /// (`<scheme>/<host>:<port>`, `scheme` `tls` or `tcp`).
    pub fn router_endpoint(&self, site: &Site, scheme: &str) -> Option<String> {
        let host = &self.machine(&site.router.machine)?.host;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // an IPv6 address
        } else {
            host.clone()
        };
        Some(format!("{scheme}/{host}:{}", site.router.port))
    }
}

/// Checks `sites:` against the machines (`ids`: the valid machine ids of `machines:`).
pub(super) fn check_sites(report: &mut Report<'_>, sites: &Value, ids: &[String]) {
    let base = [Seg::Key("sites")];
    let map = match sites {
        Value::Null => return,
        Value::Mapping(map) => map,
        other => {
            let message = format!(
                "expected a mapping of site names to sites, found {}",
                describe(other)
            );
            return err(report, &base, "sites".into(), message);
        }
    };
    let mut member_of: BTreeMap<String, String> = BTreeMap::new();
    for (name, site) in map {
        let Some(name) = name.as_str() else {
            let message = format!("site names must be strings, found {}", describe(name));
            err(report, &base, "sites".into(), message);
            continue;
        };
        let at = SiteAt { name };
        if !is_valid_id(name) {
            let message = format!(
                "invalid site name `{name}`: names may only contain letters, digits, `_`, `.` and `-`"
            );
            err(report, &at.base(), at.field(""), message);
        }
        match site {
            Value::Mapping(site) => check_site(report, &at, site, ids, &mut member_of),
            other => {
                let message = format!(
                    "expected a mapping with `machines` and `router`, found {}",
                    describe(other)
                );
                err(report, &at.base(), at.field(""), message);
            }
        }
    }
}

/// Where in cluster.yml one site is: `sites.<name>`.
struct SiteAt<'a> {
    name: &'a str,
}

impl<'a> SiteAt<'a> {
    fn base(&self) -> [Seg<'a>; 2] {
        [Seg::Key("sites"), Seg::Key(self.name)]
    }

    fn at(&self, key: &'a str) -> [Seg<'a>; 3] {
        [Seg::Key("sites"), Seg::Key(self.name), Seg::Key(key)]
    }

    /// `sites.<name>` followed by `rest` (`.machines`, `.router.port`, or nothing).
    fn field(&self, rest: &str) -> String {
        format!("sites.{}{rest}", self.name)
    }
}

fn check_site(
    report: &mut Report<'_>,
    at: &SiteAt<'_>,
    site: &Mapping,
    ids: &[String],
    member_of: &mut BTreeMap<String, String>,
) {
    let prefix = at.field(".");
    unknown_keys(report, site, &at.base(), &prefix, SITE_FIELDS);
    match site.get("machines") {
        None => err(
            report,
            &at.base(),
            at.field(".machines"),
            "missing required field `machines`".into(),
        ),
        Some(Value::Sequence(ms)) if !ms.is_empty() => {
            for (i, m) in ms.iter().enumerate() {
                let field = at.field(&format!(".machines[{i}]"));
                let path = [
                    Seg::Key("sites"),
                    Seg::Key(at.name),
                    Seg::Key("machines"),
                    Seg::Index(i),
                ];
                match m.as_str() {
                    Some(id) if !ids.iter().any(|known| known == id) => {
                        err(report, &path, field, format!("unknown machine `{id}`: every machine of a site must be in `machines`"));
                    }
                    Some(id) => {
                        if let Some(other) = member_of.insert(id.to_owned(), at.name.to_owned()) {
                            err(report, &path, field, format!("machine `{id}` is already in site `{other}`: a machine belongs to one site"));
                        }
                    }
                    None => err(
                        report,
                        &path,
                        field,
                        format!("expected a machine id, found {}", describe(m)),
                    ),
                }
            }
        }
        Some(other) => err(
            report,
            &at.at("machines"),
            at.field(".machines"),
            format!(
                "expected a non-empty list of machine ids, found {}",
                describe(other)
            ),
        ),
    }
    match site.get("router") {
        None => err(
            report,
            &at.base(),
            at.field(".router"),
            "missing required field `router` (e.g. `router: { machine: gateway }`)".into(),
        ),
        Some(Value::Mapping(r)) => check_router(report, at, r, ids),
        Some(other) => err(
            report,
            &at.at("router"),
            at.field(".router"),
            format!(
                "expected a mapping with `machine` and `port`, found {}",
                describe(other)
            ),
        ),
    }
}

fn check_router(report: &mut Report<'_>, at: &SiteAt<'_>, router: &Mapping, ids: &[String]) {
    let base = at.at("router");
    unknown_keys(report, router, &base, &at.field(".router."), ROUTER_FIELDS);
    let path = |key| {
        [
            Seg::Key("sites"),
            Seg::Key(at.name),
            Seg::Key("router"),
            Seg::Key(key),
        ]
    };
    match router.get("machine") {
        Some(Value::String(id)) if ids.iter().any(|known| known == id) => {}
        Some(Value::String(id)) => err(
            report,
            &path("machine"),
            at.field(".router.machine"),
            format!("unknown machine `{id}`: the router runs on a machine of `machines`"),
        ),
        None => err(
            report,
            &base,
            at.field(".router.machine"),
            "missing required field `machine`".into(),
        ),
        Some(other) => err(
            report,
            &path("machine"),
            at.field(".router.machine"),
            format!("expected a machine id, found {}", describe(other)),
        ),
    }
    super::check_port(
        report,
        router.get("port"),
        &path("port"),
        &at.field(".router.port"),
    );
}

/// Checks that routers sharing a machine use different ports (after deserialization).
pub(super) fn check_router_ports(config: &ClusterConfig) -> Vec<(String, String)> {
    let mut seen: BTreeMap<(&str, u16), &str> = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, site) in &config.sites {
        let key = (site.router.machine.as_str(), site.router.port);
        if let Some(other) = seen.insert(key, name) {
            errors.push((
                format!("sites.{name}.router.port"),
                format!(
                    "the router of site `{other}` already listens on port {} of machine `{}`",
                    site.router.port, site.router.machine
                ),
            ));
        }
    }
    errors
}
