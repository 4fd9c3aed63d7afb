//! The `aisapp_v1` import module: every function a guest may import, with its wasm
//! signature and the permission it needs, and the exports the host calls.
//!
//! The list is written once, in [`with_import_list!`](crate::with_import_list); it makes
//! both the table the checker and the host's linker read ([`IMPORTS`]) and the guests'
//! `extern` block ([`guest_imports!`](crate::guest_imports)), so the two cannot drift.
//! On wasm32 every parameter (pointer, length, handle, level) is an `i32`, and so is
//! every result.

use crate::permissions::Permissions;

/// The one list of `aisapp_v1` imports, handed to `$callback` as
/// `"aisapp_v1"; name(arg: Type, …) [-> i32]; …` with the guest-side Rust types.
///
/// Every other description of the ABI is made from this list (see the module docs).
/// Adding an import here adds it to [`IMPORTS`] and to the guests' `extern` block; its
/// permission is named in [`Import::permission`]'s table below.
#[doc(hidden)]
#[macro_export]
macro_rules! with_import_list {
    ($callback:path) => {
        $callback! {
            "aisapp_v1";
            emit(ptr: *const u8, len: usize);
            ai_generate(ptr: *const u8, len: usize) -> i32;
            ai_next(handle: i32, buf: *mut u8, cap: usize) -> i32;
            log(level: i32, ptr: *const u8, len: usize);
            fail(ptr: *const u8, len: usize);
            fs(ptr: *const u8, len: usize) -> i32;
            http(ptr: *const u8, len: usize) -> i32;
            clipboard(ptr: *const u8, len: usize) -> i32;
            tool(ptr: *const u8, len: usize) -> i32;
            storage(ptr: *const u8, len: usize) -> i32;
            env(ptr: *const u8, len: usize) -> i32;
            result(buf: *mut u8, cap: usize) -> i32;
        }
    };
}

/// Declares the `aisapp_v1` imports as an `unsafe extern "C"` block of `pub fn`s (in the
/// module where it is invoked), for a guest written in Rust. Only the functions a guest
/// calls end up imported by its module.
///
/// ```ignore
/// mod host {
///     aisa_abi::guest_imports!();
/// }
/// ```
#[macro_export]
macro_rules! guest_imports {
    () => {
        $crate::with_import_list!($crate::__guest_extern_block);
    };
}

/// `guest_imports!`'s expansion (not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_extern_block {
    ($module:tt; $( $name:ident ( $( $arg:ident : $ty:ty ),* ) $( -> $ret:ty )? ; )*) => {
        #[link(wasm_import_module = $module)]
        unsafe extern "C" {
            $(
                #[doc = concat!("The host import `", $module, "::", stringify!($name), "`.")]
                pub fn $name( $( $arg : $ty ),* ) $( -> $ret )?;
            )*
        }
    };
}

/// `IMPORTS`' expansion (not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! __import_table {
    ($module:tt; $( $name:ident ( $( $arg:ident : $ty:ty ),* ) $( -> $ret:ty )? ; )*) => {
        /// The host ABI's import module name.
        pub const MODULE: &str = $module;

        /// Every import of [`MODULE`], in the order of `docs/guest-abi.md`.
        pub const IMPORTS: &[Import] = &[
            $(
                Import {
                    name: stringify!($name),
                    params: &[ $( $crate::__i32!($arg) ),* ],
                    results: &[ $( $crate::__i32!($ret) )? ],
                }
            ),*
        ];
    };
}

/// Every guest-side parameter and result is an `i32` on wasm32 (not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! __i32 {
    ($_:tt) => {
        $crate::imports::ValType::I32
    };
}

with_import_list!(crate::__import_table);

/// A wasm value type of the ABI (all of them are `i32` today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValType {
    /// A 32-bit integer: pointers, lengths, handles, levels, statuses.
    I32,
}

/// One import of [`MODULE`]: its name and wasm signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Import {
    /// The function's name in [`MODULE`].
    pub name: &'static str,
    /// Its parameter types.
    pub params: &'static [ValType],
    /// Its result types (none or one `i32`).
    pub results: &'static [ValType],
}

impl Import {
    /// The permission of `permissions.json` a module needs to import it; `None` for the
    /// imports every app may use (`emit`, `log`, `fail`, `tool`, `storage`, `env`,
    /// `result`).
    pub fn permission(&self) -> Option<Permission> {
        Permission::for_import(self.name)
    }

    /// The capability the import reaches, for the JSON-request imports (`fs`, `http`,
    /// `clipboard`, `tool`, `storage`, `env`).
    pub fn capability(&self) -> Option<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.import_name() == self.name)
    }
}

/// The import called `name`, if [`MODULE`] has one.
pub fn import(name: &str) -> Option<&'static Import> {
    IMPORTS.iter().find(|i| i.name == name)
}

/// The names of every import, for messages.
pub fn import_names() -> Vec<&'static str> {
    IMPORTS.iter().map(|i| i.name).collect()
}

/// A permission of `permissions.json` that an import needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `"ai": true`: `ai_generate`, `ai_next`.
    Ai,
    /// A `filesystem` read or write scope: `fs`.
    Filesystem,
    /// A `network` host: `http`.
    Network,
    /// `"clipboard": true`: `clipboard`.
    Clipboard,
}

