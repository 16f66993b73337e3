//! Artifact-store paths (`distribute: http`): a node id from a start request or a URL names a
//! file in the coordinator's store (`<dir>/builds/<build>/<node>`) and in the daemon's download
//! directory. Whatever `is_safe_path_segment` accepts must stay one component inside its
//! directory, and the URL of an upload (`artifact_path`) must name that same node.

use std::path::{Component, Path};

use adora_core::ids::is_valid_id;
use adora_message::distribute::{artifact_path, is_safe_path_segment};
use proptest::{prelude::*, test_runner::TestRunner};

use super::{draw, excerpt, strategies};
use crate::{mutate, runner::Target};

/// Artifact store and download paths.
pub const ARTIFACT_PATHS: Target = Target {
    name: "artifact-paths",
    about: "node ids / file names -> is_safe_path_segment, Path::join, artifact_path",
    case: artifact_case,
};

fn segment(runner: &mut TestRunner) -> String {
    let generated = prop_oneof![strategies::id(), "[./\\\\\0a-z%?#~ ]{0,8}", ".{0,300}",];
    if runner.rng().random_bool(0.2) {
        mutate::hostile_string(runner.rng())
    } else {
        draw(runner, &generated)
    }
}

fn artifact_case(runner: &mut TestRunner) -> Result<(), String> {
    let node = segment(runner);
    let build = uuid::Uuid::from_u128(runner.rng().random());
    let dir = Path::new("/var/lib/adora/artifacts/builds").join(build.to_string());
    if is_safe_path_segment(&node) {
        let path = dir.join(&node);
        let extra: Vec<Component<'_>> = path
            .strip_prefix(&dir)
            .map(|p| p.components().collect())
            .unwrap_or_default();
        if path.parent() != Some(dir.as_path())
            || !matches!(extra.as_slice(), [Component::Normal(n)] if *n == node.as_str())
        {
            return Err(format!(
                "a safe segment leaves its directory: {} -> {}",
                excerpt(&node),
                path.display()
            ));
        }
        // The daemon downloads `artifact_path(build, node)` for ids a dataflow may have.
        if is_valid_id(&node) {
            let url = artifact_path(build, &node);
            let parts: Vec<&str> = url.split('/').collect();
            let expected = [
                "",
                "api",
                "v1",
                "artifacts",
                &build.to_string(),
                node.as_str(),
            ];
            if parts != expected || url.contains(['?', '#', '%']) {
                return Err(format!(
                    "the URL of node {} names something else: {url}",
                    excerpt(&node)
                ));
            }
        }
    } else if !node.is_empty()
        && node.len() <= 255
        && !node.contains(['/', '\\', '\0'])
        && node != "."
        && node != ".."
    {
        return Err(format!(
            "a harmless segment was refused: {}",
            excerpt(&node)
        ));
    }
    Ok(())
}
