//! The message envelope and its bodies.
//!
//! After a stream's header, every frame holds one [`Envelope`]. The body's variant index
//! is the message type on the wire; variants are only ever appended, never reordered, so
//! the numbers below are stable. A peer that receives a type it does not know gets a
//! [`DecodeError::Malformed`] naming it and answers with [`ErrorCode::MalformedFrame`].

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Chosen by the requester; replies carry the same id.
    pub request_id: u64,
    /// The device the message is for or from (empty where the stream already says).
    pub device_id: String,
    /// The message itself.
    pub body: Body,
}

/// What an envelope carries. The comment on each variant gives its type number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// 0, browser → desktop: run `action` of `app_id` with a JSON `payload`.
    ExecuteAction {
        /// The installed mini-app.
        app_id: String,
        /// The action's name in the app's action schema.
        action: String,
        /// The action's input, a JSON document.
        payload: String,
        /// Since 1.2: the model to run it with, one of those the desktop offers in its
        /// DEVICE_STATUS ([`ProviderStatus::models`]); `None`, or absent (a 1.1 browser),
        /// means the desktop's default. The desktop refuses a model it does not offer.
        model: Option<String>,
    },
    /// 1, browser → desktop: ask the desktop to install an app (approved on the desktop).
    InstallApp {
        /// The marketplace id.
        app_id: String,
        /// A version, or the latest when `None`.
        version: Option<String>,
    },
    /// 2, browser → desktop: remove an app.
    UninstallApp {
        /// The installed mini-app.
        app_id: String,
    },
    /// 3, browser → desktop: ask for a DEVICE_STATUS.
    GetStatus,
    /// 4, desktop → browser: the next piece of an action's output.
    StreamChunk {
        /// 0 for the first chunk of the stream, then 1, 2, …
        seq: u32,
        /// Output text.
        data: String,
    },
    /// 5, desktop → browser: the action finished; no more chunks follow.
    StreamEnd {
        /// How many chunks were sent.
        chunks: u32,
        /// How long the action ran on the desktop, in milliseconds.
        elapsed_ms: u32,
    },
    /// 6, any direction: the request failed. Ends the stream.
    Error {
        /// A stable code, see [`ErrorCode`].
        code: String,
        /// A message for a person.
        message: String,
    },
    /// 7, desktop → browser (and relay → browser): the device's state.
    DeviceStatus {
        /// Whether the device is connected to a relay.
        online: bool,
        /// The node's software version.
        node_version: String,
        /// Installed mini-apps.
        apps: Vec<AppStatus>,
        /// Since 1.2: the AI providers the desktop is set up to use, with their models
        /// (names only, never a key). Empty from a 1.1 desktop, and in the relay's own
        /// DEVICE_STATUS on a status-event stream (the relay does not know them).
        providers: Vec<ProviderStatus>,
        /// Since 1.2: installed apps the desktop cannot run (not in `apps`), each with a
        /// sentence saying why. Empty from a 1.1 desktop and from the relay.
        unloadable: Vec<UnloadableApp>,
    },
    /// 8, browser → desktop: stop the action running on this stream.
    Cancel,
    /// 9, either way on a control stream: are you there?
    Ping {
        /// Echoed in the PONG.
        nonce: u64,
    },
    /// 10, the answer to PING.
    Pong {
        /// The PING's nonce.
        nonce: u64,
    },
    /// 11, relay → desktop: the HELLO was accepted.
    Welcome {
        /// The device id the token belongs to.
        device_id: String,
        /// The protocol version both sides use.
        version: crate::Version,
        /// How often the desktop should PING, in seconds.
        heartbeat_secs: u32,
    },
    /// 12, relay → browser on a status-event stream: the snapshot of DEVICE_STATUS
    /// messages (one per device of the account) is complete; later messages are changes.
    /// Sent also when the account has no devices, so "none" and "slow" differ; sent only
    /// to browsers that announced protocol 1.1 or later ([`Body::STATUS_SNAPSHOT_END_SINCE`]).
    StatusSnapshotEnd {
        /// How many DEVICE_STATUS messages the snapshot held.
        devices: u32,
    },
    /// 13, browser → desktop on a Control stream: a page of the runs the desktop keeps,
    /// newest first. Answered with HISTORY_PAGE.
    HistoryList {
        /// Words that every listed run contains (app, action, inputs, output, error),
        /// case-insensitive; empty lists every run.
        query: String,
        /// How many matching runs to skip (paging).
        offset: u32,
        /// How many runs at most to answer (the desktop answers at most 100).
        limit: u32,
    },
    /// 14, browser → desktop on a Control stream: one run in full. Answered with
    /// HISTORY_RUN, or ERROR `unknown_run`.
    HistoryGet {
        /// The run's id, from a HISTORY_PAGE.
        run_id: u64,
    },
    /// 15, browser → desktop on a Control stream: forget one run, or every run when
    /// `run_id` is `None`. Answered with HISTORY_DELETED.
    HistoryDelete {
        /// The run to delete; `None` deletes them all.
        run_id: Option<u64>,
    },
    /// 16, desktop → browser: the answer to HISTORY_LIST.
    HistoryPage {
        /// How many runs match the query in all (for paging).
        total: u32,
        /// This page of them, newest first, with inputs and output shortened
        /// ([`RunRecord::preview`]).
        runs: Vec<RunRecord>,
    },
    /// 17, desktop → browser: the answer to HISTORY_GET, the run as the desktop keeps it.
    HistoryRun {
        /// The run.
        run: RunRecord,
    },
    /// 18, desktop → browser: the answer to HISTORY_DELETE.
    HistoryDeleted {
        /// How many runs were deleted (0 when the run was already gone).
        count: u32,
    },
    /// 19 (since 1.2), browser → desktop on a Control stream: a page of a folder an app
    /// was granted, for a file field of its form. Answered with FILES_PAGE, or ERROR
    /// (`denied` outside the app's grants, `invalid_payload` for a path that is not a
    /// folder or does not exist).
    FilesList {
        /// The installed app whose grants (read or write, and its `$APP_DATA`) bound the
        /// listing.
        app_id: String,
        /// The folder, as the app would write it (`$DOCUMENTS/notes`, `~/x`, absolute);
        /// empty for the app's granted folders themselves.
        path: String,
        /// How many entries to skip (paging).
        offset: u32,
        /// How many entries at most to answer (the desktop answers at most 200).
        limit: u32,
    },
    /// 20 (since 1.2), desktop → browser: the answer to FILES_LIST.
    FilesPage {
        /// The listed folder as the request named it (empty for the granted folders).
        path: String,
        /// How many entries the folder has in all (for paging).
        total: u32,
        /// This page of them: folders first, then files, each by name.
        entries: Vec<FileEntry>,
    },
    /// 21 (since 1.2), browser → desktop on a Control stream: a file for the app's data
    /// folder follows in FILE_CHUNKs, `size` bytes in all. Answered with FILE_PROGRESS
    /// messages and then FILE_STORED, or ERROR (`limit_exceeded` over the desktop's cap).
    FileUpload {
        /// The installed app whose `$APP_DATA/uploads` receives the file.
        app_id: String,
        /// The file's name in the browser (the desktop keeps a sanitised form of it).
        name: String,
        /// The file's size in bytes.
        size: u64,
    },
    /// 22 (since 1.2), browser → desktop after FILE_UPLOAD: the next bytes of the file.
    FileChunk {
        /// At most 64 KiB of the file, in order.
        data: Vec<u8>,
    },
    /// 23 (since 1.2), desktop → browser: how many bytes of the upload the desktop has
    /// written so far (for the progress bar; not final).
    FileProgress {
        /// Bytes received and written.
        received: u64,
    },
    /// 24 (since 1.2), desktop → browser: the upload is complete and stored.
    FileStored {
        /// The path a form submits for it, as the app reads it (`$APP_DATA/uploads/…`).
        path: String,
        /// Its size in bytes.
        size: u64,
    },
}

