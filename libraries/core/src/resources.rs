//! Resources: what a node asks for (`deploy.resources`, [`Resources`]), the thresholds an
//! operator sets on a machine (`cluster.yml`, [`MachineLimits`]), what a daemon reports of its
//! machine ([`MachineFigures`]) and what the nodes already placed on it asked for
//! ([`Reserved`]) — the inputs of resource-aware placement ([`crate::placement`]).

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::descriptor::ByteSize;

/// Most CPU cores one node may ask for (`deploy.resources.cpus`).
pub const MAX_CPUS: f64 = 4096.0;
/// Most GPUs one node may ask for (`deploy.resources.gpus`).
pub const MAX_GPUS: u32 = 1024;

/// What a node asks of its machine (`deploy: { resources: { cpus: 2, memory: 4GiB, gpus: 1 } }`).
/// Placement sends the node only to a daemon that can fit all of it (see [`crate::placement`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (fractions allowed, e.g. `0.5`; at most 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Memory, like `4GiB` or `512MiB`, or a number of bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// GPUs (counted by `nvidia-smi -L` on the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

impl Resources {
    /// The CPU cores asked for, if any (zero counts as not asked).
    pub fn cpus(&self) -> Option<f64> {
        self.cpus.map(Cpus::get).filter(|c| *c > 0.0)
    }

    /// The memory asked for in bytes, if any.
    pub fn memory(&self) -> Option<u64> {
        self.memory.map(|m| m.0).filter(|m| *m > 0)
    }

    /// The GPUs asked for, if any.
    pub fn gpus(&self) -> Option<u32> {
        self.gpus.filter(|g| *g > 0)
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.cpus().is_none() && self.memory().is_none() && self.gpus().is_none()
    }
}

/// A number of CPU cores: finite, above zero, at most [`MAX_CPUS`] (checked when read).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cpus(f64);

impl Cpus {
    /// `cores` when it is a valid request, else why not.
    pub fn new(cores: f64) -> Result<Cpus, String> {
        if cores.is_finite() && cores > 0.0 && cores <= MAX_CPUS {
            Ok(Cpus(cores))
        } else {
            Err(format!(
                "invalid cpus {cores}: expected a number of cores above 0 and at most {MAX_CPUS}"
            ))
        }
    }

    /// The number of cores.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cpus::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "CPU cores, fractions allowed (e.g. 0.5).",
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_CPUS
        })
    }
}

/// Thresholds above which a machine takes no new nodes (`cluster.yml`
/// `machines[].max_cpu_percent`, `max_memory_percent`, `min_disk_free`; `adora daemon
/// --max-cpu-percent ...`). Unset means no threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineLimits {
    /// CPU use of the whole machine, in percent (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_percent: Option<u8>,
    /// Memory in use (total minus available), in percent of the total (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_percent: Option<u8>,
    /// Free bytes on the file system of the daemon's state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_disk_free: Option<u64>,
}

impl MachineLimits {
    /// Whether no threshold is set.
    pub fn is_none(&self) -> bool {
        *self == MachineLimits::default()
    }

    /// Every threshold the machine is above, e.g. `cpu 93% > 90%`; empty when it may take new
    /// nodes. A figure the daemon did not report is never above a threshold.
    pub fn exceeded(&self, figures: &MachineFigures) -> Vec<String> {
        let mut over = Vec::new();
        if let (Some(max), Some(used)) = (self.max_cpu_percent, figures.cpu_percent) {
            if used > f64::from(max) {
                over.push(format!("cpu {used:.0}% > {max}%"));
            }
        }
        if let (Some(max), Some(used)) = (self.max_memory_percent, figures.memory_used_percent()) {
            if used > f64::from(max) {
                over.push(format!("memory {used:.0}% > {max}%"));
            }
        }
        if let (Some(min), Some(free)) = (self.min_disk_free, figures.disk_free) {
            if free < min {
                over.push(format!(
                    "disk {} free < {}",
                    format_bytes(free),
                    format_bytes(min)
                ));
            }
        }
        over
    }
}

