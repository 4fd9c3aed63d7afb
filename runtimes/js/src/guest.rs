//! The wasm side: the ABI entry (through `aisa_guest::entry!`), the module loader, the
//! action driver (run QuickJS's job queue until the action's promise settles), and the
//! host calls `context` (in `context.rs`) is made of.

use std::cell::RefCell;

use aisa_guest::ai::{Generation, Request};
use aisa_guest::emit;
use rquickjs::context::intrinsic;
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{
    CaughtError, Context, Ctx, Exception, Module, Object, Runtime, Value, WriteOptions,
};

/// QuickJS's own stack limit (of the guest's 1 MiB shadow stack in linear memory; without
/// a limit set QuickJS measures from the wrong place and every eval fails with "Maximum
/// call stack size exceeded").
/// Each JS call also takes native wasm stack, of which the sandbox allows 512 KiB: at
/// 192 KiB a runaway JS recursion (about 680 calls deep) ends in a catchable
/// `RangeError` before the native stack runs out; at 256 KiB it traps instead.
const MAX_STACK_BYTES: usize = 192 * 1024;

/// Name under which `bot-logic.js` is declared (and the base of its imports).
const LOGIC: &str = "bot-logic.js";
/// Name under which `tools.js` is declared; `./tools.js` resolves to it.
const TOOLS: &str = "tools.js";

/// The clock QuickJS's C shim imports from `env`. Defining it here keeps the import out
/// of the module (the sandbox allows only `aisapp_v1`); a mini-app has no clock of its
/// own, so it answers 0 (the Unix epoch).
#[allow(unsafe_code)] // an exported symbol, resolved at link time
#[unsafe(no_mangle)]
pub extern "C" fn __rquickjs_host_now_us() -> f64 {
    0.0
}

thread_local! {
    /// Model generations started by this action, indexed by the handle JS holds.
    static GENERATIONS: RefCell<Vec<Option<Generation>>> = const { RefCell::new(Vec::new()) };
}

/// The standard library a mini-app gets: everything QuickJS has but `performance` (there
/// is no clock), `WeakRef` / `FinalizationRegistry` (nothing lives long enough) and
/// `DOMException`. Each intrinsic left out is less work for every action's new context.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
);

/// The program an action runs: the app's sources, or the QuickJS bytecode the node
/// compiled from them (`compile` below).
enum Program {
    /// `bot-logic.js` and `tools.js` as source text.
    Sources {
        logic: String,
        tools: Option<String>,
    },
    /// Their module bytecode. QuickJS reads it in place (`JS_READ_OBJ_ROM_DATA`), so
    /// these buffers outlive the runtime that loaded them.
    Bytecode {
        logic: Vec<u8>,
        tools: Option<Vec<u8>>,
    },
}

impl Program {
    fn has_tools(&self) -> bool {
        match self {
            Program::Sources { tools, .. } => tools.is_some(),
            Program::Bytecode { tools, .. } => tools.is_some(),
        }
    }
}

fn run(input: &str) -> Result<(), String> {
    let input: serde_json::Value =
        serde_json::from_str(input).map_err(|e| format!("the input is not JSON: {e}"))?;
    if let Some(sources) = input.get("compile") {
        return compile(sources);
    }
    let action_name = input["action"]
        .as_str()
        .ok_or("the input has no \"action\"")?;
    let payload = input
        .get("payload")
        .unwrap_or(&serde_json::Value::Null)
        .to_string();
    let program = match input.get("bytecode") {
        Some(bytecode) => Program::Bytecode {
            logic: decode_base64(
                bytecode[LOGIC]
                    .as_str()
                    .ok_or("the input has no bytecode[\"bot-logic.js\"]")?,
            )?,
            tools: bytecode[TOOLS].as_str().map(decode_base64).transpose()?,
        },
        None => {
            let sources = &input["sources"];
            Program::Sources {
                logic: sources[LOGIC]
                    .as_str()
                    .ok_or("the input has no sources[\"bot-logic.js\"]")?
                    .to_owned(),
                tools: sources[TOOLS].as_str().map(str::to_owned),
            }
        }
    };
    // The runtime made before the node's memory snapshot (`aisa_js_init`), or a new one.
    let (runtime, context) = match READY.with(|ready| ready.borrow_mut().take()) {
        Some(ready) => ready,
        None => new_base()?,
    };
    set_loader(&runtime, &program);
    let result = context.with(|ctx| action(&ctx, action_name, payload, &program));
    // The instance ends with the action: freeing QuickJS's heap object by object first
    // would be wasted work (and `program` must outlive the runtime anyway).
    std::mem::forget((context, runtime));
    result
}

