//! The sandbox's tests: the module cache, the pool slots, memory and time limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::ai::testing::{NoAi, ScriptedAi};
use crate::permissions::Grants;

const GUEST: &str = r#"(module
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "cached")
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (call $emit (i32.const 0) (i32.const 6)) i32.const 0))"#;

async fn run_once(sandbox: &Sandbox) -> String {
    let module = sandbox.load(GUEST.as_bytes()).expect("load");
    let (tx, mut rx) = mpsc::channel(4);
    let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi));
    sandbox.run(&module, &ctx, "{}", tx).await.expect("run");
    rx.recv().await.expect("output")
}

#[tokio::test]
async fn compiled_modules_are_cached_and_a_bad_entry_is_replaced() {
    let dir = std::env::temp_dir().join(format!(
        "aisa-cache-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let config = SandboxConfig {
        cache_dir: Some(dir.clone()),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::with_config(config.clone()).expect("sandbox");
    assert_eq!(run_once(&sandbox).await, "cached");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .flatten()
        .collect();
    assert_eq!(entries.len(), 1, "one compiled module cached");
    let cached = entries[0].path();
    assert!(cached.extension().is_some_and(|e| e == "cwasm"));

    // A second node process (a new engine) uses the cached code.
    let modified = std::fs::metadata(&cached)
        .expect("meta")
        .modified()
        .expect("mtime");
    let again = Sandbox::with_config(config.clone()).expect("sandbox");
    assert_eq!(run_once(&again).await, "cached");
    assert_eq!(
        std::fs::metadata(&cached)
            .expect("meta")
            .modified()
            .expect("mtime"),
        modified,
        "not rewritten"
    );

    // A damaged entry is recompiled and replaced, not trusted.
    std::fs::write(&cached, b"garbage").expect("damage");
    let fresh = Sandbox::with_config(config).expect("sandbox");
    assert_eq!(run_once(&fresh).await, "cached");
    assert_ne!(std::fs::read(&cached).expect("entry"), b"garbage");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A model that answers "x" after 30 ms, so that each action holds its instance.
fn slow_ai() -> ScriptedAi {
    ScriptedAi::new(&["x"]).after(Duration::from_millis(30))
}

const ASKS_THE_MODEL: &str = r#"(module
  (import "aisapp_v1" "ai_generate" (func $gen (param i32 i32) (result i32)))
  (import "aisapp_v1" "ai_next" (func $next (param i32 i32 i32) (result i32)))
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"prompt\":\"p\"}")
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32) (local $h i32) (local $n i32)
    (local.set $h (call $gen (i32.const 0) (i32.const 14)))
    (local.set $n (call $next (local.get $h) (i32.const 512) (i32.const 64)))
    (call $emit (i32.const 512) (local.get $n))
    i32.const 0))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_actions_than_pool_slots_wait_their_turn() {
    let sandbox = Sandbox::with_config(SandboxConfig {
        max_concurrent_actions: 2,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let module = sandbox.load(ASKS_THE_MODEL.as_bytes()).expect("load");
    let started = std::time::Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (sandbox, module) = (sandbox.clone(), module.clone());
        runs.spawn(async move {
            let (tx, mut rx) = mpsc::channel(4);
            let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(slow_ai()))
                .with_grants(Grants {
                    ai: true,
                    ..Grants::default()
                });
            sandbox.run(&module, &ctx, "{}", tx).await?;
            Ok::<_, ActionError>(rx.recv().await)
        });
    }
    while let Some(output) = runs.join_next().await {
        assert_eq!(
            output.expect("join").expect("every action runs").as_deref(),
            Some("x")
        );
    }
    // Six 30 ms actions through two slots take at least three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn per_action_memory_is_clamped_to_the_node_maximum() {
    let sandbox = Sandbox::with_config(SandboxConfig {
        max_memory_bytes: 1 << 20,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let grow = r#"(module
      (memory (export "memory") 1)
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32)
        (drop (memory.grow (i32.const 32))) i32.const 0))"#;
    let module = sandbox.load(grow.as_bytes()).expect("load");
    let (tx, _rx) = mpsc::channel(1);
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let ctx =
        ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi)).with_limits(limits);
    let err = sandbox
        .run(&module, &ctx, "{}", tx)
        .await
        .expect_err("2 MiB is over the 1 MiB node maximum");
    assert!(err.to_string().contains("memory"), "{err}");
}

#[tokio::test]
async fn a_loop_in_a_start_function_ends_with_the_time_limit() {
    let sandbox = Sandbox::new().expect("sandbox");
    let looping_start = r#"(module
      (memory (export "memory") 1)
      (func $forever (loop $l (br $l)))
      (start $forever)
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#;
    let module = sandbox.load(looping_start.as_bytes()).expect("load");
    let (tx, _rx) = mpsc::channel(1);
    let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi)).with_limits(
        Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let started = Instant::now();
    let err = sandbox
        .run(&module, &ctx, "{}", tx)
        .await
        .expect_err("stopped");
    assert!(matches!(err, ActionError::Timeout(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the mini-app ran out of time after 300 ms and was stopped"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "current_thread")]
async fn a_looping_guest_never_blocks_the_callers_thread() {
    // The caller's runtime has one thread; the guest loops on the guest pool, so a
    // timer on the caller's thread still fires on time.
    let sandbox = Sandbox::new().expect("sandbox");
    let module = sandbox
        .load(
            br#"(module (memory (export "memory") 1)
              (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
              (func (export "aisapp_run") (param i32 i32) (result i32) (loop $l (br $l)) i32.const 0))"#,
        )
        .expect("load");
    let (tx, _rx) = mpsc::channel(1);
    let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi)).with_limits(
        Limits {
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    );
    let run = sandbox.run(&module, &ctx, "{}", tx);
    tokio::pin!(run);
    let started = Instant::now();
    tokio::select! {
        _ = &mut run => panic!("the loop cannot finish first"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the caller's timer fired while the guest looped: {:?}",
        started.elapsed()
    );
    // Leaving the test drops the run, which stops the guest within a tick.
}

#[test]
fn a_planted_cache_entry_is_never_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyed = |key| {
        Sandbox::with_config(SandboxConfig {
            cache_dir: Some(dir.path().to_owned()),
            cache_key: Some(key),
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    };
    let mine = keyed([1; 32]);
    mine.load(GUEST.as_bytes()).expect("compiles and caches");
    let entry = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .next()
        .expect("an entry")
        .path();
    let sealed = std::fs::read(&entry).expect("entry");
    let code = mine
        .open_cache_entry(&sealed)
        .expect("my own entry verifies");
    // Someone else's key (or no key) does not verify it, and a changed byte fails.
    let other = keyed([2; 32]);
    assert!(other.open_cache_entry(&sealed).is_none());
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(mine.open_cache_entry(&tampered).is_none());
    assert!(mine.open_cache_entry(&sealed[..10]).is_none());
    // A planted file of bare compiled code (no valid tag) is replaced, not loaded.
    std::fs::write(&entry, code).expect("plant");
    mine.load(GUEST.as_bytes()).expect("recompiled");
    let replaced = std::fs::read(&entry).expect("entry");
    assert!(
        mine.open_cache_entry(&replaced).is_some(),
        "the planted entry was replaced by a sealed one"
    );
}
