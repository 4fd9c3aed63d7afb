//! Helpers shared by the tests that drive the real `desktop-node` binary.

#![allow(clippy::unwrap_used, dead_code)] // test support: a failure is reported by its panic

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `desktop-node` binary under test.
pub const NODE: &str = env!("CARGO_BIN_EXE_desktop-node");

/// `desktop-node --home HOME` with the secret backend `backend` and the file backend's
/// `passphrase`, and no provider key or home folder from the test runner's environment.
pub fn node_cmd(home: &Path, backend: &str, passphrase: &str) -> Command {
    let mut cmd = Command::new(NODE);
    cmd.arg("--home")
        .arg(home)
        .env("AISA_SECRETS_BACKEND", backend)
        .env("AISA_PASSPHRASE", passphrase)
        .env_remove("OPENAI_API_KEY")
        .env_remove("AISA_NODE_HOME");
    cmd
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs `cmd` to its end with `stdin` as its input; returns stdout and stderr together,
/// and fails the test when it did not succeed.
pub fn run_to_end(mut cmd: Command, stdin: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
