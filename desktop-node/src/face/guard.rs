//! Who may talk to the face: pure checks on a request's Host, Origin, cookie and the
//! per-launch token, with no I/O, so each rule has a unit test.
//!
//! The face listens on 127.0.0.1 only, but every web page the person opens can make
//! their browser send requests there. What stops those pages:
//!
//! * **The token.** The node makes a 256-bit token at each start and puts it only in
//!   the URL it opens (and in `face.json`, readable by this user alone). `/login?token=`
//!   trades it for a session cookie; every other path needs that cookie.
//! * **The cookie** is `HttpOnly` (no script reads it) and `SameSite=Strict` (a request
//!   started by another site does not carry it). Its name carries the port, as cookies
//!   are shared by every port of a host.
//! * **Host** must be `127.0.0.1:PORT` or `localhost:PORT`: a DNS-rebinding page (an
//!   attacker's name that resolves to 127.0.0.1) sends its own name and is refused,
//!   even before its lack of a cookie would be.
//! * **Origin**, when the browser sends one, must be this face's own; a request that
//!   changes something (any method but GET and HEAD) must send one. No CORS headers are
//!   ever sent, so no other origin can read an answer.
//!
//! What it does not do: keep out other programs of this user (they can read the token
//! from `face.json`, as they can read the node's other files), or TLS (loopback only).

use axum::http::Method;

/// What a request was refused for (the answer's body says so; never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Host is not this face's loopback address (DNS rebinding, or a proxy).
    Host,
    /// Origin is another site's, or missing on a request that changes something.
    Origin,
    /// No valid session cookie (open the face with `desktop-node face`).
    Session,
    /// `/login` with a wrong token.
    Token,
}

impl Refusal {
    /// A sentence for the person.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Host => "refused: this page answers only at 127.0.0.1 or localhost",
            Refusal::Origin => "refused: the request came from another site",
            Refusal::Session => {
                "not signed in to this desktop face: open it with `desktop-node face`"
            }
            Refusal::Token => {
                "this link is not valid (the node restarted?): open the face with `desktop-node face`"
            }
        }
    }
}

/// The per-launch secrets and the port they are bound to.
pub struct Guard {
    token: String,
    session: String,
    port: u16,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Guard {
    /// New random token and session value for a face on `port`.
    pub fn new(port: u16) -> Guard {
        Guard {
            token: random_hex(32),
            session: random_hex(32),
            port,
        }
    }

    /// The token (for the URL the node opens).
    #[cfg(test)]
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The URL that signs a browser in: `http://127.0.0.1:PORT/login?token=…`.
    pub fn login_url(&self) -> String {
        format!("http://127.0.0.1:{}/login?token={}", self.port, self.token)
    }

    /// The session cookie's name: `aisa_face_PORT`.
    pub fn cookie_name(&self) -> String {
        format!("aisa_face_{}", self.port)
    }

    /// The `Set-Cookie` value `/login` answers with.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name(),
            self.session
        )
    }

    /// Host must name this face on loopback.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), Refusal> {
        let ok = host.is_some_and(|h| {
            h == format!("127.0.0.1:{}", self.port) || h == format!("localhost:{}", self.port)
        });
        if ok { Ok(()) } else { Err(Refusal::Host) }
    }

    /// Origin, if sent, must be `http://` + the request's (checked) Host; a request that
    /// changes something must send it.
    pub fn check_origin(
        &self,
        method: &Method,
        host: &str,
        origin: Option<&str>,
    ) -> Result<(), Refusal> {
        match origin {
            Some(origin) if origin == format!("http://{host}") => Ok(()),
            Some(_) => Err(Refusal::Origin),
            None if method == Method::GET || method == Method::HEAD => Ok(()),
            None => Err(Refusal::Origin),
        }
    }

    /// The `Cookie` header must carry this face's session.
    pub fn check_session(&self, cookie_header: Option<&str>) -> Result<(), Refusal> {
        let name = self.cookie_name();
        let found = cookie_header.is_some_and(|header| {
            header.split(';').any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(n, v)| n == name && same(v, &self.session))
            })
        });
        if found { Ok(()) } else { Err(Refusal::Session) }
    }

    /// `/login`'s token must be this launch's.
    pub fn check_token(&self, given: Option<&str>) -> Result<(), Refusal> {
        if given.is_some_and(|t| same(t, &self.token)) {
            Ok(())
        } else {
            Err(Refusal::Token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_faces_loopback_host_is_served() {
        let guard = Guard::new(4321);
        assert_eq!(guard.check_host(Some("127.0.0.1:4321")), Ok(()));
        assert_eq!(guard.check_host(Some("localhost:4321")), Ok(()));
        for bad in [
            None,
            Some("127.0.0.1:4322"),
            Some("127.0.0.1"),
            Some("evil.example:4321"),
            Some("127.0.0.1.evil.example:4321"),
            Some("[::1]:4321"),
        ] {
            assert_eq!(guard.check_host(bad), Err(Refusal::Host), "{bad:?}");
        }
    }

    #[test]
    fn another_origin_is_refused_and_changes_need_an_origin() {
        let guard = Guard::new(4321);
        let host = "127.0.0.1:4321";
        let own = Some("http://127.0.0.1:4321");
        assert_eq!(guard.check_origin(&Method::POST, host, own), Ok(()));
        assert_eq!(guard.check_origin(&Method::GET, host, None), Ok(()));
        assert_eq!(
            guard.check_origin(&Method::POST, host, None),
            Err(Refusal::Origin)
        );
        for bad in [
            "https://127.0.0.1:4321",
            "http://localhost:4321",
            "http://evil.example",
            "null",
        ] {
            assert_eq!(
                guard.check_origin(&Method::GET, host, Some(bad)),
                Err(Refusal::Origin),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_session_cookie_and_the_token_must_be_this_launchs() {
        let guard = Guard::new(4321);
        let other = Guard::new(4321);
        let cookie = guard.set_cookie();
        let pair = cookie.split(';').next().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert_eq!(
            guard.check_session(Some(&format!("theme=dark; {pair}"))),
            Ok(())
        );
        assert_eq!(guard.check_session(None), Err(Refusal::Session));
        assert_eq!(
            other.check_session(Some(pair)),
            Err(Refusal::Session),
            "another launch's cookie"
        );
        assert_eq!(
            guard.check_session(Some(&format!("aisa_face_4322={}", &pair[15..]))),
            Err(Refusal::Session),
            "the value under another port's name"
        );
        assert_eq!(guard.check_token(Some(guard.token())), Ok(()));
        assert_eq!(guard.check_token(Some(other.token())), Err(Refusal::Token));
        assert_eq!(guard.check_token(Some("")), Err(Refusal::Token));
        assert_eq!(guard.check_token(None), Err(Refusal::Token));
        assert!(guard.login_url().ends_with(guard.token()));
        assert!(!format!("{guard:?}").contains(guard.token()));
    }
}
