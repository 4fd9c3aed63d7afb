//! Pre-initialized modules (the Wizer approach): run a guest's initialization once,
//! capture its linear memory, and rewrite the module so that its memory starts as that
//! image. wasmtime maps the image copy-on-write into each fresh instance, so every
//! action still gets its own instance, starting from the initialized state.
//!
//! Only memory is captured. That is enough for a guest whose initialization leaves its
//! globals as they were: a Rust guest's one mutable global is its shadow-stack pointer,
//! which a returning call restores, and it never changes its tables.

use std::time::{Duration, Instant};

use super::{ActionContext, ActionError, LoadedModule, Sandbox};

/// A wasm page.
const PAGE: usize = 64 << 10;

/// Zero bytes between two non-zero runs that still go in one data segment (a segment
/// costs a few bytes of header).
const MERGE_GAP: usize = 64;

impl Sandbox {
    /// Instantiates `module` (a fresh instance, as for an action of `ctx`), calls its
    /// export `init` (no parameters, no results) and returns the instance's linear
    /// memory afterwards. Blocks the calling thread: not for the guest threads or async
    /// code.
    pub fn memory_after(
        &self,
        module: &LoadedModule,
        ctx: &ActionContext,
        init: &str,
    ) -> Result<Vec<u8>, ActionError> {
        let deadline = Instant::now() + ctx.limits.timeout.min(Duration::from_secs(30));
        let (done, result) = std::sync::mpsc::channel();
        let task = self.pool.spawn({
            let (sandbox, module, ctx) = (self.clone(), module.clone(), ctx.clone());
            let init = init.to_owned();
            async move {
                let (tx, _rx) = tokio::sync::mpsc::channel(1);
                let _running = sandbox.ticker.guest_running();
                let mut store = sandbox.new_store(&ctx, tx, deadline);
                let captured = async {
                    let _slot =
                        sandbox.slots.acquire().await.map_err(|_| {
                            ActionError::Failed("the sandbox is shutting down".into())
                        })?;
                    let instance = module
                        .pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| super::run::trap(&mut store, e))?;
                    let init = instance
                        .get_typed_func::<(), ()>(&mut store, &init)
                        .map_err(|e| ActionError::Load(format!("no export {init}: {e}")))?;
                    init.call_async(&mut store, ())
                        .await
                        .map_err(|e| super::run::trap(&mut store, e))?;
                    let memory = instance
                        .get_memory(&mut store, aisa_abi::imports::EXPORT_MEMORY)
                        .ok_or_else(|| ActionError::Load("missing export memory".into()))?;
                    Ok(memory.data(&store).to_vec())
                }
                .await;
                let _ = done.send(captured);
            }
        });
        let result = result.recv().unwrap_or_else(|_| {
            Err(ActionError::Failed(
                "the sandbox stopped unexpectedly".into(),
            ))
        });
        drop(task);
        result
    }
}

/// `wasm` with its memory's initial contents replaced by `memory`, a snapshot of an
/// instance's linear memory (whole pages): the memory section's minimum becomes the
/// snapshot's page count, the data section its non-zero runs (active segments at
/// constant offsets, which wasmtime turns into a copy-on-write image), the data count
/// section follows. Every other section is kept byte for byte. A module whose data
/// segments are not all active segments of memory 0 at constant offsets (passive ones
/// could be used by `memory.init`), or with more than one memory, is refused.
pub fn with_memory_image(wasm: &[u8], memory: &[u8]) -> Result<Vec<u8>, String> {
    if !memory.len().is_multiple_of(PAGE) {
        return Err("the memory snapshot is not a whole number of pages".into());
    }
    let pages = (memory.len() / PAGE) as u64;
    let header = wasm.get(..8).ok_or("not a wasm module")?;
    if header != b"\0asm\x01\0\0\0" {
        return Err("not a wasm module (version 1)".into());
    }
    let segments = segments(memory);
    let mut out = header.to_vec();
    let mut at = 8;
    let (mut saw_memory, mut saw_data) = (false, false);
    while at < wasm.len() {
        let id = wasm[at];
        let mut cursor = at + 1;
        let size = leb(wasm, &mut cursor)? as usize;
        let body = wasm
            .get(cursor..cursor + size)
            .ok_or("a section runs past the end")?;
        let next = cursor + size;
        match id {
            5 => {
                saw_memory = true;
                push_section(&mut out, 5, &memory_section(body, pages)?);
            }
            11 => {
                saw_data = true;
                check_data_section(body)?;
                push_section(&mut out, 11, &data_section(memory, &segments));
            }
            12 => {
                let mut count = Vec::new();
                push_leb(&mut count, segments.len() as u64);
                push_section(&mut out, 12, &count);
            }
            _ => out.extend_from_slice(&wasm[at..next]),
        }
        at = next;
    }
    if !saw_memory || !saw_data {
        return Err("the module defines no memory or has no data section".into());
    }
    Ok(out)
}

/// The `(start, end)` byte ranges of `memory` that hold non-zero bytes, runs closer
/// than [`MERGE_GAP`] merged.
fn segments(memory: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < memory.len() {
        if memory[i] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < memory.len() && memory[i] != 0 {
            i += 1;
        }
        match runs.last_mut() {
            Some(last) if start - last.1 < MERGE_GAP => last.1 = i,
            _ => runs.push((start, i)),
        }
    }
    runs
}

