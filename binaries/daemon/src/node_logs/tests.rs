use super::*;

#[test]
fn levels_are_read_from_text_lines() {
    for (line, level) in [
        ("plain output", LogLevel::Stdout),
        ("INFO starting", LogLevel::Info),
        (
            "2026-01-01T00:00:00Z  WARN camera: slow frame",
            LogLevel::Warn,
        ),
        ("[ERROR] it broke", LogLevel::Error),
        ("WARNING:root:python says", LogLevel::Warn),
        ("a b c debug too far", LogLevel::Stdout),
    ] {
        assert_eq!(classify(line).level, level, "{line}");
    }
}

#[test]
fn json_lines_become_entries_with_message_target_and_fields() {
    let entry = classify(
        r#"{"timestamp":"x","level":"INFO","fields":{"message":"hello","n":3},"target":"cam"}"#,
    );
    assert_eq!(entry.level, LogLevel::Info);
    assert_eq!(entry.message, "hello");
    assert_eq!(entry.target.as_deref(), Some("cam"));
    assert_eq!(entry.fields.get("n"), Some(&Value::from(3)));
    // Without a level, a JSON line is plain output.
    assert_eq!(classify(r#"{"a":1}"#).level, LogLevel::Stdout);
    let json = entry_json(&entry, "camera", SystemTime::UNIX_EPOCH);
    assert_eq!(
        json,
        r#"{"timestamp":"1970-01-01T00:00:00.000Z","level":"info","node_id":"camera","message":"hello","target":"cam","fields":{"n":3}}"#
    );
}

#[tokio::test]
async fn the_log_file_rotates_and_keeps_max_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.txt");
    let policy = LogPolicy {
        min_level: LogLevel::Stdout,
        stdout_as: None,
        logs_as: None,
        max_size: Some(10),
        max_rotated: 2,
    };
    let mut file = LogFile::new(path.clone(), &policy);
    for line in ["aaaa", "bbbb", "cccc", "dddd", "eeee"] {
        file.write_line(line).await;
    }
    file.flush().await;
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert_eq!(read("n.txt"), "eeee\n");
    assert_eq!(read("n.txt.1"), "cccc\ndddd\n");
    assert_eq!(read("n.txt.2"), "aaaa\nbbbb\n");
    assert!(!dir.path().join("n.txt.3").exists());
}