impl Permission {
    /// The capability→permission map: which permission the import `name` needs.
    pub fn for_import(name: &str) -> Option<Permission> {
        Some(match name {
            "ai_generate" | "ai_next" => Permission::Ai,
            "fs" => Permission::Filesystem,
            "http" => Permission::Network,
            "clipboard" => Permission::Clipboard,
            _ => return None,
        })
    }

    /// The key of `permissions.json` that grants it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Ai => "ai",
            Permission::Filesystem => "filesystem",
            Permission::Network => "network",
            Permission::Clipboard => "clipboard",
        }
    }

    /// Whether `permissions` asks for it (a filesystem read or write scope, a network
    /// host, or the flag).
    pub fn asked_by(self, permissions: &Permissions) -> bool {
        match self {
            Permission::Ai => permissions.ai,
            Permission::Filesystem => permissions.uses_filesystem(),
            Permission::Network => !permissions.network.is_empty(),
            Permission::Clipboard => permissions.clipboard,
        }
    }
}

/// One capability import: a JSON request `{"op", …}` in, an answer
/// (`crate::answer`) fetched with `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `fs`.
    Fs,
    /// `http`.
    Http,
    /// `clipboard`.
    Clipboard,
    /// `tool`.
    Tool,
    /// `storage`.
    Storage,
    /// `env`.
    Env,
}

impl Capability {
    /// Every capability import.
    pub const ALL: [Capability; 6] = [
        Capability::Fs,
        Capability::Http,
        Capability::Clipboard,
        Capability::Tool,
        Capability::Storage,
        Capability::Env,
    ];

    /// The import's name in [`MODULE`].
    pub fn import_name(self) -> &'static str {
        match self {
            Capability::Fs => "fs",
            Capability::Http => "http",
            Capability::Clipboard => "clipboard",
            Capability::Tool => "tool",
            Capability::Storage => "storage",
            Capability::Env => "env",
        }
    }

    /// The permission it needs, if any ([`Permission::for_import`]).
    pub fn permission(self) -> Option<Permission> {
        Permission::for_import(self.import_name())
    }
}

/// What an export the host calls must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// A linear memory.
    Memory,
    /// A function with this signature.
    Func {
        /// Parameter types.
        params: &'static [ValType],
        /// Result types.
        results: &'static [ValType],
    },
}

impl ExportKind {
    /// `"memory"` or `"function"`, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Memory => "memory",
            ExportKind::Func { .. } => "function",
        }
    }
}

/// The guest's memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `aisapp_alloc(len) -> ptr`: a buffer for the input.
pub const EXPORT_ALLOC: &str = "aisapp_alloc";
/// `aisapp_run(ptr, len) -> status`: runs the action; non-zero is a failure.
pub const EXPORT_RUN: &str = "aisapp_run";

/// The exports the host calls, and what each must be.
pub const REQUIRED_EXPORTS: &[(&str, ExportKind)] = &[
    (EXPORT_MEMORY, ExportKind::Memory),
    (
        EXPORT_ALLOC,
        ExportKind::Func {
            params: &[ValType::I32],
            results: &[ValType::I32],
        },
    ),
    (
        EXPORT_RUN,
        ExportKind::Func {
            params: &[ValType::I32, ValType::I32],
            results: &[ValType::I32],
        },
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_import_once_with_its_signature() {
        assert_eq!(MODULE, "aisapp_v1");
        let names = import_names();
        assert_eq!(
            names,
            [
                "emit",
                "ai_generate",
                "ai_next",
                "log",
                "fail",
                "fs",
                "http",
                "clipboard",
                "tool",
                "storage",
                "env",
                "result"
            ]
        );
        let emit = import("emit").unwrap();
        assert_eq!((emit.params.len(), emit.results.len()), (2, 0));
        let next = import("ai_next").unwrap();
        assert_eq!((next.params.len(), next.results.len()), (3, 1));
        let log = import("log").unwrap();
        assert_eq!((log.params.len(), log.results.len()), (3, 0));
        assert!(import("wasi_fd_write").is_none());
        for capability in Capability::ALL {
            let i = import(capability.import_name()).unwrap();
            assert_eq!(i.capability(), Some(capability));
            assert_eq!(i.params, [ValType::I32, ValType::I32]);
            assert_eq!(i.results, [ValType::I32]);
        }
    }

    #[test]
    fn the_permission_map_covers_the_capability_imports() {
        let needs = |n: &str| import(n).unwrap().permission();
        assert_eq!(needs("ai_generate"), Some(Permission::Ai));
        assert_eq!(needs("ai_next"), Some(Permission::Ai));
        assert_eq!(needs("fs"), Some(Permission::Filesystem));
        assert_eq!(needs("http"), Some(Permission::Network));
        assert_eq!(needs("clipboard"), Some(Permission::Clipboard));
        for free in ["emit", "log", "fail", "tool", "storage", "env", "result"] {
            assert_eq!(needs(free), None, "{free}");
        }
        let mut p = Permissions::default();
        assert!(!Permission::Filesystem.asked_by(&p));
        p.filesystem.write.push("$DOCUMENTS".into());
        assert!(Permission::Filesystem.asked_by(&p));
        assert!(!Permission::Network.asked_by(&p));
    }

    // The guest-side extern block is made from the same list; this compiles it on the
    // host (declared, never called, so nothing is linked).
    #[allow(dead_code, unsafe_code)]
    mod declared {
        crate::guest_imports!();
    }
}
