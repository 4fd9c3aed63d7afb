//! JavaScript mini-apps: the real JS runtime guest (QuickJS compiled to wasm32 from
//! `runtimes/js`) in the real sandbox, asking the local OpenAI-format provider through
//! the node's production adapter. Also runs the example JS apps in `examples/`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aisa_node::ai::{self, AiProvider, ProviderKind};
use aisa_node::js_apps::{self, JsSources};
use aisa_node::permissions::{Grants, UserDirs};
use aisa_node::sandbox::{
    ActionContext, ActionError, Limits, LoadedModule, Sandbox, SandboxConfig,
};
use aisa_testkit::provider::{self, FakeProvider};
use tokio::sync::mpsc;

/// One sandbox and the runtime loaded into it, shared by every test in this binary.
/// Compiling the QuickJS module takes seconds (half a minute in a debug build), so the
/// compiled code is cached under `target/`, as the node caches it in its home folder.
fn runtime() -> &'static (Sandbox, LoadedModule) {
    static LOADED: OnceLock<(Sandbox, LoadedModule)> = OnceLock::new();
    LOADED.get_or_init(|| {
        let sandbox = Sandbox::with_config(SandboxConfig {
            cache_dir: Some(aisa_testkit::guest::workspace_root().join("target/guest/compiled")),
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let module = js_apps::load_runtime(&sandbox, aisa_testkit::guest::js_runtime_wasm())
            .expect("the JS runtime loads: it imports only the host API");
        (sandbox, module)
    })
}

async fn fake() -> FakeProvider {
    provider::start(([127, 0, 0, 1], 0).into(), None)
        .await
        .expect("fake provider")
}

fn model(fake: &FakeProvider) -> Arc<dyn AiProvider> {
    ai::build(ProviderKind::OpenAi, &fake.base_url(), "test-model", None).expect("adapter")
}

/// An action of the app `js-test` with the `ai` grant, its data under `home`.
fn action_context(home: &Path, ai: Arc<dyn AiProvider>) -> ActionContext {
    ActionContext::new("js-test", "0.1.0", home, ai).with_grants(Grants {
        ai: true,
        ..Grants::default()
    })
}

/// What an action did: every chunk it emitted, and how it ended.
struct Outcome {
    chunks: Vec<String>,
    result: Result<(), ActionError>,
}

impl Outcome {
    fn text(&self) -> String {
        self.chunks.concat()
    }

    fn failure(&self) -> String {
        match &self.result {
            Ok(()) => panic!("expected a failure, got success with {:?}", self.chunks),
            Err(e) => e.to_string(),
        }
    }
}

async fn run_with(
    sources: &JsSources,
    action: &str,
    payload: serde_json::Value,
    ctx: &ActionContext,
) -> Outcome {
    let (sandbox, module) = runtime();
    let input = js_apps::action_input(action, &payload, sources);
    let (tx, mut rx) = mpsc::channel(16);
    let collect = async {
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.recv().await {
            chunks.push(chunk);
        }
        chunks
    };
    let (result, chunks) = tokio::join!(sandbox.run(module, ctx, &input, tx), collect);
    Outcome { chunks, result }
}

fn sources(bot_logic: &str, tools: Option<&str>) -> JsSources {
    JsSources {
        bot_logic: bot_logic.to_owned(),
        tools: tools.map(str::to_owned),
        bytecode: None,
    }
}

/// Runs `action` of a one-off app with default limits and a fresh data folder.
async fn run_js(
    bot_logic: &str,
    tools: Option<&str>,
    action: &str,
    payload: serde_json::Value,
) -> Outcome {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let ctx = action_context(home.path(), model(&fake));
    run_with(&sources(bot_logic, tools), action, payload, &ctx).await
}

#[tokio::test]
async fn an_action_streams_the_model_output_chunk_by_chunk() {
    let fake = fake().await;
    let sources = JsSources {
        bot_logic: r#"
            export async function write(payload, context) {
              for await (const chunk of context.ai.generateText({ prompt: `About ${payload.topic}`, system: 'be brief', max_tokens: 50 })) {
                context.emit(chunk);
              }
            }"#
        .to_owned(),
        tools: None,
        bytecode: None,
    };
    let home = tempfile::tempdir().expect("home");
    let out = run_with(
        &sources,
        "write",
        serde_json::json!({"topic": "QUIC streams"}),
        &action_context(home.path(), model(&fake)),
    )
    .await;
    out.result.as_ref().expect("the action succeeds");
    assert_eq!(out.chunks, provider::reply_tokens("About QUIC streams"));
    assert!(
        out.chunks.len() > 2,
        "streamed, not one block: {:?}",
        out.chunks
    );
    assert_eq!(
        fake.stats
            .completed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_returned_string_is_emitted_and_the_payload_arrives_as_an_object() {
    let out = run_js(
        "export function shout(payload) { return payload.words.map((w) => w.toUpperCase()).join(' ') + ' ☃'; }",
        None,
        "shout",
        serde_json::json!({"words": ["hi", "there"]}),
    )
    .await;
    out.result.as_ref().expect("ok");
    assert_eq!(out.chunks, ["HI THERE ☃"]);
}

#[tokio::test]
async fn tools_js_exports_are_importable_and_on_context_tools() {
    let tools =
        "export function wordCount(text) { return text.split(/\\s+/).filter(Boolean).length; }
                 export const unit = 'words';";
    let logic = "import { wordCount, unit } from './tools.js';
        export async function count(payload, context) {
          context.emit(`${wordCount(payload.text)} ${unit}`);
          context.emit(`|${context.tools.wordCount('a b c')}`);
          context.emit(`|${typeof context.tools.readFile}`);
        }";
    let out = run_js(
        logic,
        Some(tools),
        "count",
        serde_json::json!({"text": "one two  three four"}),
    )
    .await;
    out.result.as_ref().expect("ok");
    assert_eq!(out.text(), "4 words|3|function");

    // Without tools.js, importing it is refused with a reason.
    let out = run_js(logic, None, "count", serde_json::json!({"text": ""})).await;
    let failure = out.failure();
    assert!(
        failure.contains("./tools.js") && failure.contains("no tools.js"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_thrown_error_fails_the_action_with_its_message_and_line() {
    let out = run_js(
        "export async function write(payload, context) {\n  context.emit('partial');\n  throw new Error('the topic is missing');\n}",
        None,
        "write",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        out.chunks,
        ["partial"],
        "output before the error still arrives"
    );
    let failure = out.failure();
    assert!(failure.contains("Error: the topic is missing"), "{failure}");
    assert!(
        failure.contains("bot-logic.js:3"),
        "the stack names the line: {failure}"
    );

    // A rejected promise and a thrown non-Error value are failures too.
    let out = run_js(
        "export function write() { return Promise.reject(new TypeError('nope')); }",
        None,
        "write",
        serde_json::json!({}),
    )
    .await;
    assert!(
        out.failure().contains("TypeError: nope"),
        "{}",
        out.failure()
    );
    let out = run_js(
        "export function write() { throw 'plain'; }",
        None,
        "write",
        serde_json::json!({}),
    )
    .await;
    assert!(out.failure().contains("plain"), "{}", out.failure());

    // A syntax error names the file and line.
    let out = run_js(
        "export function write() {\n  let = ;\n}",
        None,
        "write",
        serde_json::json!({}),
    )
    .await;
    let failure = out.failure();
    assert!(
        failure.contains("SyntaxError") && failure.contains("bot-logic.js:2"),
        "{failure}"
    );
}

#[tokio::test]
async fn an_unknown_action_names_the_exported_ones() {
    let out = run_js(
        "export function write() {} export function summarize() {}",
        None,
        "translate",
        serde_json::json!({}),
    )
    .await;
    let failure = out.failure();
    assert!(
        failure.contains("'translate'") && failure.contains("summarize, write"),
        "{failure}"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_deadline() {
    let fake = fake().await;
    let sources = JsSources {
        bot_logic:
            "export function spin(payload, context) { context.emit('start'); while (true) {} }"
                .to_owned(),
        tools: None,
        bytecode: None,
    };
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let home = tempfile::tempdir().expect("home");
    let ctx = action_context(home.path(), model(&fake)).with_limits(limits);
    runtime(); // compiled before the clock starts
    let started = Instant::now();
    let out = run_with(&sources, "spin", serde_json::json!({}), &ctx).await;
    let failure = out.failure();
    assert!(failure.contains("time"), "{failure}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped near its deadline: {:?}",
        started.elapsed()
    );
    // The sandbox keeps serving.
    let out = run_js(
        "export function ok() { return 'still here'; }",
        None,
        "ok",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(out.text(), "still here");
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_memory_cap() {
    let fake = fake().await;
    let sources = JsSources {
        bot_logic: "export function bomb() {
            const hoard = [];
            while (true) hoard.push(new Array(1 << 20).fill(hoard.length));
        }"
        .to_owned(),
        tools: None,
        bytecode: None,
    };
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let home = tempfile::tempdir().expect("home");
    let ctx = action_context(home.path(), model(&fake)).with_limits(limits);
    runtime(); // compiled before the clock starts
    let started = Instant::now();
    let out = run_with(&sources, "bomb", serde_json::json!({}), &ctx).await;
    let failure = out.failure();
    assert!(failure.contains("memory"), "{failure}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Deep recursion ends in a clean failure too.
    let out = run_js(
        "export function deep() { const f = (n) => f(n + 1) + 1; return String(f(0)); }",
        None,
        "deep",
        serde_json::json!({}),
    )
    .await;
    let failure = out.failure();
    assert!(
        failure.contains("stack") || failure.contains("recursion"),
        "{failure}"
    );
}

#[tokio::test]
async fn node_and_browser_globals_are_not_there() {
    let out = run_js(
        "export function probe() {
            const names = ['require', 'process', 'fs', 'fetch', 'setTimeout', 'setInterval',
                           'XMLHttpRequest', 'WebSocket', 'module', 'exports', 'std', 'os'];
            return JSON.stringify(names.map((n) => [n, typeof globalThis[n]]));
        }",
        None,
        "probe",
        serde_json::json!({}),
    )
    .await;
    out.result.as_ref().expect("ok");
    let seen: Vec<(String, String)> = serde_json::from_str(&out.text()).expect("json");
    for (name, kind) in &seen {
        assert_eq!(kind, "undefined", "{name} must not exist in the JS world");
    }
    assert_eq!(seen.len(), 12);

    // Calling one is a ReferenceError that fails the action.
    let out = run_js(
        "export function f() { require('fs'); }",
        None,
        "f",
        serde_json::json!({}),
    )
    .await;
    assert!(
        out.failure().contains("ReferenceError"),
        "{}",
        out.failure()
    );
}

#[tokio::test]
async fn imports_other_than_tools_js_are_refused_by_name() {
    for specifier in ["lodash", "./other.js", "fs", "https://example.com/x.js"] {
        let logic =
            format!("import x from '{specifier}';\nexport function f() {{ return 'loaded'; }}");
        let out = run_js(
            &logic,
            Some("export const a = 1;"),
            "f",
            serde_json::json!({}),
        )
        .await;
        let failure = out.failure();
        assert!(
            failure.contains(&format!("'{specifier}'")) && failure.contains("not allowed"),
            "{specifier}: {failure}"
        );
        assert!(out.chunks.is_empty());
    }
    // Dynamic import too.
    let out = run_js(
        "export async function f() { await import('node:fs'); }",
        None,
        "f",
        serde_json::json!({}),
    )
    .await;
    assert!(out.failure().contains("'node:fs'"), "{}", out.failure());
}

#[tokio::test]
async fn console_goes_to_the_log_and_does_not_emit() {
    let out = run_js(
        "export function f(payload, context) { context.console.log('a', {b: 1}); console.warn('w'); context.console.error(new Error('e')); return 'done'; }",
        None,
        "f",
        serde_json::json!({}),
    )
    .await;
    out.result.as_ref().expect("ok");
    assert_eq!(out.chunks, ["done"]);
}

fn example(name: &str) -> JsSources {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    JsSources::read(&dir).expect("example sources")
}

#[tokio::test]
async fn the_seo_writer_example_streams_an_article() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let out = run_with(
        &example("seo-writer"),
        "write",
        serde_json::json!({"topic": "home espresso", "keywords": ["grinder", "crema"], "tone": "friendly"}),
        &action_context(home.path(), model(&fake)),
    )
    .await;
    out.result.as_ref().expect("ok");
    let text = out.text();
    assert!(
        text.starts_with("Echo: "),
        "the model's answer streams: {text}"
    );
    assert!(
        text.contains("home espresso") && text.contains("grinder, crema"),
        "{text}"
    );
    assert!(text.contains("friendly"), "{text}");
    assert!(out.chunks.len() > 5, "streamed: {}", out.chunks.len());
}

/// A person's folders inside `root`: `$DOCUMENTS` is `root/Documents`.
fn user_dirs(root: &Path) -> Arc<UserDirs> {
    Arc::new(UserDirs {
        home: Some(root.to_owned()),
        documents: Some(root.join("Documents")),
        downloads: Some(root.join("Downloads")),
        desktop: Some(root.join("Desktop")),
    })
}

#[tokio::test]
async fn storage_keeps_values_across_actions() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let ctx = action_context(home.path(), model(&fake));
    let app = sources(
        "export async function remember(payload, context) {
            await context.storage.set('note', { text: payload.text, n: 1 });
            await context.storage.set('other', 'x');
            await context.storage.delete('other');
            return 'saved';
        }
        export async function recall(payload, context) {
            const note = await context.storage.get('note');
            const missing = await context.storage.get('never-set');
            return JSON.stringify({ note, missing, keys: await context.storage.keys() });
        }",
        None,
    );
    let out = run_with(
        &app,
        "remember",
        serde_json::json!({"text": "buy beans"}),
        &ctx,
    )
    .await;
    out.result.as_ref().expect("remember");
    assert_eq!(out.chunks, ["saved"]);

    // A new action, a new instance: only the store remembers.
    let out = run_with(&app, "recall", serde_json::json!({}), &ctx).await;
    out.result.as_ref().expect("recall");
    let seen: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(
        seen,
        serde_json::json!({"note": {"text": "buy beans", "n": 1}, "missing": null, "keys": ["note"]})
    );
}

#[tokio::test]
async fn read_file_reads_granted_files_and_a_denial_is_a_catchable_error() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("user folders");
    let documents = root.path().join("Documents");
    std::fs::create_dir_all(&documents).expect("Documents");
    std::fs::write(documents.join("note.txt"), "granted text ☃").expect("write");
    std::fs::write(root.path().join("secret.txt"), "TOP-SECRET").expect("write");
    let mut ctx = action_context(home.path(), model(&fake)).with_grants(Grants {
        ai: true,
        read: vec![documents.canonicalize().expect("canonical")],
        ..Grants::default()
    });
    ctx.user_dirs = user_dirs(root.path());
    let app = sources(
        "export async function read(payload, context) {
            context.emit(await context.tools.readFile('$DOCUMENTS/note.txt'));
            try {
                await context.tools.readFile(payload.outside);
                context.emit('|read it!');
            } catch (e) {
                context.emit(`|${e.code}|${e.message}`);
            }
            const listing = await context.tools.listDir('$DOCUMENTS');
            context.emit(`|${listing.map((e) => e.name).join(',')}`);
        }
        export async function escape(payload, context) {
            return await context.tools.readFile('$DOCUMENTS/../secret.txt');
        }",
        None,
    );
    let outside = root.path().join("secret.txt");
    let out = run_with(
        &app,
        "read",
        serde_json::json!({"outside": outside.display().to_string()}),
        &ctx,
    )
    .await;
    out.result.as_ref().expect("read");
    let text = out.text();
    assert!(
        text.starts_with("granted text ☃|permission_denied|fs.read: permission_denied"),
        "{text}"
    );
    assert!(text.ends_with("|note.txt"), "{text}");

    // Uncaught, the denial ends the action with a message naming it.
    let out = run_with(&app, "escape", serde_json::json!({}), &ctx).await;
    let failure = out.failure();
    assert!(failure.contains("permission_denied"), "{failure}");
    assert!(!failure.contains("TOP-SECRET"), "{failure}");
}

#[tokio::test]
async fn env_and_the_builtin_csv_tool_answer() {
    let out = run_js(
        "export async function f(payload, context) {
            const t = await context.tools.parseCsv(`a,b
1,2
3,4`);
            return JSON.stringify({ app: context.env.app_id, version: context.env.app_version, t });
        }",
        None,
        "f",
        serde_json::json!({}),
    )
    .await;
    out.result.as_ref().expect("ok");
    let seen: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(seen["app"], "js-test");
    assert_eq!(seen["version"], "0.1.0");
    assert_eq!(seen["t"]["headers"], serde_json::json!(["a", "b"]));
    assert_eq!(seen["t"]["rows"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_csv_summarizer_example_reports_stats_and_streams_a_summary() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let csv = "product,price,sold\nespresso,2.5,120\nlatte,3.5,80\nespresso,2.5,40\ntea,,15\n";
    let out = run_with(
        &example("csv-summarizer"),
        "summarize",
        serde_json::json!({"csv": csv, "question": "best seller"}),
        &action_context(home.path(), model(&fake)),
    )
    .await;
    out.result.as_ref().expect("ok");
    let text = out.text();
    assert!(text.starts_with("**4 rows, 3 columns**"), "{text}");
    assert!(
        text.contains("| price | 3 | 1 | min 2.5, max 3.5, mean 2.833, sum 8.5 |"),
        "{text}"
    );
    assert!(
        text.contains("| sold | 4 | 0 | min 15, max 120, mean 63.75, sum 255 |"),
        "{text}"
    );
    assert!(
        text.contains("| product | 4 | 0 | 3 distinct; most common: espresso (2)"),
        "{text}"
    );
    assert!(
        text.contains("Echo: A CSV table has 4 rows"),
        "the model's summary follows: {text}"
    );
    assert!(text.contains("focusing on: best seller"), "{text}");
    assert!(out.chunks.len() > 5, "streamed: {}", out.chunks.len());

    // From a granted file instead of pasted text.
    let root = tempfile::tempdir().expect("user folders");
    let documents = root.path().join("Documents");
    std::fs::create_dir_all(&documents).expect("Documents");
    std::fs::write(documents.join("sales.csv"), csv).expect("write");
    let mut ctx = action_context(home.path(), model(&fake)).with_grants(Grants {
        ai: true,
        read: vec![documents.canonicalize().expect("canonical")],
        ..Grants::default()
    });
    ctx.user_dirs = user_dirs(root.path());
    let out = run_with(
        &example("csv-summarizer"),
        "summarize",
        serde_json::json!({"path": "$DOCUMENTS/sales.csv"}),
        &ctx,
    )
    .await;
    out.result.as_ref().expect("ok");
    assert!(
        out.text().starts_with("**4 rows, 3 columns**"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn the_file_qa_example_answers_about_a_granted_file() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("user folders");
    let documents = root.path().join("Documents");
    std::fs::create_dir_all(documents.join("notes")).expect("Documents");
    std::fs::write(
        documents.join("notes/meeting.md"),
        "# Meeting\nWe ship version 2 on Friday.\n",
    )
    .expect("write");
    let mut ctx = action_context(home.path(), model(&fake)).with_grants(Grants {
        ai: true,
        read: vec![documents.canonicalize().expect("canonical")],
        ..Grants::default()
    });
    ctx.user_dirs = user_dirs(root.path());
    let out = run_with(
        &example("file-qa"),
        "ask",
        serde_json::json!({"path": "$DOCUMENTS/notes/meeting.md", "question": "When do we ship?"}),
        &ctx,
    )
    .await;
    out.result.as_ref().expect("ok");
    let text = out.text();
    assert!(text.starts_with("Echo: Here is the content"), "{text}");
    assert!(
        text.contains("We ship version 2 on Friday."),
        "the file reached the model: {text}"
    );
    assert!(text.contains("Question: When do we ship?"), "{text}");
    assert!(out.chunks.len() > 5, "streamed: {}", out.chunks.len());

    // Without the grant, the app fails with the denial.
    let mut denied = action_context(home.path(), model(&fake));
    denied.user_dirs = user_dirs(root.path());
    let out = run_with(
        &example("file-qa"),
        "ask",
        serde_json::json!({"path": "$DOCUMENTS/notes/meeting.md", "question": "When?"}),
        &denied,
    )
    .await;
    assert!(
        out.failure().contains("permission_denied"),
        "{}",
        out.failure()
    );
}

#[tokio::test]
async fn without_grants_the_model_and_the_network_are_refused() {
    let fake = fake().await;
    let home = tempfile::tempdir().expect("home");
    let no_grants = ActionContext::new("js-test", "0.1.0", home.path(), model(&fake));
    let app = sources(
        "export async function net(payload, context) {
            try {
                await context.tools.fetch(payload.url);
                return 'fetched!';
            } catch (e) {
                return `${e.code}: ${e.message}`;
            }
        }
        export async function ask(payload, context) {
            for await (const chunk of context.ai.generateText('hello')) context.emit(chunk);
        }",
        None,
    );
    let url = format!("{}/chat/completions", fake.base_url());
    let out = run_with(&app, "net", serde_json::json!({ "url": url }), &no_grants).await;
    out.result
        .as_ref()
        .expect("the denial is caught by the app");
    assert!(
        out.text().starts_with("permission_denied: http.fetch"),
        "{}",
        out.text()
    );

    let out = run_with(&app, "ask", serde_json::json!({}), &no_grants).await;
    assert!(
        out.failure().contains("permission denied: ai"),
        "{}",
        out.failure()
    );
    assert_eq!(
        fake.stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the provider"
    );
}

#[tokio::test]
async fn the_example_js_apps_pass_the_bundle_checks_and_export_their_actions() {
    for (name, action) in [
        ("seo-writer", "write"),
        ("csv-summarizer", "summarize"),
        ("file-qa", "ask"),
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name);
        let bundle = aisa_miniapp::Bundle::from_dir(&dir).expect("bundle from the folder");
        let app = aisa_miniapp::check(&bundle)
            .unwrap_or_else(|e| panic!("{name} fails the bundle checks: {e}"));
        assert_eq!(app.manifest.id, name);
        assert_eq!(app.manifest.entry, aisa_miniapp::EntryKind::Js);
        assert_eq!(app.actions, [action]);
        // An action the schema lists is a function bot-logic.js exports: asking for
        // another one names it among the exported.
        let out = run_js(
            &example(name).bot_logic,
            example(name).tools.as_deref(),
            "no-such-action",
            serde_json::json!({}),
        )
        .await;
        assert!(out.failure().contains(action), "{name}: {}", out.failure());
    }
}
