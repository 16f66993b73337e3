//! Embeds the Adora version: the package version plus an optional `ADORA_VERSION_SUFFIX` read at
//! build time (e.g. `-upgrade-test`, for the second binary of the rolling-upgrade test). A changed
//! suffix rebuilds this crate and everything that reports the version.

fn main() {
    println!("cargo:rerun-if-env-changed=ADORA_VERSION_SUFFIX");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let suffix = std::env::var("ADORA_VERSION_SUFFIX").unwrap_or_default();
    println!("cargo:rustc-env=ADORA_FULL_VERSION={version}{suffix}");
}