/// Evaluates the app's modules and calls its function `action` with `payload`.
fn action(ctx: &Ctx<'_>, action: &str, payload: String, program: &Program) -> Result<(), String> {
    {
        let ctx = ctx.clone();
        let (tools_ns, logic_ns) = match program {
            Program::Sources { logic, tools } => (
                match tools {
                    Some(source) => Some(evaluate(&ctx, TOOLS, declare(&ctx, TOOLS, source)?)?),
                    None => None,
                },
                evaluate(&ctx, LOGIC, declare(&ctx, LOGIC, logic)?)?,
            ),
            Program::Bytecode { logic, tools } => (
                match tools {
                    Some(code) => Some(evaluate(&ctx, TOOLS, load(&ctx, code)?)?),
                    None => None,
                },
                evaluate(&ctx, LOGIC, load(&ctx, logic)?)?,
            ),
        };
        let function: Value = logic_ns.get(action).map_err(|e| describe(&ctx, e))?;
        let Some(function) = function.as_function().cloned() else {
            let exported: Vec<String> = logic_ns
                .props::<String, Value>()
                .filter_map(|p| p.ok())
                .filter(|(_, v)| v.is_function())
                .map(|(k, _)| k)
                .collect();
            let exported = if exported.is_empty() {
                "none".to_owned()
            } else {
                exported.join(", ")
            };
            return Err(format!(
                "bot-logic.js exports no function named '{action}' (it exports: {exported})"
            ));
        };
        let context =
            crate::context::make(&ctx, tools_ns.as_ref()).map_err(|e| describe(&ctx, e))?;
        let payload = ctx.json_parse(payload).map_err(|e| describe(&ctx, e))?;
        let result: Value = function
            .call((payload, context))
            .map_err(|e| describe(&ctx, e))?;
        let result = match result.as_promise() {
            Some(promise) => promise.finish::<Value>().map_err(|e| match e {
                rquickjs::Error::WouldBlock => "the action's promise never settled (it waits for \
                     something that cannot happen: there are no timers or events in a mini-app)"
                    .to_owned(),
                e => describe(&ctx, e),
            })?,
            None => result,
        };
        if !result.is_undefined() && !result.is_null() {
            emit(&crate::context::show(&ctx, &result));
        }
        Ok(())
    }
}

aisa_guest::entry!(run);

thread_local! {
    /// The runtime and context [`aisa_js_init`] made, for the action to take.
    static READY: RefCell<Option<(Runtime, Context)>> = const { RefCell::new(None) };
}

/// Makes the QuickJS runtime and context every action starts from (the standard
/// library, the global `console`) and keeps them for `aisapp_run`. The node calls it
/// once on a fresh instance and snapshots the instance's memory
/// (`desktop-node/src/sandbox/snapshot.rs`): every action's instance then starts with
/// them made, copy-on-write. Without the snapshot, `aisapp_run` makes them itself.
#[allow(unsafe_code)] // an exported symbol
#[unsafe(no_mangle)]
pub extern "C" fn aisa_js_init() {
    if let Ok(ready) = new_base() {
        READY.with(|slot| *slot.borrow_mut() = Some(ready));
    }
}

/// A QuickJS runtime (with its stack limit) and a context with the mini-app standard
/// library and the global `console`.
fn new_base() -> Result<(Runtime, Context), String> {
    let runtime = Runtime::new().map_err(|e| format!("QuickJS runtime: {e}"))?;
    runtime.set_max_stack_size(MAX_STACK_BYTES);
    let context =
        Context::custom::<Intrinsics>(&runtime).map_err(|e| format!("QuickJS context: {e}"))?;
    context.with(|ctx| {
        let console = crate::context::console(&ctx).map_err(|e| describe(&ctx, e))?;
        ctx.globals()
            .set("console", console)
            .map_err(|e| describe(&ctx, e))
    })?;
    Ok((runtime, context))
}

