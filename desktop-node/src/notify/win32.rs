//! The few Win32 calls the tray icon ([`super::tray_windows`]) and the toast's app id
//! ([`super::windows`]) make, declared by hand.
//!
//! Why not `windows-sys`, which is in the tree: the node's dependencies turn on its
//! `Win32_UI_Shell`, `Win32_System_Com` and `Win32_Foundation` features but not
//! `Win32_UI_WindowsAndMessaging` (windows, menus, messages) or `Win32_System_Registry`;
//! turning those on changes `windows-sys`'s features, so every crate that depends on it
//! (tokio, mio, socket2, quinn-udp, wasmtime…) is compiled again for Windows: minutes on
//! two cores in CI's cross check and gigabytes in the cross build's target folder, for
//! about twenty declarations. The layouts below are those of the Windows SDK headers for
//! 64-bit Windows (the node is x86_64 only on Windows); `NOTIFYICONDATAW`'s size is
//! checked at compile time.
//!
//! Not here: anything that needs COM objects (the shortcut's AppUserModelID is written
//! by the installer, packaging/windows/desktop-node.nsi).

#![allow(
    unsafe_code,
    non_snake_case,
    non_camel_case_types,
    clippy::upper_case_acronyms
)]

use std::ffi::c_void;

pub type HWND = *mut c_void;
pub type HMENU = *mut c_void;
pub type HICON = *mut c_void;
pub type HINSTANCE = *mut c_void;
pub type HKEY = *mut c_void;
pub type WPARAM = usize;
pub type LPARAM = isize;
pub type LRESULT = isize;
pub type BOOL = i32;
pub type WNDPROC = unsafe extern "system" fn(HWND, u32, WPARAM, LPARAM) -> LRESULT;

/// `WNDCLASSW`.
#[repr(C)]
pub struct WNDCLASSW {
    pub style: u32,
    pub lpfnWndProc: Option<WNDPROC>,
    pub cbClsExtra: i32,
    pub cbWndExtra: i32,
    pub hInstance: HINSTANCE,
    pub hIcon: HICON,
    pub hCursor: *mut c_void,
    pub hbrBackground: *mut c_void,
    pub lpszMenuName: *const u16,
    pub lpszClassName: *const u16,
}

/// `POINT`.
#[repr(C)]
#[derive(Default)]
pub struct POINT {
    pub x: i32,
    pub y: i32,
}

/// `MSG`.
#[repr(C)]
pub struct MSG {
    pub hwnd: HWND,
    pub message: u32,
    pub wParam: WPARAM,
    pub lParam: LPARAM,
    pub time: u32,
    pub pt: POINT,
}