/// One entry of a FILES_PAGE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The entry's name (for the granted folders: the grant as written, `$DOCUMENTS`).
    pub name: String,
    /// Its path as the app would write it (what a form submits, or the next FILES_LIST).
    pub path: String,
    /// Whether it is a folder.
    pub dir: bool,
    /// Its size in bytes (0 for folders).
    pub size: u64,
}

/// One run of an action as the desktop's history keeps it (HISTORY_PAGE, HISTORY_RUN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The desktop's id for the run (increasing with time).
    pub id: u64,
    /// The app's id.
    pub app_id: String,
    /// The app's name as its manifest gives it.
    pub app_name: String,
    /// The action.
    pub action: String,
    /// The action's input, the JSON payload the browser sent.
    pub input: String,
    /// The output text (the STREAM_CHUNKs joined).
    pub output: String,
    /// When the run started: milliseconds since the Unix epoch, the desktop's clock.
    pub started_ms: u64,
    /// How long it ran, in milliseconds.
    pub duration_ms: u32,
    /// `done`, `failed` or `cancelled`.
    pub status: String,
    /// The ERROR code for a failed or cancelled run; empty when done.
    pub error_code: String,
    /// The ERROR message for a failed or cancelled run; empty when done.
    pub error_message: String,
    /// The desktop kept only the beginning of the input or the output (its caps).
    pub capped: bool,
    /// In a HISTORY_PAGE: `input` and `output` are shortened (ask HISTORY_GET for all).
    pub preview: bool,
}

