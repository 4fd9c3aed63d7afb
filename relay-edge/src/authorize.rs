//! Whether a browser's stream may go where its open header asks: a pure function of the
//! header and the facts the relay holds, returning a typed [`Grant`] or a typed
//! [`Denied`].
//!
//! Nothing here reads a database, a socket or a clock. The browser driver
//! ([`crate::browser`]) gathers the [`Facts`] (token verification, the user, the device
//! and whether it is connected here, the plan, this node's counters), asks
//! [`authorize`], and then takes what the grant reserves: a place among the user's open
//! streams (or status-event streams) and, for an Action stream, one of the day's actions
//! (an atomic count in the store). Losing a race for one of those gives the same
//! refusal [`authorize`] gives when the counter is already full ([`Grant::refuse_streams`],
//! [`Denied::PlanActions`]).
//!
//! The order of the checks is the order of the refusals: a draining relay refuses
//! everything; then the token, the account and the token's generation (the
//! [`authenticate`] step, which the HTTP API's bearer check shares); then, for a status
//! stream (a Control stream with no device id), the event-stream limit; for any other
//! stream the device (known and not revoked, the user's own, connected here), the plan,
//! and the plan's concurrent-stream limit.
//!
//! Not here: reading and decoding the header (a stream-level rule of the protocol), and
//! the desktop's HELLO ([`crate::desktop`]).

use aisa_tunnel::{ErrorCode, OpenHeader, RelayHeader, StreamKind};

use crate::auth::Claims;
use crate::store::{Device, Plan, User};

/// Why a stream was refused by the relay's authorization. Each variant has one wire
/// code ([`Denied::code`]), one metric label ([`Denied::reason`]) and one message for the
/// browser (`Display`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The relay is shutting down and takes no new streams.
    #[error("the relay is shutting down; reconnect and try again")]
    Draining,
    /// The access token is malformed, forged or expired (the verifier's message).
    #[error("{0}")]
    BadToken(String),
    /// The token's user is disabled or no longer exists.
    #[error("the account is disabled or gone")]
    AccountGone,
    /// The token is from a generation the user has revoked (signed out everywhere, a
    /// refresh token reused).
    #[error("this access token was revoked (signed out everywhere); sign in again")]
    TokenRevoked,
    /// The user has as many status-event streams open on this node as allowed.
    #[error("at most {max} status-event streams may be open at once per account; close one first")]
    EventStreams {
        /// `max_event_streams_per_user`.
        max: usize,
    },
    /// No such device, or it was revoked.
    #[error("no device {device_id:?}")]
    UnknownDevice {
        /// The id the header named.
        device_id: String,
    },
    /// The device belongs to another account.
    #[error("device {device_id:?} belongs to another account")]
    Forbidden {
        /// The id the header named.
        device_id: String,
    },
    /// The device is not connected to this relay node.
    #[error("device {name:?} ({device_id}) is offline")]
    DeviceOffline {
        /// The device's name.
        name: String,
        /// The device's id.
        device_id: String,
    },
    /// The device was connected when the stream was authorized, but its connection
    /// failed when the relay opened the stream to it.
    #[error("device connection lost: {0}")]
    DeviceConnectionLost(String),
    /// The user's plan does not exist (an operator's mistake).
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    /// The plan's limit on streams open at once is reached.
    #[error("plan limit: the {plan} plan allows {max} streams open at once")]
    PlanStreams {
        /// The plan's name.
        plan: String,
        /// `max_concurrent_streams`.
        max: i64,
    },
    /// The plan's daily action limit is reached.
    #[error(
        "plan limit: the {plan} plan allows {max} actions per day; the count resets at 00:00 UTC"
    )]
    PlanActions {
        /// The plan's name.
        plan: String,
        /// `max_actions_per_day`.
        max: i64,
    },
    /// A lookup the decision needed failed (the detail is logged, not sent).
    #[error("the relay could not check the request")]
    Internal,
}

