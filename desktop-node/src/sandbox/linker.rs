//! The host functions a guest imports, linked from the contract's import table
//! (`aisa_abi::IMPORTS`): every import of the table is defined, nothing else is, and
//! [`build`] checks each definition's wasm signature against the table before the
//! sandbox accepts the linker.

use std::sync::Arc;

use aisa_abi::imports::{Capability, EXPORT_MEMORY, IMPORTS, Import, MODULE};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wasmtime::{Caller, Engine, Linker, Module, StoreLimits};

use super::ActionError;
use crate::ai::{AiProvider, GenerateRequest, TextStream};
use crate::host::{self, CallContext};

/// What the host keeps per action.
pub struct HostState {
    pub(super) limits: StoreLimits,
    pub(super) output: mpsc::Sender<String>,
    pub(super) output_left: usize,
    pub(super) ai: Arc<dyn AiProvider>,
    pub(super) ai_streams: Vec<Option<TextStream>>,
    /// Text received from the model but not yet handed to the guest.
    pub(super) ai_pending: Vec<u8>,
    /// The first failure seen: the guest's own message or a host-side error.
    pub(super) failure: Option<ActionError>,
    /// What host API calls know about this action.
    pub(super) call: CallContext,
    /// The answer of the last host API call, until the next call.
    pub(super) answer: Option<Vec<u8>>,
}

/// The linker of the host API: every import of the contract, each checked against its
/// signature in the table.
pub(super) fn build(engine: &Engine) -> Result<Linker<HostState>, ActionError> {
    let mut linker = Linker::new(engine);
    for import in IMPORTS {
        define(&mut linker, import).map_err(|e| ActionError::Load(e.to_string()))?;
    }
    check_against_contract(engine, &linker)?;
    Ok(linker)
}

/// A module that imports every function of the table with the table's signature links
/// only if the linker defines each of them with that signature.
fn check_against_contract(engine: &Engine, linker: &Linker<HostState>) -> Result<(), ActionError> {
    let module = Module::new(engine, contract_wat(IMPORTS))
        .map_err(|e| ActionError::Load(format!("the import table does not compile: {e:#}")))?;
    linker.instantiate_pre(&module).map(drop).map_err(|e| {
        ActionError::Load(format!(
            "the host API does not match the aisa_abi import table: {e:#}"
        ))
    })
}

/// A text module importing each of `imports` with its signature.
fn contract_wat(imports: &[Import]) -> String {
    let mut wat = String::from("(module");
    for import in imports {
        wat.push_str(&format!(
            "\n  (import \"{MODULE}\" \"{}\" (func (param{}) (result{})))",
            import.name,
            " i32".repeat(import.params.len()),
            " i32".repeat(import.results.len()),
        ));
    }
    wat.push(')');
    wat
}