/// One installed mini-app in a DEVICE_STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The app id.
    pub id: String,
    /// The installed version.
    pub version: String,
    /// Whether actions may run.
    pub enabled: bool,
}

/// One AI provider a desktop is set up to use, in a DEVICE_STATUS (since 1.2). Names
/// only: a key, or anything about one beyond [`ProviderStatus::configured`], never
/// travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// The provider's name as the desktop's configuration spells it (`openai`,
    /// `anthropic`, `google`, `local`).
    pub name: String,
    /// The models an action may run with, the desktop's default first. A browser offers a
    /// choice (EXECUTE_ACTION's `model`) when there are several.
    pub models: Vec<String>,
    /// Whether the provider can be used: its API key is configured, or it needs none.
    pub configured: bool,
}

/// An installed app the desktop cannot run, in a DEVICE_STATUS (since 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadableApp {
    /// The app id.
    pub id: String,
    /// The version that should be active (empty when the desktop cannot tell).
    pub version: String,
    /// Why it cannot run, one sentence for a person ("This desktop has no JavaScript
    /// runtime, …").
    pub reason: String,
}

impl Body {
    /// The first protocol version whose browsers get STATUS_SNAPSHOT_END (a 1.0 browser
    /// would not know the message type).
    pub const STATUS_SNAPSHOT_END_SINCE: crate::Version = crate::Version { major: 1, minor: 1 };

    /// The first protocol version with EXECUTE_ACTION's `model` and DEVICE_STATUS's
    /// `providers` and `unloadable`. They are appended fields, so they need no gate: an
    /// older peer ignores them (trailing bytes), and [`Envelope::decode`] reads an older
    /// peer's message without them as their defaults. A browser offers a model choice
    /// only for a desktop whose DEVICE_STATUS listed models, which only 1.2 desktops do,
    /// so a 1.1 desktop is never asked for a model it would ignore.
    pub const DEVICE_DETAILS_SINCE: crate::Version = crate::Version { major: 1, minor: 2 };

    /// The most fields a message type gained after 1.1 (see [`Envelope::decode`]).
    const MAX_ADDED_FIELDS: usize = 2;

    /// How many of the fields this message type gained after 1.1, counted from the end,
    /// hold their default value (`None`, an empty list): the ones an older peer's
    /// message may lack.
    fn trailing_defaults(&self) -> usize {
        match self {
            Body::ExecuteAction { model, .. } => usize::from(model.is_none()),
            Body::DeviceStatus {
                providers,
                unloadable,
                ..
            } => {
                if !unloadable.is_empty() {
                    0
                } else if !providers.is_empty() {
                    1
                } else {
                    2
                }
            }
            _ => 0,
        }
    }