impl Denied {
    /// The ERROR code the browser gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Denied::Draining => ErrorCode::PeerGone,
            Denied::BadToken(_) | Denied::AccountGone | Denied::TokenRevoked => {
                ErrorCode::Unauthenticated
            }
            Denied::EventStreams { .. }
            | Denied::PlanStreams { .. }
            | Denied::PlanActions { .. } => ErrorCode::LimitExceeded,
            Denied::UnknownDevice { .. } => ErrorCode::UnknownDevice,
            Denied::Forbidden { .. } => ErrorCode::Forbidden,
            Denied::DeviceOffline { .. } | Denied::DeviceConnectionLost(_) => {
                ErrorCode::DeviceOffline
            }
            Denied::UnknownPlan(_) | Denied::Internal => ErrorCode::Internal,
        }
    }

    /// The `aisa_refusals_total{reason}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Draining => "draining",
            Denied::BadToken(_) | Denied::AccountGone => "unauthenticated",
            Denied::TokenRevoked => "token_revoked",
            Denied::EventStreams { .. } => "event_streams_per_user",
            Denied::UnknownDevice { .. } => "unknown_device",
            Denied::Forbidden { .. } => "forbidden",
            Denied::DeviceOffline { .. } | Denied::DeviceConnectionLost(_) => "device_offline",
            Denied::UnknownPlan(_) | Denied::Internal => "internal",
            Denied::PlanStreams { .. } => "plan_streams",
            Denied::PlanActions { .. } => "plan_actions",
        }
    }
}

/// A user whose token was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user's id.
    pub user_id: String,
    /// The plan the user is on.
    pub plan_id: String,
    /// The token's generation (claim `generation`).
    pub generation: i64,
}

/// What the relay knows when it decides about a stream. The driver fills in what the
/// header's destination needs: a status stream needs no device, plan or stream count.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Whether the relay is shutting down.
    pub draining: bool,
    /// The verified token's claims, or the verifier's message.
    pub token: Result<Claims, String>,
    /// The token's user, if the token was valid and the user exists.
    pub user: Option<User>,
    /// The device the header names, if it exists (revoked devices included).
    pub device: Option<Device>,
    /// Whether that device is connected to this node.
    pub device_online: bool,
    /// The user's plan, if it exists.
    pub plan: Option<Plan>,
    /// The user's streams open on this node now.
    pub open_streams: i64,
    /// The user's status-event streams open on this node now.
    pub open_event_streams: i64,
    /// `max_event_streams_per_user`.
    pub max_event_streams: usize,
}

impl Facts {
    /// Facts with only the token known (the rest empty): the start of gathering.
    pub fn new(draining: bool, token: Result<Claims, String>, max_event_streams: usize) -> Self {
        Facts {
            draining,
            token,
            user: None,
            device: None,
            device_online: false,
            plan: None,
            open_streams: 0,
            open_event_streams: 0,
            max_event_streams,
        }
    }
}

/// Where a header asks to go, before any check: what the driver must look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// The user's device-status events, served by the relay (a Control stream with no
    /// device id).
    StatusEvents,
    /// A device, by id.
    Device(&'a str),
}

/// Where `open` asks to go.
pub fn destination(open: &OpenHeader) -> Destination<'_> {
    if open.kind == StreamKind::Control && open.device_id.is_empty() {
        Destination::StatusEvents
    } else {
        Destination::Device(&open.device_id)
    }
}

/// What an authorized stream gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Splice the stream to a device connected here, after writing `header` to it.
    Device {
        /// The device's id (its connection is in the registry).
        device_id: String,
        /// The relay-stamped header for the device.
        header: RelayHeader,
        /// The plan's name, for the refusals of a lost race.
        plan: String,
        /// The user's concurrent-stream limit: a place is taken for the stream's life.
        max_streams: i64,
        /// For an Action stream, the plan's daily action limit: one action is counted
        /// (and given back if the stream never reaches the device). Control streams do
        /// not count.
        max_actions_per_day: Option<i64>,
    },
    /// Serve the user's device-status events.
    StatusEvents {
        /// The user.
        user_id: String,
        /// The user's event-stream limit: a place is taken for the stream's life.
        max_streams: usize,
    },
}