/// `GUID`.
#[repr(C)]
pub struct GUID {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

/// `NOTIFYICONDATAW` (the Vista+ layout, with `guidItem` and `hBalloonIcon`).
#[repr(C)]
pub struct NOTIFYICONDATAW {
    pub cbSize: u32,
    pub hWnd: HWND,
    pub uID: u32,
    pub uFlags: u32,
    pub uCallbackMessage: u32,
    pub hIcon: HICON,
    pub szTip: [u16; 128],
    pub dwState: u32,
    pub dwStateMask: u32,
    pub szInfo: [u16; 256],
    pub uVersion: u32,
    pub szInfoTitle: [u16; 64],
    pub dwInfoFlags: u32,
    pub guidItem: GUID,
    pub hBalloonIcon: HICON,
}

// sizeof(NOTIFYICONDATAW) on x64, as mingw's and the SDK's headers give it.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<NOTIFYICONDATAW>() == 976);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MSG>() == 48);

pub const WM_NULL: u32 = 0x0000;
pub const WM_DESTROY: u32 = 0x0002;
pub const WM_CLOSE: u32 = 0x0010;
pub const WM_CONTEXTMENU: u32 = 0x007B;
pub const WM_COMMAND: u32 = 0x0111;
pub const WM_LBUTTONUP: u32 = 0x0202;
pub const WM_RBUTTONUP: u32 = 0x0205;
pub const WM_APP: u32 = 0x8000;

pub const NIM_ADD: u32 = 0;
pub const NIM_MODIFY: u32 = 1;
pub const NIM_DELETE: u32 = 2;
pub const NIF_MESSAGE: u32 = 0x1;
pub const NIF_ICON: u32 = 0x2;
pub const NIF_TIP: u32 = 0x4;

pub const MF_STRING: u32 = 0x0;
pub const MF_GRAYED: u32 = 0x1;
pub const MF_SEPARATOR: u32 = 0x800;
pub const TPM_RIGHTBUTTON: u32 = 0x2;
pub const TPM_BOTTOMALIGN: u32 = 0x20;

/// The system's stock icons (`MAKEINTRESOURCE(IDI_*)`).
pub const IDI_APPLICATION: usize = 32512;
pub const IDI_WARNING: usize = 32515;
pub const IDI_INFORMATION: usize = 32516;

/// `HKEY_CURRENT_USER`: `(HKEY)(ULONG_PTR)(LONG)0x80000001`, sign-extended.
pub const HKEY_CURRENT_USER: isize = 0x8000_0001_u32 as i32 as isize;
pub const KEY_READ: u32 = 0x20019;
pub const ERROR_SUCCESS: i32 = 0;

/// `FOLDERID_Programs`: the Start menu's Programs folder, `{A77F5D77-2E2B-44C3-A6A2-ABA601054A51}`.
pub const FOLDERID_PROGRAMS: GUID = GUID {
    data1: 0xA77F_5D77,
    data2: 0x2E2B,
    data3: 0x44C3,
    data4: [0xA6, 0xA2, 0xAB, 0xA6, 0x01, 0x05, 0x4A, 0x51],
};

#[link(name = "user32")]
unsafe extern "system" {
    pub fn RegisterClassW(class: *const WNDCLASSW) -> u16;
    pub fn CreateWindowExW(
        ex_style: u32,
        class: *const u16,
        name: *const u16,
        style: u32,
        x: i32,
        y: i32,
        width: i32,
        height: i32,
        parent: HWND,
        menu: HMENU,
        instance: HINSTANCE,
        param: *const c_void,
    ) -> HWND;
    pub fn DefWindowProcW(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> LRESULT;
    pub fn DestroyWindow(hwnd: HWND) -> BOOL;
    pub fn GetMessageW(msg: *mut MSG, hwnd: HWND, min: u32, max: u32) -> BOOL;
    pub fn TranslateMessage(msg: *const MSG) -> BOOL;
    pub fn DispatchMessageW(msg: *const MSG) -> LRESULT;
    pub fn PostMessageW(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> BOOL;
    pub fn PostQuitMessage(code: i32);
    pub fn RegisterWindowMessageW(name: *const u16) -> u32;
    pub fn CreatePopupMenu() -> HMENU;
    pub fn AppendMenuW(menu: HMENU, flags: u32, id: usize, text: *const u16) -> BOOL;
    pub fn TrackPopupMenu(
        menu: HMENU,
        flags: u32,
        x: i32,
        y: i32,
        reserved: i32,
        hwnd: HWND,
        rect: *const c_void,
    ) -> BOOL;
    pub fn DestroyMenu(menu: HMENU) -> BOOL;
    pub fn SetForegroundWindow(hwnd: HWND) -> BOOL;
    pub fn GetCursorPos(point: *mut POINT) -> BOOL;
    pub fn LoadIconW(instance: HINSTANCE, name: *const u16) -> HICON;
}

#[link(name = "kernel32")]
unsafe extern "system" {
    pub fn GetModuleHandleW(name: *const u16) -> HINSTANCE;
    pub fn GetLastError() -> u32;
}

#[link(name = "shell32")]
unsafe extern "system" {
    pub fn Shell_NotifyIconW(message: u32, data: *const NOTIFYICONDATAW) -> BOOL;
    pub fn SHGetKnownFolderPath(
        id: *const GUID,
        flags: u32,
        token: *mut c_void,
        path: *mut *mut u16,
    ) -> i32;
}

#[link(name = "ole32")]
unsafe extern "system" {
    pub fn CoTaskMemFree(memory: *const c_void);
}

#[link(name = "advapi32")]
unsafe extern "system" {
    pub fn RegOpenKeyExW(
        key: HKEY,
        sub_key: *const u16,
        options: u32,
        sam: u32,
        out: *mut HKEY,
    ) -> i32;
    pub fn RegCloseKey(key: HKEY) -> i32;
}

/// `text` as a NUL-terminated UTF-16 string.
pub fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Copies `text` into a fixed UTF-16 field, cut to fit with its NUL.
pub fn copy_wide(field: &mut [u16], text: &str) {
    let room = field.len().saturating_sub(1);
    let mut n = 0;
    for (slot, unit) in field.iter_mut().zip(text.encode_utf16().take(room)) {
        *slot = unit;
        n += 1;
    }
    if let Some(end) = field.get_mut(n) {
        *end = 0;
    }
}

/// Whether `HKEY_CURRENT_USER\<path>` exists (and this user may read it).
pub fn user_key_exists(path: &str) -> bool {
    let path = wide(path);
    let mut key: HKEY = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path and a valid out-pointer; the key is closed below.
    let status = unsafe {
        RegOpenKeyExW(
            HKEY_CURRENT_USER as HKEY,
            path.as_ptr(),
            0,
            KEY_READ,
            &mut key,
        )
    };
    if status != ERROR_SUCCESS {
        return false;
    }
    // SAFETY: `key` was opened above.
    unsafe { RegCloseKey(key) };
    true
}

/// The user's Start-menu Programs folder (`FOLDERID_Programs`), where the installer
/// puts its shortcuts.
pub fn programs_folder() -> Option<std::path::PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    let mut path: *mut u16 = std::ptr::null_mut();
    // SAFETY: a valid GUID and out-pointer; the string is freed with CoTaskMemFree
    // whatever the result, as the documentation asks.
    let result =
        unsafe { SHGetKnownFolderPath(&FOLDERID_PROGRAMS, 0, std::ptr::null_mut(), &mut path) };
    let folder = if result == 0 && !path.is_null() {
        // SAFETY: on success `path` is a NUL-terminated UTF-16 string.
        let len = (0..).take_while(|&i| unsafe { *path.add(i) } != 0).count();
        // SAFETY: `len` units were just read from it.
        let units = unsafe { std::slice::from_raw_parts(path, len) };
        Some(std::ffi::OsString::from_wide(units).into())
    } else {
        None
    };
    // SAFETY: allocated by SHGetKnownFolderPath (or null, which is allowed).
    unsafe { CoTaskMemFree(path.cast()) };
    folder
}