fn guest_bytes(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export(EXPORT_MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer out of bounds"))
}

fn guest_string(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<String> {
    String::from_utf8(guest_bytes(caller, ptr, len)?)
        .map_err(|_| wasmtime::Error::msg("guest string is not UTF-8"))
}

/// Records a host-side failure and returns the trap that ends the guest.
fn fail_with(caller: &mut Caller<'_, HostState>, err: ActionError) -> wasmtime::Error {
    let message = err.to_string();
    caller.data_mut().failure.get_or_insert(err);
    wasmtime::Error::msg(message)
}

/// Defines the host function for one import of the contract.
fn define(linker: &mut Linker<HostState>, import: &Import) -> wasmtime::Result<()> {
    match import.name {
        "emit" => {
            linker.func_wrap_async(
                MODULE,
                "emit",
                |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
                    Box::new(async move {
                        let text = guest_string(&mut caller, ptr, len)?;
                        let state = caller.data_mut();
                        if text.len() > state.output_left {
                            return Err(fail_with(
                                &mut caller,
                                ActionError::Failed("output limit exceeded".into()),
                            ));
                        }
                        state.output_left -= text.len();
                        let output = state.output.clone();
                        if output.send(text).await.is_err() {
                            return Err(fail_with(
                                &mut caller,
                                ActionError::Failed(
                                    "output closed: the requester went away".into(),
                                ),
                            ));
                        }
                        Ok(())
                    })
                },
            )?;
        }
        "ai_generate" => {
            linker.func_wrap_async(
                MODULE,
                "ai_generate",
                |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
                    Box::new(async move {
                        if !caller.data().call.grants.ai {
                            return Err(fail_with(
                                &mut caller,
                                ActionError::Failed("permission denied: ai".into()),
                            ));
                        }
                        let request: aisa_abi::AiRequest =
                            match serde_json::from_slice(&guest_bytes(&mut caller, ptr, len)?) {
                                Ok(r) => r,
                                Err(e) => {
                                    return Err(fail_with(
                                        &mut caller,
                                        ActionError::Failed(format!(
                                            "bad ai_generate request: {e}"
                                        )),
                                    ));
                                }
                            };
                        let request = GenerateRequest {
                            prompt: request.prompt,
                            system: request.system,
                            max_tokens: request.max_tokens,
                        };
                        let ai = caller.data().ai.clone();
                        match ai.generate(request).await {
                            Ok(stream) => {
                                let streams = &mut caller.data_mut().ai_streams;
                                streams.push(Some(stream));
                                Ok((streams.len() - 1) as i32)
                            }
                            Err(e) => Err(fail_with(&mut caller, ActionError::Ai(e))),
                        }
                    })
                },
            )?;
        }
        "ai_next" => {
            linker.func_wrap_async(
                MODULE,
                "ai_next",
                |mut caller: Caller<'_, HostState>, (handle, buf, cap): (i32, i32, i32)| {
                    Box::new(async move {
                        let cap = cap.max(0) as usize;
                        if caller.data().ai_pending.is_empty() {
                            let Some(Some(stream)) =
                                caller.data_mut().ai_streams.get_mut(handle as usize)
                            else {
                                return Err(fail_with(
                                    &mut caller,
                                    ActionError::Failed(format!("ai_next: no stream {handle}")),
                                ));
                            };
                            match stream.next().await {
                                None => {
                                    caller.data_mut().ai_streams[handle as usize] = None;
                                    return Ok(0);
                                }
                                Some(Err(e)) => {
                                    return Err(fail_with(&mut caller, ActionError::Ai(e)));
                                }
                                Some(Ok(text)) => caller.data_mut().ai_pending = text.into_bytes(),
                            }
                        }
                        let pending = std::mem::take(&mut caller.data_mut().ai_pending);
                        let take = utf8_prefix_len(&pending, cap);
                        if take == 0 {
                            caller.data_mut().ai_pending = pending;
                            return Err(fail_with(
                                &mut caller,
                                ActionError::Failed("ai_next: buffer too small".into()),
                            ));
                        }
                        let memory = caller
                            .get_export(EXPORT_MEMORY)
                            .and_then(|e| e.into_memory())
                            .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
                        memory
                            .write(&mut caller, buf as u32 as usize, &pending[..take])
                            .map_err(|_| wasmtime::Error::msg("guest pointer out of bounds"))?;
                        caller.data_mut().ai_pending = pending[take..].to_vec();
                        Ok(take as i32)
                    })
                },
            )?;
        }
        "log" => {
            linker.func_wrap(
                MODULE,
                "log",
                |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                    let text = guest_string(&mut caller, ptr, len)?;
                    let app = caller.data().call.app_id.as_str();
                    match aisa_abi::LogLevel::from_i32(level) {
                        aisa_abi::LogLevel::Debug => tracing::debug!(app, "{text}"),
                        aisa_abi::LogLevel::Info => tracing::info!(app, "{text}"),
                        aisa_abi::LogLevel::Warn => tracing::warn!(app, "{text}"),
                        aisa_abi::LogLevel::Error => tracing::error!(app, "{text}"),
                    }
                    Ok(())
                },
            )?;
        }
        "fail" => {
            linker.func_wrap(
                MODULE,
                "fail",
                |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
                    let text = guest_string(&mut caller, ptr, len)?;
                    caller
                        .data_mut()
                        .failure
                        .get_or_insert(ActionError::Failed(text));
                    Ok(())
                },
            )?;
        }
        "result" => {
            linker.func_wrap(
                MODULE,
                "result",
                |mut caller: Caller<'_, HostState>, buf: i32, cap: i32| -> wasmtime::Result<i32> {
                    let Some(answer) = caller.data_mut().answer.take() else {
                        return Ok(-1);
                    };
                    let fits = cap >= 0 && cap as usize >= answer.len();
                    let written = if fits {
                        let memory = caller
                            .get_export(EXPORT_MEMORY)
                            .and_then(|e| e.into_memory())
                            .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
                        memory
                            .write(&mut caller, buf as u32 as usize, &answer)
                            .map_err(|_| {
                                wasmtime::Error::msg("result: guest pointer out of bounds")
                            })?;
                        answer.len() as i32
                    } else {
                        -1
                    };
                    // Kept until the next call, so a guest may ask again with a larger buffer.
                    caller.data_mut().answer = Some(answer);
                    Ok(written)
                },
            )?;
        }
        name => match import.capability() {
            Some(capability) => define_capability(linker, capability)?,
            None => {
                return Err(wasmtime::Error::msg(format!(
                    "the host has no implementation of {MODULE}::{name}"
                )));
            }
        },
    }
    Ok(())
}