    /// The message type's name as written in the protocol docs' code (`ExecuteAction`,
    /// `StreamChunk`, …), for messages and logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::ExecuteAction { .. } => "ExecuteAction",
            Body::InstallApp { .. } => "InstallApp",
            Body::UninstallApp { .. } => "UninstallApp",
            Body::GetStatus => "GetStatus",
            Body::StreamChunk { .. } => "StreamChunk",
            Body::StreamEnd { .. } => "StreamEnd",
            Body::Error { .. } => "Error",
            Body::DeviceStatus { .. } => "DeviceStatus",
            Body::Cancel => "Cancel",
            Body::Ping { .. } => "Ping",
            Body::Pong { .. } => "Pong",
            Body::Welcome { .. } => "Welcome",
            Body::StatusSnapshotEnd { .. } => "StatusSnapshotEnd",
            Body::HistoryList { .. } => "HistoryList",
            Body::HistoryGet { .. } => "HistoryGet",
            Body::HistoryDelete { .. } => "HistoryDelete",
            Body::HistoryPage { .. } => "HistoryPage",
            Body::HistoryRun { .. } => "HistoryRun",
            Body::HistoryDeleted { .. } => "HistoryDeleted",
            Body::FilesList { .. } => "FilesList",
            Body::FilesPage { .. } => "FilesPage",
            Body::FileUpload { .. } => "FileUpload",
            Body::FileChunk { .. } => "FileChunk",
            Body::FileProgress { .. } => "FileProgress",
            Body::FileStored { .. } => "FileStored",
        }
    }
}

impl Envelope {
    /// An envelope with no device id.
    pub fn new(request_id: u64, body: Body) -> Self {
        Envelope {
            request_id,
            device_id: String::new(),
            body,
        }
    }

    /// An ERROR envelope.
    pub fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Envelope::new(
            request_id,
            Body::Error {
                code: code.as_str().to_owned(),
                message: message.into(),
            },
        )
    }

    /// Encodes this envelope as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail for these types.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a frame body. Trailing bytes (fields of a newer minor version) are ignored.
    /// A body that ends where an older minor version's message ends, before the fields
    /// added since (EXECUTE_ACTION's `model`, DEVICE_STATUS's `providers` and
    /// `unloadable`, all since 1.2), decodes with those fields at their defaults; any
    /// other short body is malformed.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match postcard::take_from_bytes(body) {
            Ok((env, _)) => Ok(env),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Self::decode_older(body),
            Err(e) => Err(DecodeError::malformed("envelope", e)),
        }
    }

    /// [`Envelope::decode`] for a body that ended early. Postcard writes each added
    /// field's default as one zero byte (`None`, an empty list), so the body is decoded
    /// again with zero bytes appended; it is an older peer's message when the zeros were
    /// read only as added fields at their defaults. A body cut anywhere else needs at
    /// least one zero more than that (for the cut field) and stays malformed.
    fn decode_older(body: &[u8]) -> Result<Self, DecodeError> {
        let too_short =
            || DecodeError::malformed("envelope", postcard::Error::DeserializeUnexpectedEnd);
        let mut padded = Vec::with_capacity(body.len() + Body::MAX_ADDED_FIELDS);
        padded.extend_from_slice(body);
        padded.extend_from_slice(&[0; Body::MAX_ADDED_FIELDS]);
        let (env, rest) =
            postcard::take_from_bytes::<Envelope>(&padded).map_err(|_| too_short())?;
        let filled = Body::MAX_ADDED_FIELDS.saturating_sub(rest.len());
        if filled == 0
            || rest.len() > Body::MAX_ADDED_FIELDS
            || filled > env.body.trailing_defaults()
        {
            return Err(too_short());
        }
        Ok(env)
    }
}

/// Stable error codes carried in [`Body::Error`]. Unknown codes decode as
/// [`ErrorCode::Other`], so a newer peer's codes never break an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame or header could not be decoded.
    MalformedFrame,
    /// The peer speaks an incompatible protocol version.
    UnsupportedVersion,
    /// The token is missing, invalid or expired.
    Unauthenticated,
    /// The device belongs to another user.
    Forbidden,
    /// No such device.
    UnknownDevice,
    /// The device exists but is not connected.
    DeviceOffline,
    /// No such app installed, or disabled.
    UnknownApp,
    /// No such action in the app.
    UnknownAction,
    /// The action's input was refused.
    InvalidPayload,
    /// The mini-app trapped, ran out of time or memory, or broke a limit.
    AppFailed,
    /// The AI provider failed or refused.
    ProviderError,
    /// The action was cancelled.
    Cancelled,
    /// The request is known but not supported by this node yet.
    Unsupported,
    /// The other side went away mid-stream.
    PeerGone,
    /// A plan limit was reached (the message names it).
    LimitExceeded,
    /// Anything else.
    Internal,
    /// The person at the desktop refused (an install request).
    Denied,
    /// An install or uninstall failed (download, checksum, signature, format; the
    /// message says which).
    InstallFailed,
    /// The desktop is running and queueing as many actions as it takes; the message
    /// says so and when to try again. Nothing ran.
    Busy,
    /// HISTORY_GET named a run the desktop does not keep (deleted, or past retention).
    UnknownRun,
    /// The relay cannot serve the stream right now, though nothing is wrong with it:
    /// the cluster's shared state (where the device is) cannot be read and the device
    /// is not connected to the relay the browser reached. Try again shortly.
    Unavailable,
    /// A code this build does not know.
    Other,
}

