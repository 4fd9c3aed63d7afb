//! The `file` secret backend never keeps its only key in the kernel
//! keychain (which forgets it at a reboot). The real `desktop-node` binary asks for a
//! passphrase on a terminal, takes one from `AISA_PASSPHRASE` or a passphrase file, and
//! refuses, saying how to give one, when it can do neither.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const NODE: &str = env!("CARGO_BIN_EXE_desktop-node");
const KEY: &str = "sk-passphrase-test-0123456789abcdef";

/// `desktop-node --home HOME ARGS` with the file backend and no passphrase from the
/// environment of the test runner.
fn node(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(NODE);
    cmd.arg("--home")
        .arg(home)
        .args(args)
        .env("AISA_SECRETS_BACKEND", "file")
        .env("RUST_BACKTRACE", "0")
        .env_remove("AISA_PASSPHRASE")
        .env_remove("AISA_PASSPHRASE_FILE")
        .env_remove("AISA_NODE_HOME");
    cmd
}

/// Runs `cmd` with `stdin` piped in (not a terminal).
fn run_piped(mut cmd: Command, stdin: &str) -> Output {
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
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The key source recorded in `secrets.enc`.
fn key_source(home: &Path) -> serde_json::Value {
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("secrets.enc")).unwrap()).unwrap();
    file["key"].clone()
}

#[test]
fn without_a_terminal_or_a_given_passphrase_the_file_store_refuses_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = run_piped(
        node(home.path(), &["keys", "set", "openai", "--stdin"]),
        KEY,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("needs a passphrase"), "{said}");
    assert!(
        said.contains("AISA_PASSPHRASE_FILE") && said.contains("terminal"),
        "{said}"
    );
    // Nothing was sealed, under a keychain key or otherwise.
    assert!(!home.path().join("secrets.enc").exists());
}

#[test]
fn a_passphrase_file_or_the_environment_seals_the_store_under_argon2id() {
    let home = tempfile::tempdir().unwrap();
    let pass_file = home.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery staple\n").unwrap();
    let with_file = |args: &[&str], file: &Path| {
        let mut cmd = node(home.path(), args);
        cmd.env("AISA_PASSPHRASE_FILE", file);
        cmd
    };
    let out = run_piped(
        with_file(&["keys", "set", "openai", "--stdin"], &pass_file),
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        key_source(home.path()).get("argon2id").is_some(),
        "{}",
        key_source(home.path())
    );
    let out = run_piped(with_file(&["keys", "list"], &pass_file), "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("openai\tsk-…cdef"), "{}", text(&out));
    // The same passphrase from the environment opens it too.
    let mut cmd = node(home.path(), &["keys", "list"]);
    cmd.env("AISA_PASSPHRASE", "correct horse battery staple");
    let out = run_piped(cmd, "");
    assert!(text(&out).contains("openai\tsk-…cdef"), "{}", text(&out));
    // A wrong one does not; an empty file is refused with its name.
    let wrong = home.path().join("wrong");
    std::fs::write(&wrong, "incorrect\n").unwrap();
    let out = run_piped(with_file(&["keys", "list"], &wrong), "");
    assert!(!out.status.success());
    assert!(text(&out).contains("does not open"), "{}", text(&out));
    let empty = home.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = run_piped(with_file(&["keys", "list"], &empty), "");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("first line is empty") && text(&out).contains("empty"),
        "{}",
        text(&out)
    );
    // Without any of them, and no terminal: refused, not opened some other way.
    let out = run_piped(node(home.path(), &["keys", "list"]), "");
    assert!(!out.status.success());
    assert!(text(&out).contains("needs a passphrase"), "{}", text(&out));
}

/// Runs `args` under a pseudo-terminal (`script`), typing `lines` one by one.
fn run_on_a_terminal(home: &Path, args: &str, lines: &[&str]) -> Option<Output> {
    if Command::new("script").arg("--version").output().is_err() {
        return None;
    }
    let command = format!("{NODE} --home {} {args}", home.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &command, "/dev/null"])
        .env("AISA_SECRETS_BACKEND", "file")
        .env("RUST_BACKTRACE", "0")
        .env_remove("AISA_PASSPHRASE")
        .env_remove("AISA_PASSPHRASE_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    let typist = std::thread::spawn(move || {
        for line in lines {
            // Each prompt turns echo off before it reads; give it time to.
            std::thread::sleep(Duration::from_millis(700));
            stdin.write_all(line.as_bytes()).unwrap();
            stdin.flush().unwrap();
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let output = child.wait_with_output().unwrap();
    typist.join().unwrap();
    Some(output)
}

#[test]
fn on_a_terminal_the_passphrase_is_asked_twice_for_a_new_store_and_once_after() {
    let home = tempfile::tempdir().unwrap();
    let Some(out) = run_on_a_terminal(
        home.path(),
        "keys set openai",
        &[KEY, "typed passphrase", "typed passphrase"],
    ) else {
        eprintln!("no `script` here to make a terminal; skipped");
        return;
    };
    let said = text(&out);
    assert!(said.contains("Passphrase for the node's secrets"), "{said}");
    assert!(said.contains("Same passphrase again"), "{said}");
    assert!(said.contains("stored the openai key"), "{said}");
    assert!(!said.contains("typed passphrase"), "no echo: {said}");
    assert!(key_source(home.path()).get("argon2id").is_some());
    let out = run_on_a_terminal(home.path(), "keys list", &["typed passphrase"]).unwrap();
    assert!(text(&out).contains("openai\tsk-…cdef"), "{}", text(&out));
    // The passphrase typed on the terminal is the one the file opens with.
    let mut cmd = node(home.path(), &["keys", "list"]);
    cmd.env("AISA_PASSPHRASE", "typed passphrase");
    let out = run_piped(cmd, "");
    assert!(text(&out).contains("openai\tsk-…cdef"), "{}", text(&out));
}
