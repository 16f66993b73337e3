//! Shell quoting for the few remote commands that need a shell (redirections, `&&`): every value
//! goes through [`quote`]; a configuration string is never pasted into a shell line as is.

use std::borrow::Cow;

/// Quotes one word for a POSIX shell.
pub fn quote(word: &str) -> String {
    shell_escape::unix::escape(Cow::Borrowed(word)).into_owned()
}

/// Joins quoted words into a command line.
pub fn line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path for the remote shell: a leading `~/` becomes `"$HOME"/` (expanded by the shell, the rest
/// quoted); anything else is quoted whole.
pub fn path(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None if p == "~" => "\"$HOME\"".to_owned(),
        None => quote(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_a_shell_would_interpret() {
        assert_eq!(quote("plain-value_1.2"), "plain-value_1.2");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            line(&["adora", "daemon", "--labels", "k=v w"]),
            "adora daemon --labels 'k=v w'"
        );
        assert_eq!(path("~/.local/state/adora"), "\"$HOME\"/.local/state/adora");
        assert_eq!(path("/opt/x y"), "'/opt/x y'");
        assert_eq!(path("~/a;b"), "\"$HOME\"/'a;b'");
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let nasty = ["a b", "$HOME", "`id`", "it's", "*", "\"q\"", "new\nline"];
        let script = format!("printf '%s\\n' {}", line(&nasty));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh runs");
        let printed = String::from_utf8(out.stdout).expect("utf8");
        assert_eq!(
            printed,
            nasty.iter().map(|w| format!("{w}\n")).collect::<String>()
        );
    }
}
