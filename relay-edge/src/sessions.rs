//! Browser sessions open on this node, and which users' tokens each has used, so that
//! revoking a user's access tokens closes the sessions that rely on them.
//!
//! A browser session (WebTransport, or the mux over a WebSocket) has no user of its own: every stream carries a token. When a
//! stream's token is accepted, the session records the user and the token's generation
//! (claim `generation`). When the user's tokens are revoked (signed out everywhere, a
//! refresh token reused, the account disabled), the user's generation moves on, and every
//! session holding a token of that user from an older generation is closed, with its
//! streams. The HTTP handlers revoke at once;
//! a sweep (`server.rs`) catches revocations made elsewhere (the operator's CLI, another
//! relay node) within `revocation_check_secs`.

use std::collections::HashMap;
use std::sync::Mutex;

/// QUIC close code of a session closed because a token it used was revoked.
pub const CLOSE_TOKEN_REVOKED: u32 = 0x101;

struct Entry {
    connection: crate::browser::SessionConnection,
    /// Each user whose token the session used, with the oldest such token's generation.
    users: HashMap<String, i64>,
}

/// The browser sessions open on this node.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<u64, Entry>>,
}

impl Sessions {
    /// Records a new session.
    pub fn opened(&self, session_id: u64, connection: crate::browser::SessionConnection) {
        self.lock().insert(
            session_id,
            Entry {
                connection,
                users: HashMap::new(),
            },
        );
    }

    /// Forgets a session that ended.
    pub fn closed(&self, session_id: u64) {
        self.lock().remove(&session_id);
    }

    /// Records that a stream of the session presented a valid token of `user_id` from
    /// token generation `generation`.
    pub fn authenticated(&self, session_id: u64, user_id: &str, generation: i64) {
        if let Some(entry) = self.lock().get_mut(&session_id) {
            let oldest = entry.users.entry(user_id.to_owned()).or_insert(generation);
            *oldest = (*oldest).min(generation);
        }
    }

    /// Every user with a token in use on an open session.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .lock()
            .values()
            .flat_map(|e| e.users.keys().cloned())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Closes every session that used a token of `user_id` from a generation before
    /// `generation` (`i64::MAX`: any token, for a disabled user). Returns how many were
    /// closed.
    pub fn revoke(&self, user_id: &str, generation: i64, why: &str) -> usize {
        let mut open = self.lock();
        let doomed: Vec<u64> = open
            .iter()
            .filter(|(_, e)| e.users.get(user_id).is_some_and(|g| *g < generation))
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            if let Some(entry) = open.remove(id) {
                entry.connection.close(
                    CLOSE_TOKEN_REVOKED,
                    &format!("unauthenticated: {why}; sign in again"),
                );
            }
        }
        doomed.len()
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}