/// Defines one capability import: a JSON request in, its answer kept for `result`.
fn define_capability(
    linker: &mut Linker<HostState>,
    capability: Capability,
) -> wasmtime::Result<()> {
    let name = capability.import_name();
    linker.func_wrap_async(
        MODULE,
        name,
        move |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                caller.data_mut().answer = None;
                // The input cap, before a byte is copied or parsed.
                if len > 0 && len as usize > host::MAX_REQUEST_BYTES {
                    let bytes = host::answer_bytes(Err(host::HostError::too_large(format!(
                        "a request of {len} bytes; requests are limited to {}",
                        host::MAX_REQUEST_BYTES
                    ))));
                    let n = bytes.len() as i32;
                    caller.data_mut().answer = Some(bytes);
                    return Ok(n);
                }
                let request = guest_string(&mut caller, ptr, len)?;
                let request: serde_json::Value = serde_json::from_str(&request)
                    .map_err(|e| wasmtime::Error::msg(format!("{name}: the request is not JSON: {e}")))?;
                let ctx = caller.data().call.clone();
                let op = request
                    .get("op")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let answer = host::call(capability, &ctx, request).await;
                match &answer {
                    Ok(_) => tracing::debug!(app = %ctx.app_id, import = name, op, "host call"),
                    Err(err) => tracing::info!(app = %ctx.app_id, import = name, op, code = err.code.as_str(), message = %err.message, "host call refused or failed"),
                }
                let bytes = host::answer_bytes(answer);
                let len = bytes.len() as i32;
                caller.data_mut().answer = Some(bytes);
                Ok(len)
            })
        },
    )?;
    Ok(())
}

/// The longest prefix of `bytes` no longer than `cap` that ends on a UTF-8 boundary.
fn utf8_prefix_len(bytes: &[u8], cap: usize) -> usize {
    if bytes.len() <= cap {
        return bytes.len();
    }
    let mut end = cap;
    while end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linker_defines_exactly_the_contract() {
        let engine = Engine::default();
        let linker = build(&engine).expect("the host API matches the table");
        // A host function with another signature than the table's is caught.
        let mut wrong: Linker<HostState> = Linker::new(&engine);
        for import in IMPORTS.iter().filter(|i| i.name != "emit") {
            define(&mut wrong, import).expect("define");
        }
        wrong
            .func_wrap(MODULE, "emit", |_: Caller<'_, HostState>, _: i32| {})
            .expect("define");
        let err = check_against_contract(&engine, &wrong)
            .unwrap_err()
            .to_string();
        assert!(err.contains("emit"), "{err}");
        // And a missing one.
        let mut missing: Linker<HostState> = Linker::new(&engine);
        for import in IMPORTS.iter().filter(|i| i.name != "result") {
            define(&mut missing, import).expect("define");
        }
        let err = check_against_contract(&engine, &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("result"), "{err}");
        drop(linker);
    }

    #[test]
    fn an_import_the_host_cannot_implement_is_refused() {
        let mut linker: Linker<HostState> = Linker::new(&Engine::default());
        let unknown = Import {
            name: "spawn",
            params: &[],
            results: &[],
        };
        let err = define(&mut linker, &unknown).unwrap_err().to_string();
        assert!(err.contains("spawn"), "{err}");
    }

    #[test]
    fn utf8_prefix_never_splits_a_character() {
        let s = "aé☃".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(utf8_prefix_len(s, 100), 6);
        assert_eq!(utf8_prefix_len(s, 2), 1);
        assert_eq!(utf8_prefix_len(s, 3), 3);
        assert_eq!(utf8_prefix_len(s, 5), 3);
        assert_eq!(utf8_prefix_len(s, 0), 0);
    }
}
