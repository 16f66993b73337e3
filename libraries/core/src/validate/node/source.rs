//! Checks of where a node's code comes from: `path`, `git` with `branch`/`tag`/`rev`, or `module`
//! with `params` (dora 1.x). The module file itself is read and checked by `validate::module`.

use serde_yaml::{Mapping, Value};

use super::{expected, present, NodeCtx};
use crate::validate::{describe, locate::Seg};

/// The fields a `module` node may have; everything else belongs on the module's own nodes.
pub(crate) const MODULE_NODE_FIELDS: &[&str] =
    &["id", "name", "description", "module", "params", "inputs"];

/// The fields that pick what to check out of `git`; at most one may be set.
const GIT_REF_FIELDS: &[&str] = &["branch", "tag", "rev"];

impl NodeCtx<'_, '_, '_> {
    /// Checks `path`, `git` (+ `branch`/`tag`/`rev`) and `module` (+ `params`) together.
    pub(super) fn check_source(&mut self, map: &Mapping) {
        if let Some(module) = present(map, "module") {
            return self.check_module_node(map, module);
        }
        match map.get("path") {
            None | Some(Value::Null) => self.missing("path"),
            Some(path) => self.string(&[Seg::Key("path")], path, true),
        }
        if present(map, "params").is_some() {
            let message = "`params` is only for `module` nodes".to_owned();
            self.error(&[Seg::Key("params")], message);
        }
        self.check_git(map);
    }

    fn check_module_node(&mut self, map: &Mapping, module: &Value) {
        self.string(&[Seg::Key("module")], module, true);
        for key in map.keys().filter_map(Value::as_str) {
            if !MODULE_NODE_FIELDS.contains(&key) && super::NODE_FIELDS.contains(&key) {
                let message = format!(
                    "`{key}` cannot be set on a `module` node (set it on the module's nodes); \
                     a module node has: {}",
                    MODULE_NODE_FIELDS.join(", ")
                );
                self.error(&[Seg::Key(key)], message);
            }
        }
        let Some(params) = present(map, "params") else {
            return;
        };
        let Value::Mapping(params) = params else {
            let message = expected("a mapping of parameter names to values", params);
            return self.error(&[Seg::Key("params")], message);
        };
        for (key, value) in params {
            let Some(name) = key.as_str() else {
                let message = format!("parameter names must be strings, found {}", describe(key));
                self.error(&[Seg::Key("params")], message);
                continue;
            };
            let field = [Seg::Key("params"), Seg::Key(name)];
            if !is_param_name(name) {
                let message = format!(
                    "invalid parameter name `{name}`: letters, digits and `_` only \
                     (it becomes `$PARAM_{}`)",
                    name.to_ascii_uppercase()
                );
                self.error(&field, message);
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                self.error(&field, expected("a string, number or boolean", value));
            }
        }
    }

    /// `git` is a URL; `branch`/`tag`/`rev` need it and exclude each other. Values starting with
    /// `-` are refused: they would read as options of the `git` command line.
    fn check_git(&mut self, map: &Mapping) {
        let git = present(map, "git");
        if let Some(url) = git {
            self.git_word(&[Seg::Key("git")], url);
            let relative = url
                .as_str()
                .filter(|u| !u.starts_with('-') && is_relative_local(u));
            if let Some(url) = relative {
                let message = format!(
                    "`{url}` is a relative path: give a local repository as an absolute path or a \
                     `file://` URL (git would resolve it against changing directories)"
                );
                self.error(&[Seg::Key("git")], message);
            }
            if let Some(Value::String(path)) = present(map, "path") {
                if path.starts_with('/') {
                    let message = "must be relative to the git checkout when `git` is set".into();
                    self.error(&[Seg::Key("path")], message);
                }
            }
            self.check_git_distribution(map);
        }
        let refs: Vec<&str> = GIT_REF_FIELDS
            .iter()
            .copied()
            .filter(|name| present(map, name).is_some())
            .collect();
        for name in &refs {
            let field = [Seg::Key(name)];
            if let Some(value) = present(map, name) {
                self.git_word(&field, value);
            }
            if git.is_none() {
                self.error(&field, format!("`{name}` needs `git` (the repository)"));
            }
        }
        if let [_, rest @ ..] = refs.as_slice() {
            for name in rest {
                let message = format!(
                    "only one of `branch`, `tag` and `rev` may be set (found {})",
                    refs.iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.error(&[Seg::Key(name)], message);
            }
        }
    }

    /// A git node is built by its daemon (`distribute: local`, the default); copying a git node's
    /// binary from the CLI (`scp`, `http`) is not supported yet.
    fn check_git_distribution(&mut self, map: &Mapping) {
        for key in ["_unstable_deploy", "deploy"] {
            let Some(Value::Mapping(deploy)) = present(map, key) else {
                continue;
            };
            if let Some(Value::String(mode)) = present(deploy, "distribute") {
                if mode != "local" {
                    let field = [Seg::Key(key), Seg::Key("distribute")];
                    let message = format!(
                        "not supported by Adora yet: `distribute: {mode}` for a `git` node \
                         (use `local`: the node's daemon clones and builds it)"
                    );
                    self.error(&field, message);
                }
            }
        }
    }

    fn git_word(&mut self, field: &[Seg<'_>], value: &Value) {
        match value.as_str() {
            Some(s) if s.trim().is_empty() => self.error(field, "must not be empty".into()),
            Some(s) if s.starts_with('-') => {
                self.error(field, format!("`{s}` must not start with `-`"));
            }
            Some(s) if s.chars().any(char::is_control) => {
                self.error(field, "must not contain control characters".into());
            }
            Some(_) => {}
            // YAML reads a hash such as `2393211727e4` or `12345678` as a number.
            None if value.is_number() => {
                let hint = "a string (quote it: YAML reads `2393211727e4` as a number)";
                self.error(field, expected(hint, value));
            }
            None => self.error(field, expected("a string", value)),
        }
    }
}

/// A local path that is not absolute: not a URL (`scheme://`), not scp-like (`host:path`).
fn is_relative_local(url: &str) -> bool {
    let scp_like = url
        .find(':')
        .is_some_and(|colon| !url[..colon].contains('/'));
    !url.is_empty() && !url.starts_with('/') && !url.contains("://") && !scp_like
}

/// `[A-Za-z0-9_]+`: a name that can follow `$PARAM_` and `PARAM_` in an environment variable.
pub(crate) fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use crate::{
        descriptor::GitRef,
        validate::tests::{e, errors, parse_ok},
    };

    fn node(extra: &str) -> String {
        format!("nodes:\n  - id: a\n    path: bin/a\n{extra}")
    }

    #[test]
    fn git_with_one_reference() {
        let d = parse_ok(&node("    git: file:///srv/repo.git\n    tag: v1\n"));
        let source = d.nodes[0].git_source().expect("a git node");
        assert_eq!(source.url, "file:///srv/repo.git");
        assert_eq!(source.reference, GitRef::Tag("v1".into()));
        let d = parse_ok(&node("    git: /srv/repo\n"));
        let reference = d.nodes[0].git_source().map(|s| s.reference);
        assert_eq!(reference, Some(GitRef::DefaultBranch));
        assert_eq!(parse_ok(&node("")).nodes[0].git_source(), None);
    }

    #[test]
    fn a_local_repository_must_be_absolute() {
        for url in [
            "https://h/x.git",
            "file:///srv/x",
            "/srv/x",
            "git@host:x",
            "host:x",
        ] {
            parse_ok(&node(&format!("    git: {url}\n")));
        }
        assert_eq!(
            errors(&node("    git: ../repo\n")),
            [e(
                4,
                Some("a"),
                Some("git"),
                "`../repo` is a relative path: give a local repository as an absolute path or a \
                 `file://` URL (git would resolve it against changing directories)"
            )]
        );
    }

    #[test]
    fn a_rev_that_reads_as_a_number_says_to_quote_it() {
        assert_eq!(
            errors(&node(
                "    git: https://example.com/r.git\n    rev: 2393211727e4\n"
            )),
            [e(
                5,
                Some("a"),
                Some("rev"),
                "expected a string (quote it: YAML reads `2393211727e4` as a number), found a \
                 number (23932117270000.0)"
            )]
        );
    }

    #[test]
    fn git_field_errors() {
        assert_eq!(
            errors(&node(
                "    git: --upload-pack=x\n    branch: main\n    rev: ''\n    params: { a: 1 }\n"
            )),
            [
                e(
                    4,
                    Some("a"),
                    Some("git"),
                    "`--upload-pack=x` must not start with `-`"
                ),
                e(6, Some("a"), Some("rev"), "must not be empty"),
                e(
                    6,
                    Some("a"),
                    Some("rev"),
                    "only one of `branch`, `tag` and `rev` may be set (found `branch`, `rev`)"
                ),
                e(
                    7,
                    Some("a"),
                    Some("params"),
                    "`params` is only for `module` nodes"
                ),
            ]
        );
        assert_eq!(
            errors("nodes:\n  - id: a\n    path: /bin/a\n    git: git@host:x.git\n    _unstable_deploy: { distribute: scp }\n  - id: b\n    path: b\n    tag: v1\n"),
            [
                e(3, Some("a"), Some("path"), "must be relative to the git checkout when `git` is set"),
                e(5, Some("a"), Some("_unstable_deploy.distribute"), "not supported by Adora yet: `distribute: scp` for a `git` node (use `local`: the node's daemon clones and builds it)"),
                e(8, Some("b"), Some("tag"), "`tag` needs `git` (the repository)"),
            ]
        );
    }
}
