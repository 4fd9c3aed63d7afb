//! Renamed environment variables: the real `desktop-node` binary takes
//! its home folder from `AISA_NODE_HOME`, and still from the old `DESKTOP_NODE_HOME`
//! with a one-line warning naming the new variable. (The only test that uses the old
//! name.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const NODE: &str = env!("CARGO_BIN_EXE_desktop-node");

/// `desktop-node keys list` on the file backend, with only these home variables set.
fn keys_list(vars: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(NODE);
    cmd.args(["keys", "list"])
        .env("AISA_SECRETS_BACKEND", "file")
        .env("AISA_PASSPHRASE", "renamed env test")
        .env_remove("AISA_PASSPHRASE_FILE")
        .env_remove("AISA_NODE_HOME")
        .env_remove("DESKTOP_NODE_HOME");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

#[test]
fn the_old_home_variable_still_works_and_warns_naming_the_new_one() {
    let old = tempfile::tempdir().unwrap();
    let out = keys_list(&[("DESKTOP_NODE_HOME", old.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("DESKTOP_NODE_HOME is deprecated; set AISA_NODE_HOME instead"),
        "{stderr}"
    );
    assert!(
        old.path().join("secrets.enc").exists(),
        "the old name's folder is the home"
    );
}

#[test]
fn the_new_home_variable_wins_without_a_warning() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    let out = keys_list(&[
        ("AISA_NODE_HOME", new.path()),
        ("DESKTOP_NODE_HOME", old.path()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("deprecated"), "{stderr}");
    assert!(new.path().join("secrets.enc").exists());
    assert!(!old.path().join("secrets.enc").exists());
}
