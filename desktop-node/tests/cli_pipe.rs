//! A command whose reader goes away early ends quietly, as Unix tools do: no panic on
//! "Broken pipe" (`desktop-node version | grep -q …` in scripts).

#![cfg(unix)]

use std::process::{Command, Stdio};

#[test]
fn version_into_a_closed_pipe_ends_without_a_panic() {
    let exe = env!("CARGO_BIN_EXE_desktop-node");
    let home = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let mut child = Command::new(exe)
            .args(["--home", home.path().to_str().unwrap(), "version"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the node has started, so its print meets a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "status {:?}, stderr:\n{stderr}",
            out.status
        );
        // Ended by SIGPIPE (13) or, had the print been early enough, successfully.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{:?}",
            out.status
        );
    }
}
