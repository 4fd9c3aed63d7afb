//! The binary's environment variables: `AISA_RELAY_*`, with the old `RELAY_*` names still
//! accepted and a one-line deprecation warning naming the new variable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::process::Command;

/// `relay-edge migrate` with only `vars` set among the relay's variables; returns
/// (success, stdout + stderr).
fn migrate(vars: &[(&str, &std::path::Path)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-edge"));
    command.arg("migrate").env("RUST_LOG", "warn");
    for (name, _) in aisa_relay::config::RENAMED_ENV {
        command.env_remove(name);
    }
    for (_, old) in aisa_relay::config::RENAMED_ENV {
        command.env_remove(old);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("relay-edge runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn the_old_data_dir_variable_still_works_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = migrate(&[("RELAY_DATA_DIR", dir.path())]);
    assert!(ok, "{out}");
    assert!(
        dir.path().join("relay.db").exists(),
        "the database went where RELAY_DATA_DIR says: {out}"
    );
    assert!(
        out.contains("RELAY_DATA_DIR is deprecated; set AISA_RELAY_DATA_DIR instead"),
        "{out}"
    );
}

#[test]
fn the_new_data_dir_variable_wins_without_a_warning() {
    let new = tempfile::tempdir().unwrap();
    let (ok, out) = migrate(&[("AISA_RELAY_DATA_DIR", new.path())]);
    assert!(ok, "{out}");
    assert!(new.path().join("relay.db").exists(), "{out}");
    assert!(!out.contains("deprecated"), "{out}");

    let old = tempfile::tempdir().unwrap();
    let newer = tempfile::tempdir().unwrap();
    let (ok, out) = migrate(&[
        ("AISA_RELAY_DATA_DIR", newer.path()),
        ("RELAY_DATA_DIR", old.path()),
    ]);
    assert!(ok, "{out}");
    assert!(newer.path().join("relay.db").exists(), "{out}");
    assert!(!old.path().join("relay.db").exists(), "{out}");
    assert!(
        out.contains("RELAY_DATA_DIR is deprecated and ignored"),
        "{out}"
    );
}