impl ErrorCode {
    const ALL: [ErrorCode; 21] = [
        ErrorCode::MalformedFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::UnknownDevice,
        ErrorCode::DeviceOffline,
        ErrorCode::UnknownApp,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidPayload,
        ErrorCode::AppFailed,
        ErrorCode::ProviderError,
        ErrorCode::Cancelled,
        ErrorCode::Unsupported,
        ErrorCode::PeerGone,
        ErrorCode::LimitExceeded,
        ErrorCode::Internal,
        ErrorCode::Denied,
        ErrorCode::InstallFailed,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::UnknownRun,
    ];

    /// The code's text on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::DeviceOffline => "device_offline",
            ErrorCode::UnknownApp => "unknown_app",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::AppFailed => "app_failed",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::PeerGone => "peer_gone",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::Denied => "denied",
            ErrorCode::InstallFailed => "install_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UnknownRun => "unknown_run",
            ErrorCode::Other => "other",
        }
    }

    /// Reads a code from the wire; unknown text gives [`ErrorCode::Other`].
    pub fn parse(text: &str) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .unwrap_or(ErrorCode::Other)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bytes_are_exact() {
        let env = Envelope::new(
            300,
            Body::StreamChunk {
                seq: 1,
                data: "hi".into(),
            },
        );
        // request_id 300 = varint ac 02; device_id ""; type 4; seq 1; "hi"
        assert_eq!(env.encode(), [0xac, 0x02, 0, 4, 1, 2, b'h', b'i']);
    }

    #[test]
    fn history_bytes_are_exact() {
        // request_id 1; device_id ""; type 13; query "ab"; offset 0; limit 20
        let list = Envelope::new(
            1,
            Body::HistoryList {
                query: "ab".into(),
                offset: 0,
                limit: 20,
            },
        );
        assert_eq!(list.encode(), [1, 0, 13, 2, b'a', b'b', 0, 20]);
        // type 15; Option: 0 for none (delete all), 1 then the id
        let all = Envelope::new(2, Body::HistoryDelete { run_id: None });
        assert_eq!(all.encode(), [2, 0, 15, 0]);
        let one = Envelope::new(2, Body::HistoryDelete { run_id: Some(300) });
        assert_eq!(one.encode(), [2, 0, 15, 1, 0xac, 0x02]);
        let run = RunRecord {
            id: 7,
            app_id: "a".into(),
            app_name: "A".into(),
            action: "w".into(),
            input: "{}".into(),
            output: "hi".into(),
            started_ms: 1,
            duration_ms: 2,
            status: "done".into(),
            error_code: String::new(),
            error_message: String::new(),
            capped: false,
            preview: true,
        };
        let page = Envelope::new(
            3,
            Body::HistoryPage {
                total: 1,
                runs: vec![run.clone()],
            },
        );
        assert_eq!(
            page.encode(),
            [
                3, 0, 16, 1, 1, 7, 1, b'a', 1, b'A', 1, b'w', 2, b'{', b'}', 2, b'h', b'i', 1, 2,
                4, b'd', b'o', b'n', b'e', 0, 0, 0, 1
            ]
        );
        for env in [page, Envelope::new(4, Body::HistoryRun { run })] {
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn file_bytes_are_exact() {
        // request_id 1; device_id ""; type 19; app "a"; path "~"; offset 0; limit 50
        let list = Envelope::new(
            1,
            Body::FilesList {
                app_id: "a".into(),
                path: "~".into(),
                offset: 0,
                limit: 50,
            },
        );
        assert_eq!(list.encode(), [1, 0, 19, 1, b'a', 1, b'~', 0, 50]);
        // type 22; bytes are a length then the bytes
        let chunk = Envelope::new(2, Body::FileChunk { data: vec![0, 255] });
        assert_eq!(chunk.encode(), [2, 0, 22, 2, 0, 255]);
        let page = Envelope::new(
            3,
            Body::FilesPage {
                path: String::new(),
                total: 1,
                entries: vec![FileEntry {
                    name: "d".into(),
                    path: "$D".into(),
                    dir: true,
                    size: 0,
                }],
            },
        );
        assert_eq!(
            page.encode(),
            [3, 0, 20, 0, 1, 1, 1, b'd', 2, b'$', b'D', 1, 0]
        );
        for env in [
            page,
            Envelope::new(
                4,
                Body::FileUpload {
                    app_id: "a".into(),
                    name: "n.txt".into(),
                    size: 1 << 20,
                },
            ),
            Envelope::new(5, Body::FileProgress { received: 300 }),
            Envelope::new(
                6,
                Body::FileStored {
                    path: "$APP_DATA/uploads/n.txt".into(),
                    size: 3,
                },
            ),
        ] {
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    /// A DEVICE_STATUS with everything 1.2 added.
    fn status_1_2() -> Body {
        Body::DeviceStatus {
            online: true,
            node_version: "0.2.0".into(),
            apps: vec![AppStatus {
                id: "a".into(),
                version: "1.0.0".into(),
                enabled: true,
            }],
            providers: vec![ProviderStatus {
                name: "openai".into(),
                models: vec!["m1".into(), "m2".into()],
                configured: true,
            }],
            unloadable: vec![UnloadableApp {
                id: "js".into(),
                version: "1.0.0".into(),
                reason: "no runtime".into(),
            }],
        }
    }

    #[test]
    fn device_details_bytes_are_exact() {
        let env = Envelope::new(1, status_1_2());
        #[rustfmt::skip]
        let want = [
            1, 0, 7, // request 1, no device id, DEVICE_STATUS
            1, 5, b'0', b'.', b'2', b'.', b'0', // online, node_version
            1, 1, b'a', 5, b'1', b'.', b'0', b'.', b'0', 1, // apps
            1, 6, b'o', b'p', b'e', b'n', b'a', b'i', 2, 2, b'm', b'1', 2, b'm', b'2', 1, // providers (1.2)
            1, 2, b'j', b's', 5, b'1', b'.', b'0', b'.', b'0', 10, b'n', b'o', b' ', b'r', b'u', b'n', b't', b'i', b'm', b'e', // unloadable (1.2)
        ];
        assert_eq!(env.encode(), want);
        let run = Envelope::new(
            2,
            Body::ExecuteAction {
                app_id: "a".into(),
                action: "w".into(),
                payload: "{}".into(),
                model: Some("m2".into()),
            },
        );
        assert_eq!(
            run.encode(),
            [2, 0, 0, 1, b'a', 1, b'w', 2, b'{', b'}', 1, 2, b'm', b'2']
        );
    }

    /// What a 1.1 peer writes: the 1.2 message without its added fields.
    fn as_1_1(env: &Envelope) -> Vec<u8> {
        let bytes = env.encode();
        let added = env.body.trailing_defaults();
        bytes[..bytes.len() - added].to_vec()
    }

    #[test]
    fn a_1_2_peer_reads_1_1_messages_with_defaults() {
        let run = Envelope::new(
            3,
            Body::ExecuteAction {
                app_id: "a".into(),
                action: "w".into(),
                payload: "{}".into(),
                model: None,
            },
        );
        // A 1.1 browser's EXECUTE_ACTION: no model byte at all.
        assert_eq!(as_1_1(&run), [3, 0, 0, 1, b'a', 1, b'w', 2, b'{', b'}']);
        assert_eq!(Envelope::decode(&as_1_1(&run)).unwrap(), run);
        // A 1.1 desktop's (or relay's) DEVICE_STATUS: neither list.
        let status = Envelope::new(
            4,
            Body::DeviceStatus {
                online: false,
                node_version: "0.1.0".into(),
                apps: vec![],
                providers: vec![],
                unloadable: vec![],
            },
        );
        let old = as_1_1(&status);
        assert_eq!(old, [4, 0, 7, 0, 5, b'0', b'.', b'1', b'.', b'0', 0]);
        assert_eq!(Envelope::decode(&old).unwrap(), status);
        // One added field present, the last absent (a peer between the two).
        let Body::DeviceStatus { providers, .. } = status_1_2() else {
            unreachable!()
        };
        let partial = Envelope::new(
            5,
            Body::DeviceStatus {
                online: true,
                node_version: "x".into(),
                apps: vec![],
                providers,
                unloadable: vec![],
            },
        );
        let bytes = partial.encode();
        assert_eq!(
            Envelope::decode(&bytes[..bytes.len() - 1]).unwrap(),
            partial
        );
    }

    #[test]
    fn a_1_1_peer_reads_1_2_messages_ignoring_the_added_fields() {
        // The 1.1 shapes, as a 1.1 build declares them (postcard, no added fields).
        #[derive(Debug, PartialEq, Deserialize)]
        enum Body11 {
            ExecuteAction {
                app_id: String,
                action: String,
                payload: String,
            },
            InstallApp,
            UninstallApp,
            GetStatus,
            StreamChunk,
            StreamEnd,
            Error,
            DeviceStatus {
                online: bool,
                node_version: String,
                apps: Vec<AppStatus>,
            },
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Envelope11 {
            request_id: u64,
            device_id: String,
            body: Body11,
        }
        // A 1.1 build decodes with `take_from_bytes`, ignoring what follows.
        let decode11 = |bytes: &[u8]| postcard::take_from_bytes::<Envelope11>(bytes).unwrap().0;
        let run = Envelope::new(
            6,
            Body::ExecuteAction {
                app_id: "a".into(),
                action: "w".into(),
                payload: "{}".into(),
                model: Some("m2".into()),
            },
        );
        assert_eq!(
            decode11(&run.encode()).body,
            Body11::ExecuteAction {
                app_id: "a".into(),
                action: "w".into(),
                payload: "{}".into(),
            }
        );
        let status = decode11(&Envelope::new(7, status_1_2()).encode());
        assert_eq!(
            status.body,
            Body11::DeviceStatus {
                online: true,
                node_version: "0.2.0".into(),
                apps: vec![AppStatus {
                    id: "a".into(),
                    version: "1.0.0".into(),
                    enabled: true,
                }],
            }
        );
        assert_eq!((status.request_id, status.device_id.as_str()), (7, ""));
    }

    #[test]
    fn a_body_cut_elsewhere_is_still_malformed() {
        let full = Envelope::new(8, status_1_2()).encode();
        // Every cut is malformed (inside a string, a list, a bool, or before the apps)
        // but the two that end where an older peer's message ends: after the apps (1.1)
        // and after the providers (the last list absent).
        let providers_end = full.len() - 21; // the unloadable list is 21 bytes
        let apps_end = providers_end - 16; // the providers list is 16 bytes
        for cut in 0..full.len() {
            let result = Envelope::decode(&full[..cut]);
            if cut == providers_end || cut == apps_end {
                assert!(result.is_ok(), "cut at {cut}");
            } else {
                assert!(
                    matches!(result, Err(DecodeError::Malformed { .. })),
                    "cut at {cut}: {result:?}"
                );
            }
        }
        // A 1.1 message cut inside its own fields is not mistaken for one without them.
        let run = Envelope::new(
            9,
            Body::ExecuteAction {
                app_id: "a".into(),
                action: "w".into(),
                payload: "{}".into(),
                model: None,
            },
        )
        .encode();
        for cut in 0..run.len() - 1 {
            assert!(Envelope::decode(&run[..cut]).is_err(), "cut at {cut}");
        }
        // Message types that gained nothing accept no missing byte.
        let chunk = Envelope::new(
            1,
            Body::StreamChunk {
                seq: 0,
                data: String::new(),
            },
        )
        .encode();
        assert!(Envelope::decode(&chunk[..chunk.len() - 1]).is_err());
    }

    #[test]
    fn unknown_message_type_is_malformed() {
        let err = Envelope::decode(&[1, 0, 99]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Malformed {
                what: "envelope",
                ..
            }
        ));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let err = Envelope::decode(&[1, 0, 4, 0, 1, 0xff]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }));
    }

    #[test]
    fn error_codes_round_trip_and_unknown_is_other() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("from_the_future"), ErrorCode::Other);
        // A code of its own (a cluster node that cannot locate a device): the relay
        // sent `peer_gone` for it before.
        assert_eq!(ErrorCode::parse("unavailable"), ErrorCode::Unavailable);
    }
}
