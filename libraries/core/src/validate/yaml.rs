//! The one way YAML text from outside becomes a [`Value`]: refused in linear time when its flow
//! collections (`[`, `{`) nest deeper than [`MAX_FLOW_DEPTH`], before the YAML parser sees it.
//! The parser (libyaml's scanner) spends time quadratic in that depth before it reports its own
//! recursion limit: 200 KB of `[` took ~40 s, 20 000 nested `{a: ` 4 s.

use serde_yaml::Value;

/// Deepest nesting of flow collections accepted; the YAML parser's own recursion limit is 128,
/// so nothing it could read is refused here.
pub(crate) const MAX_FLOW_DEPTH: usize = 128;

/// Parses `text`; `Err((line, message))` for text that is too deep or not valid YAML.
pub(crate) fn parse_value(text: &str) -> Result<Value, (Option<usize>, String)> {
    if let Some((line, column)) = too_deep(text) {
        return Err((
            Some(line),
            format!(
                "invalid YAML: `[` / `{{` nested more than {MAX_FLOW_DEPTH} levels deep (line {line}, column {column})"
            ),
        ));
    }
    serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        (line, format!("invalid YAML: {e}"))
    })
}

/// Where the flow nesting of `text` first exceeds [`MAX_FLOW_DEPTH`] (line, column; 1-based),
/// in one pass. Brackets in quoted strings and comments do not count; the scan is conservative
/// (it may count a bracket of a plain scalar, never skips one the parser would nest).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    // Whether the previous character lets a quote or a comment start here.
    let mut at_boundary = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            if quote.is_none() {
                at_boundary = true;
            }
            continue;
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            match c {
                '\\' if q == '"' && !escaped => escaped = true,
                // `''` is a quote inside a single-quoted string.
                '\'' if q == '\'' && chars.peek() == Some(&'\'') => {
                    chars.next();
                    column += 1;
                }
                _ if c == q && !escaped => quote = None,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '#' if at_boundary => comment = true,
            '"' | '\'' if at_boundary => quote = Some(c),
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some((line, column));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at_boundary = c.is_whitespace() || matches!(c, '[' | '{' | ',' | ':' | '-');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_with_its_place_and_shallow_text_parses() {
        let deep = format!("nodes: {}", "[".repeat(200_000));
        let started = std::time::Instant::now();
        let (line, message) = parse_value(&deep).expect_err("too deep");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "not linear"
        );
        assert_eq!(line, Some(1));
        assert_eq!(
            message,
            "invalid YAML: `[` / `{` nested more than 128 levels deep (line 1, column 136)"
        );
        let maps = format!("a:\n  b: {}", "{x: ".repeat(129));
        assert_eq!(parse_value(&maps).expect_err("too deep").0, Some(2));
        let fine = format!("a: {}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_value(&fine).is_ok());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let many = "[".repeat(300);
        for text in [
            format!("a: \"{many}\""),
            format!("a: '{many}'"),
            format!("a: 1 # {many}"),
            format!("a: \"\\\" {many}\""),
            format!("a: 'it''s {many}'"),
        ] {
            assert!(too_deep(&text).is_none(), "{text}");
        }
        // A `#` inside a word is not a comment; a quote inside a word is not a string.
        assert!(too_deep(&format!("a: x#{many}")).is_some());
        assert!(too_deep(&format!("a: it's {many}")).is_some());
    }
}
