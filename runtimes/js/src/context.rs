//! The `context` an action receives, built from native functions.
//!
//! It is built in Rust rather than by a JS prelude because a fresh QuickJS runtime is
//! made for every action and parsing even a few kilobytes of JS costs close to a
//! millisecond in the sandbox; creating these objects costs microseconds.
//!
//! No closure here holds a JS value: QuickJS's garbage collector cannot see into Rust
//! closures, so a captured object would never be freed (and QuickJS checks for leaks
//! when the runtime is dropped). State lives in Rust (`Rc<Cell<…>>`) or on `this`.

use std::cell::Cell;
use std::rc::Rc;

use aisa_guest::Level;
use rquickjs::function::{Opt, Rest, This};
use rquickjs::{Coerced, Ctx, Exception, Function, Object, Promise, Result, Symbol, Value};

use crate::guest::{ai_generate, ai_next, capability_call};

/// Builds `context` for one action; the exports of `tools.js` (its module namespace)
/// join the built-in tools.
pub fn make<'js>(ctx: &Ctx<'js>, tools_js: Option<&Object<'js>>) -> Result<Object<'js>> {
    let context = Object::new(ctx.clone())?;
    context.set(
        "emit",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, text: Opt<Value<'js>>| {
            let text = text.0.unwrap_or_else(|| Value::new_undefined(ctx.clone()));
            aisa_guest::emit(&show(&ctx, &text));
        })?,
    )?;
    let ai = Object::new(ctx.clone())?;
    ai.set("generateText", Function::new(ctx.clone(), generate_text)?)?;
    context.set("ai", freeze(ctx, ai)?)?;
    context.set("tools", freeze(ctx, tools(ctx, tools_js)?)?)?;
    context.set("storage", freeze(ctx, storage(ctx)?)?)?;
    context.set("console", console(ctx)?)?;
    // `env` is asked of the host on first use, then kept as a plain property.
    let descriptor = Object::new(ctx.clone())?;
    descriptor.set("enumerable", true)?;
    descriptor.set("configurable", true)?;
    descriptor.set(
        "get",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, this: This<Object<'js>>| {
            let env = call(&ctx, "env", "get", Object::new(ctx.clone())?)?;
            let env = match env.as_object() {
                Some(o) => freeze(&ctx, o.clone())?.into_value(),
                None => env,
            };
            let fixed = Object::new(ctx.clone())?;
            fixed.set("value", env.clone())?;
            fixed.set("enumerable", true)?;
            object_fn(&ctx, "defineProperty")?.call::<_, Value>((this.0, "env", fixed))?;
            Ok::<_, rquickjs::Error>(env)
        })?,
    )?;
    object_fn(ctx, "defineProperty")?.call::<_, Value>((context.clone(), "env", descriptor))?;
    Ok(context)
}

/// The console object (also set as the global `console`): each method writes its
/// arguments, space-separated, to the node's log.
pub fn console<'js>(ctx: &Ctx<'js>) -> Result<Object<'js>> {
    let console = Object::new(ctx.clone())?;
    for (name, level) in [
        ("debug", Level::Debug),
        ("log", Level::Info),
        ("info", Level::Info),
        ("warn", Level::Warn),
        ("error", Level::Error),
    ] {
        console.set(
            name,
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
                let text: Vec<String> = args.0.iter().map(|v| show(&ctx, v)).collect();
                aisa_guest::log(level, &text.join(" "));
            })?,
        )?;
    }
    freeze(ctx, console)
}

/// A value as text: strings as they are, errors with their stack, others as JSON (or
/// `String(value)` when JSON has no form for them).
pub fn show<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(s) = value.as_string() {
        return s.to_string().unwrap_or_default();
    }
    if let Some(e) = value
        .as_object()
        .and_then(|o| Exception::from_object(o.clone()))
    {
        return describe_exception(&e);
    }
    if let Ok(Some(json)) = ctx.json_stringify(value.clone())
        && let Ok(json) = json.to_string()
    {
        return json;
    }
    value
        .get::<Coerced<String>>()
        .map(|c| c.0)
        .unwrap_or_default()
}

