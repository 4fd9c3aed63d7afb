//! JavaScript mini-apps precompiled to QuickJS bytecode (`js_apps::precompile`): the
//! real runtime guest compiles an app's sources once, the bytecode is cached beside the
//! compiled modules and authenticated like them, and actions run from it with the same
//! results (and the same errors) as from the sources. Also the pre-initialized runtime
//! (`js_apps::load_runtime` with a cache directory): its memory image is cached and
//! authenticated too, and every action still starts from a fresh instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aisa_node::ai::AiProvider;
use aisa_node::js_apps::{self, JsSources, Precompiled};
use aisa_node::permissions::Grants;
use aisa_node::sandbox::{ActionContext, ActionError, LoadedModule, Sandbox, SandboxConfig};
use aisa_testkit::fakes::ScriptedAi;
use tokio::sync::mpsc;

/// A sandbox whose cache is `dir`, sealed under `key`, with the runtime loaded. The
/// runtime's compiled code and its pre-initialized image (seconds to make in a debug
/// build) come from a shared cache under `target/` for that key, copied into `dir`.
fn sandbox_with(dir: &Path, key: u8) -> (Sandbox, LoadedModule) {
    let shared =
        aisa_testkit::guest::workspace_root().join(format!("target/guest/compiled-key{key}"));
    let config = |cache: &Path| SandboxConfig {
        cache_dir: Some(cache.to_owned()),
        cache_key: Some([key; 32]),
        ..SandboxConfig::default()
    };
    let warm = Sandbox::with_config(config(&shared)).expect("sandbox");
    js_apps::load_runtime(&warm, aisa_testkit::guest::js_runtime_wasm()).expect("runtime");
    std::fs::create_dir_all(dir).expect("cache dir");
    for entry in std::fs::read_dir(&shared).expect("shared cache").flatten() {
        if entry.path().extension().is_some_and(|e| e != "qjsbc") {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
    }
    let sandbox = Sandbox::with_config(config(dir)).expect("sandbox");
    let module =
        js_apps::load_runtime(&sandbox, aisa_testkit::guest::js_runtime_wasm()).expect("runtime");
    (sandbox, module)
}

fn keyed_sandbox(dir: &Path) -> (Sandbox, LoadedModule) {
    sandbox_with(dir, 7)
}

fn seo_writer() -> JsSources {
    JsSources::read(&aisa_testkit::guest::workspace_root().join("examples/seo-writer"))
        .expect("examples/seo-writer")
}

fn bytecode_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "qjsbc"))
        .collect()
}

/// Runs `action` and returns its chunks and how it ended.
async fn run(
    sandbox: &Sandbox,
    module: &LoadedModule,
    sources: &JsSources,
    action: &str,
    payload: serde_json::Value,
) -> (String, Result<(), ActionError>) {
    let ai: Arc<dyn AiProvider> = Arc::new(ScriptedAi::new(&["Espresso ", "at home."]));
    let home = tempfile::tempdir().expect("home");
    let ctx = ActionContext::new("js-bytecode", "0.1.0", home.path(), ai).with_grants(Grants {
        ai: true,
        ..Grants::default()
    });
    let input = js_apps::action_input(action, &payload, sources);
    let (tx, mut rx) = mpsc::channel::<String>(16);
    let collect = async {
        let mut text = String::new();
        while let Some(chunk) = rx.recv().await {
            text.push_str(&chunk);
        }
        text
    };
    let (result, text) = tokio::join!(sandbox.run(module, &ctx, &input, tx), collect);
    (text, result)
}

fn seo_payload() -> serde_json::Value {
    serde_json::json!({"topic": "home espresso", "keywords": ["grinder"], "tone": "friendly"})
}