/// The module loader for `program`: `./tools.js` and nothing else.
fn set_loader(runtime: &Runtime, program: &Program) {
    let source = match program {
        Program::Sources { tools, .. } => tools.clone(),
        Program::Bytecode { .. } => None,
    };
    runtime.set_loader(
        OnlyTools {
            has_tools: program.has_tools(),
        },
        ToolsLoader { source },
    );
}

/// `{"compile": {"bot-logic.js": …, "tools.js": …?}}`: parses each source as a module
/// (nothing is evaluated) and emits `{"bot-logic.js": base64, "tools.js": base64?}`,
/// their QuickJS bytecode. A source that does not parse fails with the same message an
/// action on it would.
fn compile(sources: &serde_json::Value) -> Result<(), String> {
    let logic = sources[LOGIC]
        .as_str()
        .ok_or("compile: no \"bot-logic.js\"")?;
    let tools = sources[TOOLS].as_str();
    let program = Program::Sources {
        logic: logic.to_owned(),
        tools: tools.map(str::to_owned),
    };
    let (runtime, context) = new_base()?;
    set_loader(&runtime, &program);
    context.with(|ctx| {
        let mut out = serde_json::Map::new();
        for (name, source) in [(TOOLS, tools), (LOGIC, Some(logic))] {
            let Some(source) = source else { continue };
            let module = declare(&ctx, name, source)?;
            let code = module
                .write(WriteOptions::default())
                .map_err(|e| describe(&ctx, e))?;
            out.insert(name.to_owned(), encode_base64(&code).into());
        }
        emit(&serde_json::Value::Object(out).to_string());
        Ok(())
    })
}

/// Declares (parses) an ES module from its source.
fn declare<'js>(ctx: &Ctx<'js>, name: &str, source: &str) -> Result<Module<'js, Declared>, String> {
    Module::declare(ctx.clone(), name, source).map_err(|e| describe(ctx, e))
}

/// Declares an ES module from bytecode `compile` produced.
fn load<'js>(ctx: &Ctx<'js>, code: &[u8]) -> Result<Module<'js, Declared>, String> {
    #[allow(unsafe_code)]
    // SAFETY: the node passes only bytecode it made itself with `compile`, from the
    // signed bundle's sources, on this same runtime build (its cache is keyed by the
    // runtime module's hash and authenticated; docs/js-apps.md), never bytes from a
    // bundle. `code` outlives the runtime (see `Program::Bytecode`).
    unsafe { Module::load(ctx.clone(), code) }.map_err(|e| describe(ctx, e))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional).
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("the bytecode is not base64".to_owned()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Starts a model generation (`ai_generate`) for the request JSON; returns its handle.
pub(crate) fn ai_generate(ctx: &Ctx<'_>, request: &str) -> rquickjs::Result<i32> {
    let request: serde_json::Value = serde_json::from_str(request)
        .map_err(|e| Exception::throw_type(ctx, &format!("ai request: {e}")))?;
    let mut ask = Request::new(request["prompt"].as_str().unwrap_or_default());
    ask.system = request["system"].as_str().map(str::to_owned);
    ask.max_tokens = request["max_tokens"].as_u64().map(|n| n as u32);
    let generation =
        aisa_guest::ai::generate(&ask).map_err(|e| Exception::throw_message(ctx, &e))?;
    GENERATIONS.with(|g| {
        let mut g = g.borrow_mut();
        g.push(Some(generation));
        Ok((g.len() - 1) as i32)
    })
}

/// The next text of generation `handle` (`ai_next`), or `None` when it is complete.
pub(crate) fn ai_next(ctx: &Ctx<'_>, handle: i32) -> rquickjs::Result<Option<String>> {
    let next = GENERATIONS.with(|g| {
        let mut g = g.borrow_mut();
        let slot = g.get_mut(handle as usize)?;
        let next = slot.as_mut()?.next();
        if next.is_none() {
            *slot = None;
        }
        next
    });
    match next {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text)),
        Some(Err(e)) => Err(Exception::throw_message(ctx, &e)),
    }
}

/// One capability call (docs/guest-abi.md, "The permissioned host API"): the import by
/// name, the request JSON in, the answer JSON out. A capability the runtime was built
/// without answers `unavailable`.
pub(crate) fn capability_call(import: &str, request: &str) -> Result<String, String> {
    capabilities::call(import, request)
}