/// `Name: message` and the stack, for failure reports.
pub fn describe_exception(e: &Exception<'_>) -> String {
    let name: Option<String> = e.get("name").ok();
    let mut text = format!(
        "{}: {}",
        name.unwrap_or_else(|| "Error".to_owned()),
        e.message().unwrap_or_default()
    );
    if let Some(stack) = e.stack().filter(|s| !s.trim().is_empty()) {
        text.push('\n');
        text.push_str(stack.trim_end());
    }
    text
}

fn object_fn<'js>(ctx: &Ctx<'js>, name: &str) -> Result<Function<'js>> {
    ctx.globals().get::<_, Object>("Object")?.get(name)
}

fn freeze<'js>(ctx: &Ctx<'js>, object: Object<'js>) -> Result<Object<'js>> {
    object_fn(ctx, "freeze")?.call((object,))
}

/// One capability call (an `aisapp_v1` capability import, docs/guest-abi.md). The
/// answer's `ok` value, or an `Error` thrown with the call, the code and the host's
/// message (`code` set to the code).
fn call<'js>(ctx: &Ctx<'js>, import: &str, op: &str, args: Object<'js>) -> Result<Value<'js>> {
    args.set("op", op)?;
    let request = match ctx.json_stringify(args)? {
        Some(s) => s.to_string()?,
        None => format!("{{\"op\":\"{op}\"}}"),
    };
    let answer =
        capability_call(import, &request).map_err(|e| Exception::throw_message(ctx, &e))?;
    let answer = ctx.json_parse(answer)?;
    let Some(answer) = answer.as_object() else {
        return Err(Exception::throw_message(
            ctx,
            &format!("{import}.{op}: the host's answer is not an object"),
        ));
    };
    if let Some(error) = answer.get::<_, Option<Object>>("error")? {
        let code = error
            .get::<_, Option<String>>("code")?
            .unwrap_or_else(|| "failed".to_owned());
        let message = error
            .get::<_, Option<String>>("message")?
            .unwrap_or_else(|| "the host refused".to_owned());
        let exception =
            Exception::from_message(ctx.clone(), &format!("{import}.{op}: {code}: {message}"))?;
        exception.set("code", code)?;
        return Err(ctx.throw(exception.into_value()));
    }
    answer.get("ok")
}

/// A promise already settled with `result` (a thrown exception becomes the rejection).
fn settle<'js>(ctx: &Ctx<'js>, result: Result<Value<'js>>) -> Result<Promise<'js>> {
    let (promise, resolve, reject) = ctx.promise()?;
    match result {
        Ok(value) => resolve.call::<_, ()>((value,))?,
        Err(rquickjs::Error::Exception) => reject.call::<_, ()>((ctx.catch(),))?,
        Err(e) => return Err(e),
    }
    Ok(promise)
}

/// Sets `object[name]` to an async function: `f`'s result (or exception) as a promise.
fn set_async<'js, F>(ctx: &Ctx<'js>, object: &Object<'js>, name: &str, f: F) -> Result<()>
where
    F: Fn(&Ctx<'js>, &[Value<'js>]) -> Result<Value<'js>> + 'js,
{
    object.set(
        name,
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            settle(&ctx, f(&ctx, &args.0))
        })?,
    )
}

/// `String(args[i])` (so a missing argument is "undefined", as in JS).
fn text_arg<'js>(ctx: &Ctx<'js>, args: &[Value<'js>], i: usize) -> Result<String> {
    match args.get(i) {
        Some(v) => Ok(v.get::<Coerced<String>>()?.0),
        None => Ok(Value::new_undefined(ctx.clone())
            .get::<Coerced<String>>()?
            .0),
    }
}

