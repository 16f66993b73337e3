//! Runs remote scripts locally in tests: `sh -c` with input on stdin and extra environment.

use std::{io::Write as _, process::Stdio};

/// Runs `script` with `sh -c`, feeding `stdin` and setting `env`; returns its output.
pub(crate) fn run_sh(script: &str, stdin: &[u8], env: &[(&str, String)]) -> std::process::Output {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let mut pipe = child.stdin.take().expect("piped");
    pipe.write_all(stdin).expect("stdin");
    drop(pipe);
    child.wait_with_output().expect("script ends")
}

/// Spawns `cmd` whose program the test has just written. Another test thread forking meanwhile
/// may still hold the file open for writing in its child for an instant, and `exec` then fails
/// with `ETXTBSY` ("Text file busy"): retried a few times, briefly.
pub(crate) fn spawn_fresh_executable(cmd: &mut std::process::Command) -> std::process::Child {
    const ATTEMPTS: usize = 50;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
    for _ in 1..ATTEMPTS {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(PAUSE)
            }
            result => return result.expect("spawn"),
        }
    }
    cmd.spawn().expect("spawn")
}