/// Evaluates a declared ES module, driving its top-level promise, and returns its
/// namespace.
fn evaluate<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    declared: Module<'js, Declared>,
) -> Result<Object<'js>, String> {
    let (module, done) = declared.eval().map_err(|e| describe(ctx, e))?;
    done.finish::<Value>().map_err(|e| match e {
        rquickjs::Error::WouldBlock => {
            format!("{name}: its top-level code waits for something that never happens")
        }
        e => describe(ctx, e),
    })?;
    module.namespace().map_err(|e| describe(ctx, e))
}

/// The message (and stack, where QuickJS has one) of a failed QuickJS call.
fn describe(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    match CaughtError::from_error(ctx, error) {
        CaughtError::Exception(e) => crate::context::describe_exception(&e),
        CaughtError::Value(v) => {
            let shown = ctx
                .json_stringify(v.clone())
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("{v:?}"));
            format!("uncaught: {shown}")
        }
        CaughtError::Error(e) => e.to_string(),
    }
}

/// Resolves `./tools.js` (when the app has one) and refuses every other import, naming it.
struct OnlyTools {
    has_tools: bool,
}

impl Resolver for OnlyTools {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if name == "./tools.js" && self.has_tools {
            return Ok(TOOLS.to_owned());
        }
        let why = if name == "./tools.js" {
            "the app has no tools.js".to_owned()
        } else {
            "a mini-app may import only './tools.js'".to_owned()
        };
        Err(Exception::throw_message(
            ctx,
            &format!("{base} imports '{name}', which is not allowed: {why}"),
        ))
    }
}

/// Loads `tools.js` from the input when it was not evaluated already.
struct ToolsLoader {
    source: Option<String>,
}

impl Loader for ToolsLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        match (name, self.source.take()) {
            (TOOLS, Some(source)) => Module::declare(ctx.clone(), TOOLS, source),
            _ => Err(Exception::throw_message(
                ctx,
                &format!("module '{name}' cannot be loaded"),
            )),
        }
    }
}

/// The capability imports of `aisapp_v1` (docs/guest-abi.md: `fs`, `http`, `clipboard`, `tool`,
/// `storage`, `env`, fetched with `result`). Behind the `capabilities` feature, so that
/// a runtime built without it imports only the original five functions.
#[cfg(feature = "capabilities")]
mod capabilities {
    use aisa_abi::Capability;

    /// The `aisapp_v1` imports, declared from the guest contract's one list (only the
    /// ones called here end up in the module).
    #[allow(unsafe_code)] // the ABI boundary
    mod host {
        aisa_abi::guest_imports!();
    }

    /// Calls `import` with `request` and returns the answer JSON.
    pub fn call(import: &str, request: &str) -> Result<String, String> {
        let capability = Capability::ALL
            .into_iter()
            .find(|c| c.import_name() == import)
            .ok_or_else(|| format!("no host capability '{import}'"))?;
        let f = match capability {
            Capability::Fs => host::fs,
            Capability::Http => host::http,
            Capability::Clipboard => host::clipboard,
            Capability::Tool => host::tool,
            Capability::Storage => host::storage,
            Capability::Env => host::env,
        };
        #[allow(unsafe_code)]
        // SAFETY: the pointer and length describe `request`, valid for the call.
        let len = unsafe { f(request.as_ptr(), request.len()) };
        let len = usize::try_from(len).map_err(|_| format!("{import}: the host answered {len}"))?;
        let mut answer = vec![0u8; len];
        #[allow(unsafe_code)]
        // SAFETY: `answer` is writable for `len` bytes during the call.
        let copied = unsafe { host::result(answer.as_mut_ptr(), len) };
        if copied < 0 || copied as usize != len {
            return Err(format!("{import}: the host's answer could not be fetched"));
        }
        String::from_utf8(answer).map_err(|_| format!("{import}: the answer is not UTF-8"))
    }
}

#[cfg(not(feature = "capabilities"))]
mod capabilities {
    /// Without the capability imports every call answers `unavailable`.
    pub fn call(import: &str, _request: &str) -> Result<String, String> {
        Ok(serde_json::json!({"error": {
            "code": aisa_abi::ErrorCode::Unavailable.as_str(),
            "message": format!("this runtime was built without the '{import}' host capability"),
        }})
        .to_string())
    }
}
