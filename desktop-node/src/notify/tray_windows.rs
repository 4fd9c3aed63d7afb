//! Windows: a notification-area icon (`Shell_NotifyIconW`), the Windows face of the
//! Linux tray (`tray.rs`), with the same menu.
//!
//! The icon lives on a thread of its own (`aisa-tray`): Windows sends a notification
//! icon's clicks to a window, as messages, to the thread that created that window, so
//! that thread creates a hidden top-level window (class
//! [`WINDOW_CLASS`]; never shown) and runs its message loop until the node stops. The
//! node's tokio side only posts messages to that window (`PostMessageW`, safe from any
//! thread): "the state changed" and "remove the icon".
//!
//! - The icon is the system's application icon while connected, its warning icon while
//!   not, its information icon while install requests wait; the tooltip says the same
//!   in words ("AI SuperApp: Connected to the relay; 1 install request waits").
//! - A left click opens the desktop face; a right click shows the menu: that line
//!   (greyed), **Open** (greyed without the face), **Quit**, which stops the node as
//!   Ctrl-C does (running actions finish, the relay is told).
//! - If Explorer restarts (it broadcasts `TaskbarCreated`) the icon is added again; if
//!   there is no notification area when the node starts (a session without Explorer),
//!   the icon is added when one appears.
//!
//! Tested under Wine with its Explorer's notification area on Xvfb
//! (desktop-node/tests/node_process.rs,
//! `windows_tray_opens_the_face_and_quit_stops_the_node_under_wine`, run by
//! scripts/wine-test.sh): the icon is added, a left click opens the face, and Quit,
//! picked with the keyboard in the menu a right click opened, stops the node. Not
//! tested: a real Windows taskbar, and the mouse inside the menu.
//!
//! Not here: a menu-bar item on macOS (docs/desktop.md).

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::win32::{self, HWND, LPARAM, LRESULT, WPARAM};

/// The hidden window's class name (a test finds the window by it).
pub(crate) const WINDOW_CLASS: &str = "AISuperApp.DesktopNode.Tray";
/// The icon's id within the window.
const ICON_ID: u32 = 1;
/// The icon's clicks arrive as this message.
const WM_TRAY: u32 = win32::WM_APP + 1;
/// The node's state changed: redraw the icon and its tooltip.
const WM_TRAY_UPDATE: u32 = win32::WM_APP + 2;
/// Menu commands (`WM_COMMAND`'s low word).
pub(crate) const ID_OPEN: u16 = 1;
/// **Quit**.
pub(crate) const ID_QUIT: u16 = 2;

/// What the icon shows, shared with the node's tokio side.
#[derive(Clone, Copy)]
struct Shown {
    connected: bool,
    waiting: usize,
}

/// The window thread's own state (the window procedure reads it).
struct Window {
    hwnd: HWND,
    face_url: Option<String>,
    quit: watch::Sender<bool>,
    shown: Arc<Mutex<Shown>>,
    /// Whether the notification area took the icon.
    added: bool,
    /// Explorer's `TaskbarCreated` broadcast (its notification area started again).
    taskbar_created: u32,
}

thread_local! {
    static WINDOW: RefCell<Option<Window>> = const { RefCell::new(None) };
}

