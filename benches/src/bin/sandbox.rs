//! The desktop node's sandbox alone: from asking for an action to its first output
//! chunk, with a fresh wasmtime instance every time (pooling allocator, pre-linked
//! module), one at a time, 8 and 80 at once.
//!
//! ```text
//! cargo run --release -p aisa-benches --bin sandbox
//! ```
//!
//! Then JavaScript mini-apps: the QuickJS runtime guest (`runtimes/js`) with a JS app's
//! sources in its input, a fresh instance (and so a fresh QuickJS runtime, context and
//! module evaluation) per action, with the compiled runtime taken from a warm
//! compiled-module cache: each app from its sources, then from the QuickJS bytecode
//! `js_apps::precompile` made at load. A first row measures the instance alone (an
//! input the runtime refuses before QuickJS starts), to split where the time goes.
//!
//! With `AISA_BENCH_JSON=FILE` every figure is also appended to FILE as a JSON line
//! (`benches/run-all` uses it).

use std::sync::Arc;
use std::time::Instant;

use aisa_benches::percentile;
use aisa_benches::report::Figure;
use aisa_node::ai::AiProvider;
use aisa_node::js_apps::{self, JsSources};
use aisa_node::permissions::Grants;
use aisa_node::sandbox::{ActionContext, Sandbox, SandboxConfig};
use aisa_testkit::fakes::{NoAi, ScriptedAi};
use tokio::sync::mpsc;

const ROUNDS: usize = 20_000;
/// How many actions run at once in the concurrency rows.
const CONCURRENT: [usize; 2] = [8, 80];

/// The smallest useful guest: emits one chunk.
const EMIT_ONE: &str = r#"(module
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hi")
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (call $emit (i32.const 0) (i32.const 2)) i32.const 0))"#;

/// A model that answers at once, a word per chunk (for the JS example that asks it).
fn instant_ai() -> ScriptedAi {
    ScriptedAi::new(&[
        "Espresso ",
        "at ",
        "home ",
        "starts ",
        "with ",
        "the ",
        "grinder.",
    ])
}

const JS_ROUNDS: usize = 2_000;

#[tokio::main]
async fn main() {
    let sandbox = Sandbox::new().expect("sandbox");
    let hello = std::fs::read(aisa_testkit::guest::hello_ai_wasm()).expect("hello_ai.wasm");
    let ai: Arc<dyn AiProvider> = Arc::new(NoAi);
    let home = std::env::temp_dir().join("aisa-sandbox-bench");
    let ctx = ActionContext::new("bench", "0.1.0", home, ai);
    for (label, key, code, input) in [
        (
            "minimal WAT guest",
            "wat",
            EMIT_ONE.as_bytes(),
            "{}".to_owned(),
        ),
        (
            "hello-ai (Rust, serde_json) echo",
            "hello-ai echo",
            &hello[..],
            r#"{"action":"echo","payload":{"text":"hi"}}"#.to_owned(),
        ),
    ] {
        let module = sandbox.load(code).expect("load");
        let mut samples = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS + 1000 {
            let (tx, mut rx) = mpsc::channel(4);
            let started = Instant::now();
            let run = sandbox.run(&module, &ctx, &input, tx);
            let first = async {
                rx.recv().await.expect("a chunk");
                started.elapsed()
            };
            let (result, first) = tokio::join!(run, first);
            result.expect("run");
            if round >= 1000 {
                samples.push(first.as_secs_f64() * 1e6);
            }
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "{label}: start → first chunk, fresh instance, one at a time: p50 {:.1} µs, p99 {:.1} µs",
            percentile(&samples, 50.0),
            percentile(&samples, 99.0)
        );
        record_percentiles(
            &format!("{key}: start → first chunk, 1 at a time"),
            &samples,
        );

        for concurrent in CONCURRENT {
            at_once(&sandbox, &module, &ctx, &input, label, key, concurrent).await;
        }
    }
    js_apps().await;
}

/// Start → first chunk with `concurrent` actions running at once.
async fn at_once(
    sandbox: &Sandbox,
    module: &aisa_node::sandbox::LoadedModule,
    ctx: &ActionContext,
    input: &str,
    label: &str,
    key: &str,
    concurrent: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrent {
        let sandbox = sandbox.clone();
        let module = module.clone();
        let ctx = ctx.clone();
        let input = input.to_owned();
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(ROUNDS / concurrent);
            for _ in 0..ROUNDS / concurrent {
                let (tx, mut rx) = mpsc::channel(4);
                let started = Instant::now();
                let run = sandbox.run(&module, &ctx, &input, tx);
                let first = async {
                    rx.recv().await.expect("a chunk");
                    started.elapsed()
                };
                let (result, first) = tokio::join!(run, first);
                result.expect("run");
                samples.push(first.as_secs_f64() * 1e6);
            }
            samples
        });
    }
    let mut all = Vec::with_capacity(ROUNDS);
    while let Some(samples) = tasks.join_next().await {
        all.extend(samples.expect("task"));
    }
    all.sort_by(f64::total_cmp);
    println!(
        "{label}: start → first chunk with {concurrent} actions at once: p50 {:.1} µs, p99 {:.1} µs",
        percentile(&all, 50.0),
        percentile(&all, 99.0)
    );
    record_percentiles(
        &format!("{key}: start → first chunk, {concurrent} at once"),
        &all,
    );
}

/// Records p50 and p99 of sorted samples in µs.
fn record_percentiles(measure: &str, sorted: &[f64]) {
    for (p, at) in [("p50", 50.0), ("p99", 99.0)] {
        Figure::new(
            "sandbox",
            format!("{measure}, {p}"),
            percentile(sorted, at),
            "µs",
        )
        .record();
    }
}