/// `args[i]` when it is an object.
fn object_arg<'js>(args: &[Value<'js>], i: usize) -> Option<Object<'js>> {
    args.get(i).and_then(|v| v.as_object()).cloned()
}

fn defined<'js>(object: &Object<'js>, key: &str) -> Result<Option<Value<'js>>> {
    let v: Value = object.get(key)?;
    Ok((!v.is_undefined()).then_some(v))
}

/// A request object `{key: String(args[i]), …}`.
fn request<'js>(ctx: &Ctx<'js>, args: &[Value<'js>], keys: &[&str]) -> Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    for (i, key) in keys.iter().enumerate() {
        object.set(*key, text_arg(ctx, args, i)?)?;
    }
    Ok(object)
}

fn tools<'js>(ctx: &Ctx<'js>, tools_js: Option<&Object<'js>>) -> Result<Object<'js>> {
    let tools = Object::new(ctx.clone())?;
    set_async(ctx, &tools, "readFile", |ctx, args| {
        call(ctx, "fs", "read", request(ctx, args, &["path"])?)
    })?;
    set_async(ctx, &tools, "readFileBase64", |ctx, args| {
        call(ctx, "fs", "read_base64", request(ctx, args, &["path"])?)
    })?;
    set_async(ctx, &tools, "writeFile", |ctx, args| {
        call(
            ctx,
            "fs",
            "write",
            request(ctx, args, &["path", "content"])?,
        )?;
        Ok(Value::new_undefined(ctx.clone()))
    })?;
    set_async(ctx, &tools, "listDir", |ctx, args| {
        call(ctx, "fs", "list", request(ctx, args, &["path"])?)
    })?;
    set_async(ctx, &tools, "pdfText", |ctx, args| {
        call(ctx, "fs", "pdf_text", request(ctx, args, &["path"])?)
    })?;
    set_async(ctx, &tools, "fetch", |ctx, args| {
        let req = request(ctx, args, &["url"])?;
        if let Some(options) = object_arg(args, 1) {
            if let Some(method) = defined(&options, "method")? {
                req.set("method", method.get::<Coerced<String>>()?.0)?;
            }
            if let Some(headers) = defined(&options, "headers")? {
                req.set("headers", headers)?;
            }
            if let Some(body) = defined(&options, "body")? {
                let body = match body.as_string() {
                    Some(s) => s.to_string()?,
                    None => show(ctx, &body),
                };
                req.set("body", body)?;
            }
        }
        call(ctx, "http", "fetch", req)
    })?;
    set_async(ctx, &tools, "parseCsv", |ctx, args| {
        let req = request(ctx, args, &["text"])?;
        if let Some(options) = object_arg(args, 1) {
            if let Some(delimiter) = defined(&options, "delimiter")? {
                req.set("delimiter", delimiter.get::<Coerced<String>>()?.0)?;
            }
            let headers = match defined(&options, "has_headers")? {
                Some(v) => Some(v),
                None => defined(&options, "hasHeaders")?,
            };
            if let Some(headers) = headers {
                req.set("has_headers", headers.get::<Coerced<bool>>()?.0)?;
            }
        }
        call(ctx, "tool", "csv_parse", req)
    })?;
    set_async(ctx, &tools, "readClipboard", |ctx, _| {
        call(ctx, "clipboard", "read", Object::new(ctx.clone())?)
    })?;
    set_async(ctx, &tools, "writeClipboard", |ctx, args| {
        call(ctx, "clipboard", "write", request(ctx, args, &["text"])?)?;
        Ok(Value::new_undefined(ctx.clone()))
    })?;
    if let Some(namespace) = tools_js {
        for name in namespace.keys::<String>() {
            let name = name?;
            let value: Value = namespace.get(name.as_str())?;
            tools.set(name, value)?;
        }
    }
    Ok(tools)
}