impl Grant {
    /// The refusal when the place this grant reserves was taken meanwhile.
    pub fn refuse_streams(&self) -> Denied {
        match self {
            Grant::Device {
                plan, max_streams, ..
            } => Denied::PlanStreams {
                plan: plan.clone(),
                max: *max_streams,
            },
            Grant::StatusEvents { max_streams, .. } => Denied::EventStreams { max: *max_streams },
        }
    }
}

/// The first checks, shared with the HTTP API's bearer tokens: the relay is not
/// draining, the token verified, its user exists and is enabled, and the token's
/// generation was not revoked.
pub fn authenticate(facts: &Facts) -> Result<Authenticated, Denied> {
    if facts.draining {
        return Err(Denied::Draining);
    }
    let claims = facts
        .token
        .as_ref()
        .map_err(|e| Denied::BadToken(e.clone()))?;
    let user = match &facts.user {
        Some(user) if !user.disabled && user.id == claims.sub => user,
        _ => return Err(Denied::AccountGone),
    };
    if claims.generation < user.token_generation {
        return Err(Denied::TokenRevoked);
    }
    Ok(Authenticated {
        user_id: user.id.clone(),
        plan_id: user.plan_id.clone(),
        generation: claims.generation,
    })
}

/// Decides whether the stream `open` (on browser session `session_id`) may go where it
/// asks. Pure: the same header and facts give the same answer.
pub fn authorize(open: &OpenHeader, session_id: u64, facts: &Facts) -> Result<Grant, Denied> {
    let who = authenticate(facts)?;
    let device_id = match destination(open) {
        Destination::StatusEvents => {
            if facts.open_event_streams >= facts.max_event_streams as i64 {
                return Err(Denied::EventStreams {
                    max: facts.max_event_streams,
                });
            }
            return Ok(Grant::StatusEvents {
                user_id: who.user_id,
                max_streams: facts.max_event_streams,
            });
        }
        Destination::Device(id) => id,
    };
    let device = match &facts.device {
        Some(device) if !device.revoked && device.id == device_id => device,
        _ => {
            return Err(Denied::UnknownDevice {
                device_id: device_id.to_owned(),
            });
        }
    };
    if device.user_id != who.user_id {
        return Err(Denied::Forbidden {
            device_id: device_id.to_owned(),
        });
    }
    if !facts.device_online {
        return Err(Denied::DeviceOffline {
            name: device.name.clone(),
            device_id: device.id.clone(),
        });
    }
    let plan = match &facts.plan {
        Some(plan) if plan.id == who.plan_id => plan,
        _ => return Err(Denied::UnknownPlan(who.plan_id)),
    };
    if facts.open_streams >= plan.max_concurrent_streams {
        return Err(Denied::PlanStreams {
            plan: plan.name.clone(),
            max: plan.max_concurrent_streams,
        });
    }
    Ok(Grant::Device {
        device_id: device.id.clone(),
        header: RelayHeader {
            user_id: who.user_id,
            session_id,
            kind: open.kind,
            e2e: open.e2e.clone(),
        },
        plan: plan.name.clone(),
        max_streams: plan.max_concurrent_streams,
        // Only Action streams count as actions. Control streams (GET_STATUS,
        // INSTALL_APP, UNINSTALL_APP, pairing) do not; the desktop refuses an
        // EXECUTE_ACTION on them.
        max_actions_per_day: (open.kind == StreamKind::Action).then_some(plan.max_actions_per_day),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: u64 = 7;

    fn claims(user: &str, generation: i64) -> Claims {
        Claims {
            sub: user.into(),
            email: format!("{user}@example.com"),
            iat: 0,
            exp: u64::MAX,
            generation,
        }
    }

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: String::new(),
            disabled: false,
            created_at: 0,
            plan_id: "free".into(),
            token_generation: 1,
        }
    }

    fn device(id: &str, owner: &str) -> Device {
        Device {
            id: id.into(),
            user_id: owner.into(),
            name: "laptop".into(),
            status: "online".into(),
            node_version: None,
            identity_key: None,
            relay_node: None,
            connection_id: None,
            last_seen: None,
            revoked: false,
        }
    }

    fn plan() -> Plan {
        Plan {
            id: "free".into(),
            name: "Free".into(),
            max_devices: 3,
            max_concurrent_streams: 2,
            max_actions_per_day: 100,
        }
    }

    /// Facts under which an Action stream of `u1` to `d1` is granted.
    fn granted() -> Facts {
        Facts {
            draining: false,
            token: Ok(claims("u1", 1)),
            user: Some(user("u1")),
            device: Some(device("d1", "u1")),
            device_online: true,
            plan: Some(plan()),
            open_streams: 0,
            open_event_streams: 0,
            max_event_streams: 8,
        }
    }

    fn header(kind: StreamKind, device_id: &str) -> OpenHeader {
        OpenHeader {
            device_id: device_id.into(),
            kind,
            token: "t".into(),
            e2e: None,
        }
    }

    fn action() -> OpenHeader {
        header(StreamKind::Action, "d1")
    }

    fn events() -> OpenHeader {
        header(StreamKind::Control, "")
    }

    fn denied(open: &OpenHeader, facts: &Facts) -> Denied {
        authorize(open, SESSION, facts).expect_err("refused")
    }

    #[test]
    fn an_action_stream_to_an_own_online_device_is_granted_and_counts_an_action() {
        let grant = authorize(&action(), SESSION, &granted()).expect("granted");
        assert_eq!(
            grant,
            Grant::Device {
                device_id: "d1".into(),
                header: RelayHeader {
                    user_id: "u1".into(),
                    session_id: SESSION,
                    kind: StreamKind::Action,
                    e2e: None,
                },
                plan: "Free".into(),
                max_streams: 2,
                max_actions_per_day: Some(100),
            }
        );
    }

    #[test]
    fn a_control_stream_to_a_device_is_granted_without_counting_an_action() {
        let grant = authorize(&header(StreamKind::Control, "d1"), SESSION, &granted()).unwrap();
        let Grant::Device {
            header,
            max_actions_per_day,
            ..
        } = grant
        else {
            panic!("a device grant")
        };
        assert_eq!(header.kind, StreamKind::Control);
        assert_eq!(max_actions_per_day, None);
    }

    #[test]
    fn the_e2e_offer_is_passed_on_to_the_device() {
        let mut open = action();
        open.e2e = Some(vec![9; 32]);
        let Grant::Device { header, .. } = authorize(&open, SESSION, &granted()).unwrap() else {
            panic!("a device grant")
        };
        assert_eq!(header.e2e, open.e2e);
    }

    #[test]
    fn a_control_stream_with_no_device_gets_the_status_events() {
        let mut facts = granted();
        // A status stream needs no device, plan or stream count.
        facts.device = None;
        facts.plan = None;
        facts.device_online = false;
        facts.open_streams = i64::MAX;
        assert_eq!(
            authorize(&events(), SESSION, &facts).unwrap(),
            Grant::StatusEvents {
                user_id: "u1".into(),
                max_streams: 8
            }
        );
        // An Action stream with no device id is a device stream, to no device.
        assert_eq!(
            denied(&header(StreamKind::Action, ""), &facts),
            Denied::UnknownDevice {
                device_id: String::new()
            }
        );
    }

    #[test]
    fn every_refusal_has_its_code_reason_and_message() {
        let cases = [
            (
                Denied::Draining,
                ErrorCode::PeerGone,
                "draining",
                "shutting down",
            ),
            (
                Denied::BadToken("invalid or expired token: ExpiredSignature".into()),
                ErrorCode::Unauthenticated,
                "unauthenticated",
                "invalid or expired token",
            ),
            (
                Denied::AccountGone,
                ErrorCode::Unauthenticated,
                "unauthenticated",
                "disabled or gone",
            ),
            (
                Denied::TokenRevoked,
                ErrorCode::Unauthenticated,
                "token_revoked",
                "revoked",
            ),
            (
                Denied::EventStreams { max: 8 },
                ErrorCode::LimitExceeded,
                "event_streams_per_user",
                "at most 8 status-event streams",
            ),
            (
                Denied::UnknownDevice {
                    device_id: "d9".into(),
                },
                ErrorCode::UnknownDevice,
                "unknown_device",
                "no device \"d9\"",
            ),
            (
                Denied::Forbidden {
                    device_id: "d2".into(),
                },
                ErrorCode::Forbidden,
                "forbidden",
                "belongs to another account",
            ),
            (
                Denied::DeviceOffline {
                    name: "laptop".into(),
                    device_id: "d1".into(),
                },
                ErrorCode::DeviceOffline,
                "device_offline",
                "device \"laptop\" (d1) is offline",
            ),
            (
                Denied::DeviceConnectionLost("closed".into()),
                ErrorCode::DeviceOffline,
                "device_offline",
                "device connection lost: closed",
            ),
            (
                Denied::UnknownPlan("gold".into()),
                ErrorCode::Internal,
                "internal",
                "unknown plan \"gold\"",
            ),
            (
                Denied::PlanStreams {
                    plan: "Free".into(),
                    max: 2,
                },
                ErrorCode::LimitExceeded,
                "plan_streams",
                "the Free plan allows 2 streams open at once",
            ),
            (
                Denied::PlanActions {
                    plan: "Free".into(),
                    max: 100,
                },
                ErrorCode::LimitExceeded,
                "plan_actions",
                "allows 100 actions per day; the count resets at 00:00 UTC",
            ),
            (
                Denied::Internal,
                ErrorCode::Internal,
                "internal",
                "could not check the request",
            ),
        ];
        for (denied, code, reason, message) in cases {
            assert_eq!(denied.code(), code, "{denied:?}");
            assert_eq!(denied.reason(), reason, "{denied:?}");
            assert!(denied.to_string().contains(message), "{denied}");
        }
    }

    #[test]
    fn each_fact_refuses_on_its_own() {
        let refused = |change: fn(&mut Facts), open: OpenHeader| {
            let mut facts = granted();
            change(&mut facts);
            denied(&open, &facts)
        };
        assert_eq!(refused(|f| f.draining = true, action()), Denied::Draining);
        assert_eq!(refused(|f| f.draining = true, events()), Denied::Draining);
        assert_eq!(
            refused(
                |f| f.token = Err("invalid or expired token: x".into()),
                action()
            ),
            Denied::BadToken("invalid or expired token: x".into())
        );
        assert_eq!(refused(|f| f.user = None, action()), Denied::AccountGone);
        assert_eq!(
            refused(|f| f.user.as_mut().unwrap().disabled = true, events()),
            Denied::AccountGone
        );
        assert_eq!(
            refused(|f| f.user = Some(user("u2")), action()),
            Denied::AccountGone,
            "a user record for another id is no user"
        );
        assert_eq!(
            refused(|f| f.token = Ok(claims("u1", 0)), action()),
            Denied::TokenRevoked
        );
        assert_eq!(
            refused(|f| f.open_event_streams = 8, events()),
            Denied::EventStreams { max: 8 }
        );
        assert_eq!(
            refused(|f| f.device = None, action()),
            Denied::UnknownDevice {
                device_id: "d1".into()
            }
        );
        assert_eq!(
            refused(|f| f.device.as_mut().unwrap().revoked = true, action()),
            Denied::UnknownDevice {
                device_id: "d1".into()
            },
            "a revoked device is unknown, not forbidden"
        );
        assert_eq!(
            refused(|f| f.device = Some(device("d1", "u2")), action()),
            Denied::Forbidden {
                device_id: "d1".into()
            }
        );
        assert_eq!(
            refused(|f| f.device_online = false, action()),
            Denied::DeviceOffline {
                name: "laptop".into(),
                device_id: "d1".into()
            }
        );
        assert_eq!(
            refused(|f| f.plan = None, action()),
            Denied::UnknownPlan("free".into())
        );
        assert_eq!(
            refused(|f| f.open_streams = 2, action()),
            Denied::PlanStreams {
                plan: "Free".into(),
                max: 2
            }
        );
        assert_eq!(
            refused(|f| f.open_streams = 2, header(StreamKind::Control, "d1")),
            Denied::PlanStreams {
                plan: "Free".into(),
                max: 2
            },
            "Control streams to a device count against the concurrency limit too"
        );
    }

    #[test]
    fn a_newer_token_generation_is_accepted() {
        let mut facts = granted();
        facts.token = Ok(claims("u1", 5));
        assert!(authorize(&action(), SESSION, &facts).is_ok());
        assert_eq!(authenticate(&facts).unwrap().generation, 5);
    }

    #[test]
    fn refusals_come_in_order_of_the_checks() {
        // Every fact wrong at once; fixing them one by one, in order, shows each next
        // refusal: the first failing check wins.
        let mut facts = Facts {
            draining: true,
            token: Err("invalid or expired token: x".into()),
            user: None,
            device: Some(device("d1", "u2")),
            device_online: false,
            plan: None,
            open_streams: 2,
            open_event_streams: 8,
            max_event_streams: 8,
        };
        let mut seen = Vec::new();
        let steps: [fn(&mut Facts); 8] = [
            |f| f.draining = false,
            |f| f.token = Ok(claims("u1", 0)),
            |f| f.user = Some(user("u1")),
            |f| f.token = Ok(claims("u1", 1)),
            |f| f.device = Some(device("d1", "u1")),
            |f| f.device_online = true,
            |f| f.plan = Some(plan()),
            |f| f.open_streams = 1,
        ];
        for step in steps {
            seen.push(denied(&action(), &facts).reason());
            step(&mut facts);
        }
        assert_eq!(
            seen,
            [
                "draining",
                "unauthenticated",
                "unauthenticated",
                "token_revoked",
                "forbidden",
                "device_offline",
                "internal",
                "plan_streams",
            ]
        );
        assert!(authorize(&action(), SESSION, &facts).is_ok());

        // A status stream: draining, then authentication, then its own limit; device,
        // plan and stream count never matter.
        let mut facts = granted();
        facts.open_event_streams = 8;
        facts.token = Ok(claims("u1", 0));
        facts.device = None;
        assert_eq!(denied(&events(), &facts), Denied::TokenRevoked);
        facts.token = Ok(claims("u1", 1));
        assert_eq!(denied(&events(), &facts), Denied::EventStreams { max: 8 });
        facts.draining = true;
        assert_eq!(denied(&events(), &facts), Denied::Draining);
    }

    #[test]
    fn an_unknown_device_is_told_before_ownership() {
        // An unknown device id is `unknown_device` whoever asks; a known device of
        // another account is `forbidden` (never `unknown_device`, never offline).
        let mut facts = granted();
        facts.device = Some(device("d1", "u2"));
        facts.device_online = false;
        assert_eq!(
            denied(&action(), &facts).code(),
            ErrorCode::Forbidden,
            "ownership is checked before presence"
        );
        facts.device = None;
        assert_eq!(denied(&action(), &facts).code(), ErrorCode::UnknownDevice);
    }

    #[test]
    fn a_lost_race_for_a_place_gives_the_limit_refusal() {
        let grant = authorize(&action(), SESSION, &granted()).unwrap();
        assert_eq!(
            grant.refuse_streams(),
            Denied::PlanStreams {
                plan: "Free".into(),
                max: 2
            }
        );
        let grant = authorize(&events(), SESSION, &granted()).unwrap();
        assert_eq!(grant.refuse_streams(), Denied::EventStreams { max: 8 });
    }
}