#[tokio::test(flavor = "multi_thread")]
async fn bytecode_is_compiled_once_cached_and_runs_like_the_sources() {
    let dir = tempfile::tempdir().expect("cache");
    let (sandbox, module) = keyed_sandbox(dir.path());
    let plain = seo_writer();

    let mut compiled = seo_writer();
    let first = tokio::task::block_in_place(|| {
        js_apps::precompile(&sandbox, &module, "js-bytecode", &mut compiled)
    });
    assert!(matches!(first, Precompiled::Compiled), "{first:?}");
    assert!(compiled.bytecode.is_some());
    assert_eq!(
        bytecode_entries(dir.path()).len(),
        1,
        "one bytecode entry cached"
    );
    let input = js_apps::action_input("write", &seo_payload(), &compiled);
    assert!(input.contains("\"bytecode\"") && !input.contains("\"sources\""));

    // A node starting again (a new sandbox on the same cache) takes it from the cache.
    let (again, module_again) = keyed_sandbox(dir.path());
    let mut cached = seo_writer();
    let second = tokio::task::block_in_place(|| {
        js_apps::precompile(&again, &module_again, "js-bytecode", &mut cached)
    });
    assert!(matches!(second, Precompiled::Cached), "{second:?}");
    assert_eq!(cached.bytecode, compiled.bytecode);

    let (from_sources, result) = run(&sandbox, &module, &plain, "write", seo_payload()).await;
    result.expect("runs from sources");
    let (from_bytecode, result) = run(&again, &module_again, &cached, "write", seo_payload()).await;
    result.expect("runs from bytecode");
    assert_eq!(from_bytecode, from_sources);
    assert!(from_bytecode.contains("Espresso"), "{from_bytecode}");

    // Other sources are another entry.
    let mut edited = seo_writer();
    edited.bot_logic.push_str("\n// edited\n");
    let third = tokio::task::block_in_place(|| {
        js_apps::precompile(&again, &module_again, "js-bytecode", &mut edited)
    });
    assert!(matches!(third, Precompiled::Compiled), "{third:?}");
    assert_eq!(bytecode_entries(dir.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_bytecode_entry_is_refused_and_compiled_again() {
    let dir = tempfile::tempdir().expect("cache");
    let (sandbox, module) = keyed_sandbox(dir.path());
    let mut sources = seo_writer();
    let made = tokio::task::block_in_place(|| {
        js_apps::precompile(&sandbox, &module, "js-bytecode", &mut sources)
    });
    assert!(matches!(made, Precompiled::Compiled), "{made:?}");
    let good = sources.bytecode.clone().expect("bytecode");
    let entry = bytecode_entries(dir.path()).pop().expect("entry");

    // Change one byte of the bytecode (not the tag): the tag no longer verifies.
    let mut bytes = std::fs::read(&entry).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&entry, &bytes).expect("tamper");
    let mut again = seo_writer();
    let redone = tokio::task::block_in_place(|| {
        js_apps::precompile(&sandbox, &module, "js-bytecode", &mut again)
    });
    assert!(
        matches!(redone, Precompiled::Compiled),
        "a tampered entry is never used: {redone:?}"
    );
    assert_eq!(again.bytecode.as_ref(), Some(&good));
    assert_ne!(
        std::fs::read(&entry).expect("read"),
        bytes,
        "entry rewritten"
    );

    // A well-formed entry sealed under another key (another node's) is refused too.
    let other_dir = tempfile::tempdir().expect("cache");
    let (other, other_module) = sandbox_with(other_dir.path(), 9);
    let mut theirs = seo_writer();
    tokio::task::block_in_place(|| {
        js_apps::precompile(&other, &other_module, "js-bytecode", &mut theirs)
    });
    let foreign = bytecode_entries(other_dir.path()).pop().expect("entry");
    std::fs::copy(&foreign, &entry).expect("plant");
    let mut planted = seo_writer();
    let refused = tokio::task::block_in_place(|| {
        js_apps::precompile(&sandbox, &module, "js-bytecode", &mut planted)
    });
    assert!(matches!(refused, Precompiled::Compiled), "{refused:?}");

    let (text, result) = run(&sandbox, &module, &planted, "write", seo_payload()).await;
    result.expect("runs");
    assert!(text.contains("Espresso"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_does_not_compile_reports_the_same_error_as_before() {
    let dir = tempfile::tempdir().expect("cache");
    let (sandbox, module) = keyed_sandbox(dir.path());
    let broken = JsSources {
        bot_logic: "export function write(payload, context) {\n  context.emit('a'\n}\n".into(),
        tools: None,
        bytecode: None,
    };
    let mut precompiled = broken.clone();
    let outcome = tokio::task::block_in_place(|| {
        js_apps::precompile(&sandbox, &module, "js-bytecode", &mut precompiled)
    });
    let Precompiled::Failed(err) = outcome else {
        panic!("a syntax error does not compile: {outcome:?}")
    };
    assert!(err.to_string().contains("SyntaxError"), "{err}");
    assert!(
        precompiled.bytecode.is_none(),
        "it keeps running its sources"
    );
    assert!(bytecode_entries(dir.path()).is_empty(), "nothing cached");

    let (_, before) = run(&sandbox, &module, &broken, "write", seo_payload()).await;
    let (_, after) = run(&sandbox, &module, &precompiled, "write", seo_payload()).await;
    let (before, after) = (
        before.expect_err("fails").to_string(),
        after.expect_err("fails").to_string(),
    );
    assert_eq!(after, before);
    assert!(
        after.contains("SyntaxError") && after.contains("bot-logic.js"),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_imports_and_missing_actions_read_the_same_from_bytecode() {
    let dir = tempfile::tempdir().expect("cache");
    let (sandbox, module) = keyed_sandbox(dir.path());
    let cases = [
        (
            "export function boom() { throw new TypeError('bad input'); }",
            None,
            "boom",
        ),
        ("export function other() {}", None, "missing"),
        (
            "import { x } from './elsewhere.js'; export function a() {}",
            None,
            "a",
        ),
        (
            "import { unit } from './tools.js'; export function a(p, c) { c.emit(unit()); }",
            Some("export function unit() { return 'from tools'; }"),
            "a",
        ),
    ];
    for (logic, tools, action) in cases {
        let plain = JsSources {
            bot_logic: logic.into(),
            tools: tools.map(str::to_owned),
            bytecode: None,
        };
        let mut compiled = plain.clone();
        let outcome = tokio::task::block_in_place(|| {
            js_apps::precompile(&sandbox, &module, "js-bytecode", &mut compiled)
        });
        // QuickJS resolves imports when it parses a module: a refused import does not
        // compile, so that app runs from its sources and reports what it always did.
        let refused_import = logic.contains("elsewhere");
        assert_eq!(
            matches!(outcome, Precompiled::Compiled),
            !refused_import,
            "{logic}: {outcome:?}"
        );
        assert_eq!(compiled.bytecode.is_some(), !refused_import);
        let (text_a, a) = run(&sandbox, &module, &plain, action, serde_json::json!({})).await;
        let (text_b, b) = run(&sandbox, &module, &compiled, action, serde_json::json!({})).await;
        assert_eq!(text_b, text_a, "{logic}");
        assert_eq!(
            b.map_err(|e| e.to_string()),
            a.map_err(|e| e.to_string()),
            "{logic}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pre_initialized_runtime_is_cached_sealed_and_fresh_per_action() {
    let dir = tempfile::tempdir().expect("cache");
    let (sandbox, module) = keyed_sandbox(dir.path());
    let image = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".init.wasm"))
        .expect("the pre-initialized image is cached");

    // Module state never leaks from one action to the next: each starts from the image.
    let counter = JsSources {
        bot_logic: "globalThis.n = (globalThis.n || 0) + 1;
            export function count(p, c) { c.emit(String(globalThis.n)); console.log('x'); }"
            .into(),
        tools: None,
        bytecode: None,
    };
    for _ in 0..3 {
        let (text, result) = run(&sandbox, &module, &counter, "count", serde_json::json!({})).await;
        result.expect("runs");
        assert_eq!(text, "1");
    }

    // A damaged image is refused (its tag no longer verifies) and made again.
    let mut bytes = std::fs::read(&image).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&image, &bytes).expect("tamper");
    let again = Sandbox::with_config(SandboxConfig {
        cache_dir: Some(dir.path().to_owned()),
        cache_key: Some([7; 32]),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let module = tokio::task::block_in_place(|| {
        js_apps::load_runtime(&again, aisa_testkit::guest::js_runtime_wasm())
    })
    .expect("runtime");
    assert_ne!(
        std::fs::read(&image).expect("read"),
        bytes,
        "image made again"
    );
    let (text, result) = run(&again, &module, &counter, "count", serde_json::json!({})).await;
    result.expect("runs");
    assert_eq!(text, "1");
}