/// Start → first chunk for JS mini-apps on the QuickJS guest.
async fn js_apps() {
    let cache = std::env::temp_dir().join("aisa-sandbox-bench-cache");
    let config = SandboxConfig {
        cache_dir: Some(cache),
        ..SandboxConfig::default()
    };
    let wasm = aisa_testkit::guest::js_runtime_wasm();
    // Warm the compiled-module cache, then load as a node starting up would.
    let warm = Sandbox::with_config(config.clone()).expect("sandbox");
    js_apps::load_runtime(&warm, wasm).expect("load the JS runtime");
    let sandbox = Sandbox::with_config(config).expect("sandbox");
    let started = Instant::now();
    let module = js_apps::load_runtime(&sandbox, wasm).expect("load the JS runtime");
    println!(
        "JS runtime ({} bytes): load from the warm compiled-module cache {:.2} ms",
        std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0),
        started.elapsed().as_secs_f64() * 1e3
    );
    let home = std::env::temp_dir().join("aisa-sandbox-bench");
    let echo = JsSources {
        bot_logic: "export function echo(payload, context) { context.emit(payload.text); }".into(),
        tools: None,
        bytecode: None,
    };
    let seo = JsSources::read(&aisa_testkit::guest::workspace_root().join("examples/seo-writer"))
        .expect("examples/seo-writer");
    // Two parts of seo-writer alone, to split its time: a log line, and the model.
    let mut log_bc = JsSources {
        bot_logic: "export function log(payload, context) { context.console.info('x'); context.emit('y'); }".into(),
        tools: None,
        bytecode: None,
    };
    let mut ai_bc = JsSources {
        bot_logic: "export async function ai(payload, context) { for await (const t of context.ai.generateText('x')) context.emit(t); }".into(),
        tools: None,
        bytecode: None,
    };
    let mut echo_bc = echo.clone();
    let mut seo_bc = seo.clone();
    for (label, sources) in [
        ("echo", &mut echo_bc),
        ("seo-writer", &mut seo_bc),
        ("log", &mut log_bc),
        ("ai", &mut ai_bc),
    ] {
        let started = Instant::now();
        let outcome = js_apps::precompile(&sandbox, &module, "bench", sources);
        println!(
            "JS {label}: precompile to bytecode {:?} in {:.2} ms ({} bytes of base64 JSON)",
            outcome,
            started.elapsed().as_secs_f64() * 1e3,
            sources.bytecode.as_ref().map_or(0, |b| b.len())
        );
    }
    let seo_payload =
        serde_json::json!({"topic": "home espresso", "keywords": ["grinder"], "tone": "friendly"});
    let instant: Arc<dyn AiProvider> = Arc::new(instant_ai());
    let ctx = ActionContext::new("bench", "0.1.0", home, instant).with_grants(Grants {
        ai: true,
        ..Grants::default()
    });
    // The instance alone: the runtime refuses this input before it creates QuickJS.
    let mut samples = Vec::with_capacity(JS_ROUNDS);
    for round in 0..JS_ROUNDS + 100 {
        let (tx, _rx) = mpsc::channel(64);
        let started = Instant::now();
        let result = sandbox.run(&module, &ctx, r#"{"payload":null}"#, tx).await;
        let took = started.elapsed();
        assert!(
            result.is_err(),
            "the runtime refuses an input without an action"
        );
        if round >= 100 {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "JS runtime instance alone (input refused before QuickJS starts): start → end: p50 {:.1} µs, p99 {:.1} µs",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );
    for (label, input) in [
        (
            "JS echo (bot-logic.js emits its payload), sources",
            js_apps::action_input("echo", &serde_json::json!({"text": "hi"}), &echo),
        ),
        (
            "JS echo, bytecode",
            js_apps::action_input("echo", &serde_json::json!({"text": "hi"}), &echo_bc),
        ),
        (
            "JS console.info, then emit, bytecode",
            js_apps::action_input("log", &serde_json::Value::Null, &log_bc),
        ),
        (
            "JS first chunk of ai.generateText (model answers at once), bytecode",
            js_apps::action_input("ai", &serde_json::Value::Null, &ai_bc),
        ),
        (
            "JS seo-writer example (tools.js import, ai.generateText, model answers at once), sources",
            js_apps::action_input("write", &seo_payload, &seo),
        ),
        (
            "JS seo-writer example, bytecode",
            js_apps::action_input("write", &seo_payload, &seo_bc),
        ),
    ] {
        let mut samples = Vec::with_capacity(JS_ROUNDS);
        for round in 0..JS_ROUNDS + 100 {
            let (tx, mut rx) = mpsc::channel(64);
            let started = Instant::now();
            let run = sandbox.run(&module, &ctx, &input, tx);
            let first = async {
                let first = rx.recv().await.map(|_| started.elapsed());
                while rx.recv().await.is_some() {}
                first.expect("a chunk")
            };
            let (result, first) = tokio::join!(run, first);
            result.expect("run");
            if round >= 100 {
                samples.push(first.as_secs_f64() * 1e6);
            }
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "{label}: start → first chunk, fresh instance, one at a time: p50 {:.1} µs, p99 {:.1} µs",
            percentile(&samples, 50.0),
            percentile(&samples, 99.0)
        );
        let p50 = Figure::new(
            "sandbox",
            format!("{label}: start → first chunk, p50"),
            percentile(&samples, 50.0),
            "µs",
        );
        let p50 = if label == "JS seo-writer example, bytecode" {
            p50.goal("≤ 100 µs")
        } else {
            p50
        };
        p50.record();
    }
}