/// A tray icon being shown.
pub(super) struct Tray {
    /// The hidden window, as a number (a window handle may be used from any thread).
    hwnd: usize,
    shown: Arc<Mutex<Shown>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tray {
    /// Shows the icon; `None` (logged) where there is no window station to make a window
    /// in (a service, Wine without a display).
    pub(super) async fn show(
        face_url: Option<String>,
        connected: bool,
        quit: watch::Sender<bool>,
    ) -> Option<Tray> {
        let shown = Arc::new(Mutex::new(Shown {
            connected,
            waiting: 0,
        }));
        let (ready_tx, ready) = oneshot::channel();
        let thread_shown = shown.clone();
        let thread = std::thread::Builder::new()
            .name("aisa-tray".into())
            .spawn(move || window_thread(face_url, quit, thread_shown, ready_tx));
        let thread = match thread {
            Ok(thread) => thread,
            Err(err) => {
                tracing::info!(%err, "no tray icon (cannot start its thread)");
                return None;
            }
        };
        match ready.await {
            Ok(Ok((hwnd, true))) => {
                tracing::info!("tray icon shown (notification area)");
                Some(Tray {
                    hwnd,
                    shown,
                    thread: Some(thread),
                })
            }
            Ok(Ok((hwnd, false))) => {
                tracing::info!(
                    "no notification area yet: the tray icon appears when the taskbar starts"
                );
                Some(Tray {
                    hwnd,
                    shown,
                    thread: Some(thread),
                })
            }
            Ok(Err(reason)) => {
                tracing::info!(%reason, "no tray icon");
                let _ = thread.join();
                None
            }
            Err(_) => {
                tracing::info!("no tray icon (its thread ended)");
                None
            }
        }
    }

    /// Shows the connection and the number of waiting requests.
    pub(super) async fn update(&self, connected: bool, waiting: usize) {
        if let Ok(mut shown) = self.shown.lock() {
            *shown = Shown { connected, waiting };
        }
        post(self.hwnd, WM_TRAY_UPDATE);
    }

    /// Removes the icon and ends its thread.
    pub(super) async fn remove(mut self) {
        post(self.hwnd, win32::WM_CLOSE);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        // Not removed through `remove` (the watcher was cut short): the window thread
        // still takes the icon away.
        if self.thread.is_some() {
            post(self.hwnd, win32::WM_CLOSE);
        }
    }
}

/// Posts `message` to the tray's window.
fn post(hwnd: usize, message: u32) {
    // SAFETY: PostMessageW takes any window handle (a destroyed one fails harmlessly).
    unsafe { win32::PostMessageW(hwnd as HWND, message, 0, 0) };
}

/// The window thread: makes the window, adds the icon, says how that went on `ready`
/// (the window, and whether the icon is in), then runs the message loop until the
/// window is closed.
fn window_thread(
    face_url: Option<String>,
    quit: watch::Sender<bool>,
    shown: Arc<Mutex<Shown>>,
    ready: oneshot::Sender<Result<(usize, bool), String>>,
) {
    let class = win32::wide(WINDOW_CLASS);
    let title = win32::wide(super::APP_NAME);
    // SAFETY: a null name is this program's module.
    let instance = unsafe { win32::GetModuleHandleW(std::ptr::null()) };
    let window_class = win32::WNDCLASSW {
        style: 0,
        lpfnWndProc: Some(window_proc),
        cbClsExtra: 0,
        cbWndExtra: 0,
        hInstance: instance,
        hIcon: std::ptr::null_mut(),
        hCursor: std::ptr::null_mut(),
        hbrBackground: std::ptr::null_mut(),
        lpszMenuName: std::ptr::null(),
        lpszClassName: class.as_ptr(),
    };
    // SAFETY: the class's strings outlive the window (this function's frame). A class
    // left from an earlier tray in this process is reused (registering fails then).
    unsafe { win32::RegisterClassW(&window_class) };
    // A top-level window that is never shown: a message-only window would not receive
    // Explorer's TaskbarCreated broadcast.
    // SAFETY: valid class and title strings; no parent, menu or creation data.
    let hwnd = unsafe {
        win32::CreateWindowExW(
            0,
            class.as_ptr(),
            title.as_ptr(),
            0,
            0,
            0,
            0,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            instance,
            std::ptr::null(),
        )
    };
    if hwnd.is_null() {
        // SAFETY: no arguments.
        let code = unsafe { win32::GetLastError() };
        let _ = ready.send(Err(format!(
            "cannot create its window (error {code}; no desktop in this session?)"
        )));
        return;
    }
    let taskbar_created = win32::wide("TaskbarCreated");
    // SAFETY: a NUL-terminated name.
    let taskbar_created = unsafe { win32::RegisterWindowMessageW(taskbar_created.as_ptr()) };
    let added = add_icon(hwnd, &shown);
    WINDOW.with(|window| {
        *window.borrow_mut() = Some(Window {
            hwnd,
            face_url,
            quit,
            shown,
            added,
            taskbar_created,
        });
    });
    let _ = ready.send(Ok((hwnd as usize, added)));

    let mut msg = win32::MSG {
        hwnd: std::ptr::null_mut(),
        message: 0,
        wParam: 0,
        lParam: 0,
        time: 0,
        pt: win32::POINT::default(),
    };
    // SAFETY: a valid MSG to fill; 0 or -1 (an error) ends the loop.
    while unsafe { win32::GetMessageW(&mut msg, std::ptr::null_mut(), 0, 0) } > 0 {
        // SAFETY: a message GetMessageW just filled.
        unsafe {
            win32::TranslateMessage(&msg);
            win32::DispatchMessageW(&msg);
        }
    }
    WINDOW.with(|window| window.borrow_mut().take());
}

/// The icon's data: what it shows now.
fn icon_data(hwnd: HWND, shown: &Mutex<Shown>) -> win32::NOTIFYICONDATAW {
    let shown = shown.lock().map_or(
        Shown {
            connected: false,
            waiting: 0,
        },
        |shown| *shown,
    );
    let stock = if shown.waiting > 0 {
        win32::IDI_INFORMATION
    } else if shown.connected {
        win32::IDI_APPLICATION
    } else {
        win32::IDI_WARNING
    };
    // SAFETY: a stock icon (MAKEINTRESOURCE) of the system, no module.
    let icon = unsafe { win32::LoadIconW(std::ptr::null_mut(), stock as *const u16) };
    // SAFETY: NOTIFYICONDATAW is plain data (integers, arrays, pointers) for which all
    // zeroes is the documented "nothing" value.
    let mut data: win32::NOTIFYICONDATAW = unsafe { std::mem::zeroed() };
    data.cbSize = std::mem::size_of::<win32::NOTIFYICONDATAW>() as u32;
    data.hWnd = hwnd;
    data.uID = ICON_ID;
    data.uFlags = win32::NIF_MESSAGE | win32::NIF_ICON | win32::NIF_TIP;
    data.uCallbackMessage = WM_TRAY;
    data.hIcon = icon;
    let tip = format!(
        "{}: {}",
        super::APP_NAME,
        super::tray_summary(shown.connected, shown.waiting)
    );
    win32::copy_wide(&mut data.szTip, &tip);
    data
}

/// Adds the icon to the notification area; whether it took it.
fn add_icon(hwnd: HWND, shown: &Mutex<Shown>) -> bool {
    let data = icon_data(hwnd, shown);
    // SAFETY: a filled NOTIFYICONDATAW with its size.
    unsafe { win32::Shell_NotifyIconW(win32::NIM_ADD, &data) != 0 }
}

/// What a message asks of the window thread, decided while its state is borrowed and
/// done after (a menu runs a message loop that calls the window procedure again).
enum Act {
    None,
    Open(Option<String>),
    Menu { face: bool, summary: String },
    Quit,
    Close,
}

unsafe extern "system" fn window_proc(
    hwnd: HWND,
    message: u32,
    wparam: WPARAM,
    lparam: LPARAM,
) -> LRESULT {
    let act = WINDOW.with(|window| {
        let Ok(mut window) = window.try_borrow_mut() else {
            return Act::None;
        };
        let Some(window) = window.as_mut().filter(|w| w.hwnd == hwnd) else {
            return Act::None;
        };
        match message {
            WM_TRAY => match lparam as u32 {
                win32::WM_LBUTTONUP => Act::Open(window.face_url.clone()),
                win32::WM_RBUTTONUP | win32::WM_CONTEXTMENU => {
                    let shown = window
                        .shown
                        .lock()
                        .map_or((false, 0), |s| (s.connected, s.waiting));
                    Act::Menu {
                        face: window.face_url.is_some(),
                        summary: super::tray_summary(shown.0, shown.1),
                    }
                }
                _ => Act::None,
            },
            WM_TRAY_UPDATE => {
                let data = icon_data(hwnd, &window.shown);
                let how = if window.added {
                    win32::NIM_MODIFY
                } else {
                    win32::NIM_ADD
                };
                // SAFETY: a filled NOTIFYICONDATAW with its size.
                let ok = unsafe { win32::Shell_NotifyIconW(how, &data) } != 0;
                window.added |= ok;
                Act::None
            }
            win32::WM_COMMAND => match (wparam & 0xFFFF) as u16 {
                ID_OPEN => Act::Open(window.face_url.clone()),
                ID_QUIT => {
                    tracing::info!("tray: Quit chosen; stopping");
                    let _ = window.quit.send(true);
                    Act::Quit
                }
                _ => Act::None,
            },
            win32::WM_CLOSE => {
                if window.added {
                    let data = icon_data(hwnd, &window.shown);
                    // SAFETY: the icon this window added.
                    unsafe { win32::Shell_NotifyIconW(win32::NIM_DELETE, &data) };
                    window.added = false;
                }
                Act::Close
            }
            m if m == window.taskbar_created && m != 0 => {
                // Explorer (re)started: its notification area is empty.
                window.added = add_icon(hwnd, &window.shown);
                if window.added {
                    tracing::info!("tray icon shown (notification area)");
                }
                Act::None
            }
            _ => Act::None,
        }
    });
    match act {
        Act::Open(face_url) => {
            super::open_face_from_tray(face_url.as_deref());
            0
        }
        Act::Menu { face, summary } => {
            show_menu(hwnd, face, &summary);
            0
        }
        Act::Quit => 0,
        Act::Close => {
            // SAFETY: our own window, on its thread.
            unsafe { win32::DestroyWindow(hwnd) };
            0
        }
        Act::None if message == win32::WM_DESTROY => {
            // SAFETY: ends this thread's message loop.
            unsafe { win32::PostQuitMessage(0) };
            0
        }
        // SAFETY: the default handling of a message this window got.
        Act::None => unsafe { win32::DefWindowProcW(hwnd, message, wparam, lparam) },
    }
}

/// The right-click menu, at the pointer: the state line (greyed), Open, Quit. The
/// chosen item comes back as `WM_COMMAND`.
fn show_menu(hwnd: HWND, face: bool, summary: &str) {
    tracing::info!(
        "tray: menu opened: [{summary}] [Open{}] [Quit]",
        if face { "" } else { " (greyed: no face)" }
    );
    let summary = win32::wide(summary);
    let open = win32::wide("Open");
    let quit = win32::wide("Quit");
    // SAFETY: a new menu, filled with NUL-terminated strings that outlive it, shown for
    // our own window, destroyed before the strings go.
    unsafe {
        let menu = win32::CreatePopupMenu();
        if menu.is_null() {
            return;
        }
        win32::AppendMenuW(
            menu,
            win32::MF_STRING | win32::MF_GRAYED,
            0,
            summary.as_ptr(),
        );
        win32::AppendMenuW(menu, win32::MF_SEPARATOR, 0, std::ptr::null());
        let open_flags = if face {
            win32::MF_STRING
        } else {
            win32::MF_STRING | win32::MF_GRAYED
        };
        win32::AppendMenuW(menu, open_flags, usize::from(ID_OPEN), open.as_ptr());
        win32::AppendMenuW(menu, win32::MF_STRING, usize::from(ID_QUIT), quit.as_ptr());
        let mut at = win32::POINT::default();
        win32::GetCursorPos(&mut at);
        // Without this the menu stays open when the person clicks elsewhere
        // (Shell_NotifyIcon's documentation).
        win32::SetForegroundWindow(hwnd);
        win32::TrackPopupMenu(
            menu,
            win32::TPM_RIGHTBUTTON | win32::TPM_BOTTOMALIGN,
            at.x,
            at.y,
            0,
            hwnd,
            std::ptr::null(),
        );
        win32::PostMessageW(hwnd, win32::WM_NULL, 0, 0);
        win32::DestroyMenu(menu);
    }
}