fn storage<'js>(ctx: &Ctx<'js>) -> Result<Object<'js>> {
    let storage = Object::new(ctx.clone())?;
    set_async(ctx, &storage, "get", |ctx, args| {
        let value = call(ctx, "storage", "get", request(ctx, args, &["key"])?)?;
        Ok(if value.is_undefined() {
            Value::new_null(ctx.clone())
        } else {
            value
        })
    })?;
    set_async(ctx, &storage, "set", |ctx, args| {
        let req = request(ctx, args, &["key"])?;
        let value = args
            .get(1)
            .cloned()
            .unwrap_or_else(|| Value::new_null(ctx.clone()));
        req.set("value", value)?;
        call(ctx, "storage", "set", req)?;
        Ok(Value::new_undefined(ctx.clone()))
    })?;
    set_async(ctx, &storage, "delete", |ctx, args| {
        call(ctx, "storage", "delete", request(ctx, args, &["key"])?)?;
        Ok(Value::new_undefined(ctx.clone()))
    })?;
    set_async(ctx, &storage, "keys", |ctx, _| {
        call(ctx, "storage", "keys", Object::new(ctx.clone())?)
    })?;
    Ok(storage)
}

/// `ai.generateText({prompt, system?, max_tokens?})` (or a prompt string): starts the
/// generation and returns an async iterator of its text.
fn generate_text<'js>(ctx: Ctx<'js>, request: Opt<Value<'js>>) -> Result<Object<'js>> {
    let usage = "ai.generateText needs {prompt: string, system?: string, max_tokens?: number}";
    let request = request
        .0
        .unwrap_or_else(|| Value::new_undefined(ctx.clone()));
    let mut body = serde_json::Map::new();
    if let Some(prompt) = request.as_string() {
        body.insert("prompt".into(), prompt.to_string()?.into());
    } else if let Some(object) = request.as_object() {
        let prompt: Value = object.get("prompt")?;
        let Some(prompt) = prompt.as_string() else {
            return Err(Exception::throw_type(&ctx, usage));
        };
        body.insert("prompt".into(), prompt.to_string()?.into());
        if let Some(system) = defined(object, "system")? {
            body.insert("system".into(), system.get::<Coerced<String>>()?.0.into());
        }
        let max_tokens = match defined(object, "max_tokens")? {
            Some(v) => Some(v),
            None => defined(object, "maxTokens")?,
        };
        if let Some(max_tokens) = max_tokens {
            let n = max_tokens.get::<Coerced<f64>>()?.0;
            if n.is_finite() && n >= 1.0 {
                body.insert("max_tokens".into(), (n.min(u32::MAX as f64) as u64).into());
            }
        }
    } else {
        return Err(Exception::throw_type(&ctx, usage));
    }
    let handle = ai_generate(&ctx, &serde_json::Value::Object(body).to_string())?;

    let done = Rc::new(Cell::new(false));
    let iterator = Object::new(ctx.clone())?;
    let finished = done.clone();
    iterator.set(
        "next",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            let step = if finished.get() {
                Ok(None)
            } else {
                ai_next(&ctx, handle)
            };
            let step = step.and_then(|text| {
                if text.is_none() {
                    finished.set(true);
                }
                step_result(&ctx, text)
            });
            settle(&ctx, step)
        })?,
    )?;
    iterator.set(
        "return",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            done.set(true);
            settle(&ctx, step_result(&ctx, None))
        })?,
    )?;
    iterator.set(
        Symbol::async_iterator(ctx.clone()),
        Function::new(ctx.clone(), |this: This<Object<'js>>| this.0)?,
    )?;
    Ok(iterator)
}

/// An iterator result: `{value: text, done: false}`, or `{value: undefined, done: true}`.
fn step_result<'js>(ctx: &Ctx<'js>, text: Option<String>) -> Result<Value<'js>> {
    let result = Object::new(ctx.clone())?;
    result.set("done", text.is_none())?;
    match text {
        Some(text) => result.set("value", text)?,
        None => result.set("value", Value::new_undefined(ctx.clone()))?,
    }
    Ok(result.into_value())
}