/// A machine's capacity and use as its daemon last reported them (a figure it could not read is
/// `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineFigures {
    /// CPU cores the daemon's processes may use.
    pub cpus: Option<u32>,
    /// CPU use of the whole machine in percent (0 to 100) over the last heartbeat interval.
    pub cpu_percent: Option<f64>,
    /// Total memory in bytes.
    pub memory_total: Option<u64>,
    /// Memory available to new processes in bytes.
    pub memory_available: Option<u64>,
    /// Free bytes on the file system of the daemon's state directory.
    pub disk_free: Option<u64>,
    /// GPUs (`None`: no `nvidia-smi`, or it failed).
    pub gpus: Option<u32>,
}

impl MachineFigures {
    /// Memory in use (total minus available) in percent of the total.
    pub fn memory_used_percent(&self) -> Option<f64> {
        let (total, available) = (self.memory_total?, self.memory_available?);
        (total > 0).then(|| total.saturating_sub(available) as f64 * 100.0 / total as f64)
    }
}

/// What the nodes placed on a daemon asked for, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Reserved {
    /// CPU cores.
    #[serde(default)]
    pub cpus: f64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
}

impl Reserved {
    /// Adds one node's requests.
    pub fn add(&mut self, requests: &Resources) {
        self.cpus += requests.cpus().unwrap_or(0.0);
        self.memory = self.memory.saturating_add(requests.memory().unwrap_or(0));
        self.gpus = self.gpus.saturating_add(requests.gpus().unwrap_or(0));
    }

    /// Both sums together.
    pub fn plus(&self, other: &Reserved) -> Reserved {
        Reserved {
            cpus: self.cpus + other.cpus,
            memory: self.memory.saturating_add(other.memory),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// Whether nothing is reserved.
    pub fn is_zero(&self) -> bool {
        self.cpus <= 0.0 && self.memory == 0 && self.gpus == 0
    }
}

/// `3.1 GiB`, `512.0 MiB`, `42 B`: bytes in binary units with one decimal.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_range_checked_when_read() {
        let read = |yaml: &str| serde_yaml::from_str::<Resources>(yaml);
        assert_eq!(read("cpus: 0.5").expect("valid").cpus(), Some(0.5));
        for bad in [
            "cpus: 0",
            "cpus: -1",
            "cpus: 5000",
            "cpus: .nan",
            "cpus: .inf",
        ] {
            let e = read(bad).expect_err(bad).to_string();
            assert!(e.contains("invalid cpus"), "{bad}: {e}");
        }
        assert!(read("gpus: -1").is_err());
        assert!(read("disk: 1").is_err(), "unknown keys are refused");
        let r = read("memory: 4GiB\ngpus: 1").expect("valid");
        assert_eq!((r.memory(), r.gpus()), (Some(4 << 30), Some(1)));
    }

    #[test]
    fn limits_name_every_threshold_crossed() {
        let limits = MachineLimits {
            max_cpu_percent: Some(90),
            max_memory_percent: Some(80),
            min_disk_free: Some(5 << 30),
        };
        let mut figures = MachineFigures {
            cpu_percent: Some(93.4),
            memory_total: Some(10 << 30),
            memory_available: Some(1 << 30),
            disk_free: Some(1 << 30),
            ..MachineFigures::default()
        };
        assert_eq!(
            limits.exceeded(&figures),
            [
                "cpu 93% > 90%",
                "memory 90% > 80%",
                "disk 1.0 GiB free < 5.0 GiB"
            ]
        );
        figures = MachineFigures::default();
        assert!(limits.exceeded(&figures).is_empty(), "unknown is not over");
        assert!(MachineLimits::default().is_none());
    }

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(42), "42 B");
        assert_eq!(format_bytes(3_328_599_654), "3.1 GiB");
        assert_eq!(format_bytes(4 << 30), "4.0 GiB");
    }
}