fn memory_section(body: &[u8], pages: u64) -> Result<Vec<u8>, String> {
    let mut at = 0;
    if leb(body, &mut at)? != 1 {
        return Err("the module must define exactly one memory".into());
    }
    let flags = *body.get(at).ok_or("truncated memory section")?;
    at += 1;
    let min = leb(body, &mut at)?;
    let max = match flags {
        0 => None,
        1 => Some(leb(body, &mut at)?),
        _ => return Err("a shared or 64-bit memory cannot be snapshotted".into()),
    };
    if pages < min || max.is_some_and(|max| pages > max) {
        return Err("the memory snapshot does not fit the memory's limits".into());
    }
    let mut out = vec![1, flags];
    push_leb(&mut out, pages);
    if let Some(max) = max {
        push_leb(&mut out, max);
    }
    Ok(out)
}

/// Every segment is active, for memory 0, at an `i32.const` offset.
fn check_data_section(body: &[u8]) -> Result<(), String> {
    let mut at = 0;
    let count = leb(body, &mut at)?;
    for _ in 0..count {
        let (kind, op) = (body.get(at).copied(), body.get(at + 1).copied());
        if kind != Some(0) || op != Some(0x41) {
            return Err("a data segment is not active at a constant offset".into());
        }
        at += 2;
        leb(body, &mut at)?; // the offset (signed LEB128; skipping needs no sign)
        if body.get(at) != Some(&0x0b) {
            return Err("a data segment's offset is not a plain constant".into());
        }
        at += 1;
        let len = leb(body, &mut at)? as usize;
        at = at
            .checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or("truncated data segment")?;
    }
    Ok(())
}

fn data_section(memory: &[u8], segments: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segments.iter().map(|(s, e)| e - s + 12).sum::<usize>() + 5);
    push_leb(&mut out, segments.len() as u64);
    for &(start, end) in segments {
        out.extend_from_slice(&[0, 0x41]);
        push_sleb(&mut out, start as i64);
        out.push(0x0b);
        push_leb(&mut out, (end - start) as u64);
        out.extend_from_slice(&memory[start..end]);
    }
    out
}

fn push_section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    push_leb(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// An unsigned LEB128 at `*at` (advanced past it).
fn leb(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("truncated LEB128")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("LEB128 too long".into())
}

fn push_leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_sleb(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (memory (export "memory") 1) (data (i32.const 16) "ab")
    /// (func (export "f") (result i32) i32.const 16 i32.load8_u))`, by hand.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        push_section(&mut m, 1, &[1, 0x60, 0, 1, 0x7f]); // type: () -> i32
        push_section(&mut m, 3, &[1, 0]); // func 0 has type 0
        push_section(&mut m, 5, &[1, 0, 1]); // memory min 1
        push_section(
            &mut m,
            7,
            &[
                2, 6, b'm', b'e', b'm', b'o', b'r', b'y', 2, 0, 1, b'f', 0, 0,
            ],
        );
        push_section(&mut m, 10, &[1, 7, 0, 0x41, 16, 0x2d, 0, 0, 0x0b]);
        push_section(&mut m, 11, &[1, 0, 0x41, 16, 0x0b, 2, b'a', b'b']);
        m
    }

    #[test]
    fn the_image_replaces_the_data_and_the_memory_size() {
        let engine = wasmtime::Engine::default();
        wasmtime::Module::new(&engine, module()).expect("the hand-made module is valid");
        let mut memory = vec![0u8; 2 * PAGE];
        memory[16] = b'z';
        memory[PAGE + 300..PAGE + 303].copy_from_slice(b"xyz");
        memory[PAGE + 310] = 1; // within MERGE_GAP: same segment
        let image = with_memory_image(&module(), &memory).expect("rewrite");
        let compiled = wasmtime::Module::new(&engine, &image).expect("still valid");
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &compiled, &[]).expect("instance");
        let mem = instance.get_memory(&mut store, "memory").expect("memory");
        assert_eq!(
            mem.data(&store),
            &memory[..],
            "the memory starts as the image"
        );
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "f")
            .expect("f");
        assert_eq!(f.call(&mut store, ()).expect("call"), i32::from(b'z'));
        assert_eq!(segments(&memory), vec![(16, 17), (PAGE + 300, PAGE + 311)]);
    }

    #[test]
    fn modules_it_cannot_rewrite_are_refused() {
        assert!(with_memory_image(b"junk", &[0; PAGE]).is_err());
        assert!(
            with_memory_image(&module(), &[0; 100]).is_err(),
            "not whole pages"
        );
        let mut passive = module();
        let n = passive.len();
        // The data section's segment becomes passive (kind 1, no offset).
        passive.truncate(n - 10);
        push_section(&mut passive, 11, &[1, 1, 2, b'a', b'b']);
        let err = with_memory_image(&passive, &[0; PAGE]).expect_err("passive");
        assert!(err.contains("active"), "{err}");
        let mut sleb = Vec::new();
        push_sleb(&mut sleb, 70_000);
        assert_eq!(sleb, [0xf0, 0xa2, 0x04]);
    }
}
