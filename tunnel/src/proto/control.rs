//! The desktop's control stream, both ends: HELLO, WELCOME (or ERROR), then heartbeats.
//!
//! The desktop opens the control stream and sends HELLO; the relay answers WELCOME (with
//! the heartbeat interval) or one ERROR and closes the connection. After WELCOME the
//! desktop sends a PING every interval and the relay answers each with a PONG carrying
//! the same nonce. A desktop that hears no PONG for [`MISSED_HEARTBEATS`] intervals
//! declares the connection dead. Any other message on the control stream gets an ERROR
//! `unsupported` from the relay and is ignored by the desktop.

use std::time::{Duration, Instant};

use super::{HEADER_TIMEOUT, HeaderReader, MISSED_HEARTBEATS, Refusal, WELCOME_TIMEOUT};
use crate::frame::{FrameBuffer, encode_frame};
use crate::{Body, Envelope, ErrorCode, Hello, MAX_FRAME_LEN, Version};

/// What a control-stream machine learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// Relay side: the desktop's HELLO. Check its token, then call
    /// [`RelayControl::welcome`] or [`RelayControl::refuse`].
    Hello(Hello),
    /// Desktop side: the relay accepted the HELLO.
    Welcome {
        /// The device id the token belongs to.
        device_id: String,
        /// The version both sides use.
        version: Version,
        /// How often to PING (at least a second).
        heartbeat: Duration,
    },
    /// Relay side: a PING arrived (and its PONG is queued).
    Ping,
    /// Desktop side: a PONG answered the latest PING after this long.
    RoundTrip(Duration),
}

fn frame_of(envelope: &Envelope, out: &mut Vec<u8>) {
    // An envelope built here is far below the frame cap.
    let _ = encode_frame(&envelope.encode(), MAX_FRAME_LEN, out);
}

fn decode(frames: &mut FrameBuffer) -> Result<Option<Envelope>, Refusal> {
    match frames.next_frame() {
        Ok(Some(body)) => Envelope::decode(&body)
            .map(Some)
            .map_err(Refusal::MalformedMessage),
        Ok(None) => Ok(None),
        Err(err) => Err(Refusal::Framing(err)),
    }
}

#[derive(Debug)]
enum NodeState {
    AwaitWelcome { deadline: Instant },
    Beating(Beat),
}

#[derive(Debug)]
struct Beat {
    every: Duration,
    next_ping: Instant,
    last_pong: Instant,
    nonce: u64,
    sent_at: Instant,
}

/// The desktop's end of its control stream.
///
/// Drive it: send what [`NodeControl::poll_transmit`] gives, feed received bytes to
/// [`NodeControl::receive`], and call [`NodeControl::handle_timeout`] at
/// [`NodeControl::deadline`].
#[derive(Debug)]
pub struct NodeControl {
    frames: FrameBuffer,
    state: NodeState,
    out: Vec<u8>,
}

impl NodeControl {
    /// Starts the exchange at `now`: queues HELLO and waits for WELCOME.
    pub fn new(now: Instant, hello: &Hello) -> Self {
        let mut out = Vec::new();
        let _ = encode_frame(&hello.encode(), MAX_FRAME_LEN, &mut out);
        NodeControl {
            frames: FrameBuffer::new(MAX_FRAME_LEN),
            state: NodeState::AwaitWelcome {
                deadline: now + WELCOME_TIMEOUT,
            },
            out,
        }
    }

    /// Bytes to send, if any are queued.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// When to call [`NodeControl::handle_timeout`]: the WELCOME deadline, then the
    /// next heartbeat.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            NodeState::AwaitWelcome { deadline } => *deadline,
            NodeState::Beating(beat) => beat.next_ping,
        }
    }

    /// Whether WELCOME has arrived.
    pub fn is_welcomed(&self) -> bool {
        matches!(self.state, NodeState::Beating(_))
    }

    /// Time has reached `now`: refuses a missing WELCOME, declares the connection dead
    /// after [`MISSED_HEARTBEATS`] silent intervals, or queues the next PING.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Refusal> {
        match &mut self.state {
            NodeState::AwaitWelcome { deadline } => {
                if now >= *deadline {
                    return Err(Refusal::HeaderTimeout {
                        what: "WELCOME",
                        secs: WELCOME_TIMEOUT.as_secs(),
                    });
                }
            }
            NodeState::Beating(beat) => {
                if now < beat.next_ping {
                    return Ok(());
                }
                let silent = now.saturating_duration_since(beat.last_pong);
                if silent > beat.every * MISSED_HEARTBEATS {
                    return Err(Refusal::HeartbeatsMissed {
                        missed: MISSED_HEARTBEATS,
                        secs: silent.as_secs(),
                    });
                }
                beat.nonce += 1;
                beat.sent_at = now;
                beat.next_ping = now + beat.every;
                let nonce = beat.nonce;
                frame_of(&Envelope::new(nonce, Body::Ping { nonce }), &mut self.out);
            }
        }
        Ok(())
    }

    /// Takes bytes from the relay.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<ControlEvent>, Refusal> {
        self.frames.push(bytes);
        let mut events = Vec::new();
        while let Some(envelope) = decode(&mut self.frames)? {
            match (&mut self.state, envelope.body) {
                (
                    NodeState::AwaitWelcome { .. },
                    Body::Welcome {
                        device_id,
                        version,
                        heartbeat_secs,
                    },
                ) => {
                    let every = Duration::from_secs(heartbeat_secs.max(1).into());
                    self.state = NodeState::Beating(Beat {
                        every,
                        next_ping: now,
                        last_pong: now,
                        nonce: 0,
                        sent_at: now,
                    });
                    events.push(ControlEvent::Welcome {
                        device_id,
                        version,
                        heartbeat: every,
                    });
                }
                (_, Body::Error { code, message }) => {
                    return Err(Refusal::Remote { code, message });
                }
                (NodeState::AwaitWelcome { .. }, other) => {
                    return Err(Refusal::UnexpectedMessage {
                        what: other.type_name().to_owned(),
                        place: "in answer to HELLO",
                    });
                }
                (NodeState::Beating(beat), Body::Pong { nonce }) => {
                    beat.last_pong = now;
                    if nonce == beat.nonce {
                        events.push(ControlEvent::RoundTrip(
                            now.saturating_duration_since(beat.sent_at),
                        ));
                    }
                }
                // Anything else is ignored: a newer relay may say more.
                (NodeState::Beating(_), _) => {}
            }
        }
        Ok(events)
    }

    /// The relay ended the control stream.
    pub fn finish(&self) -> Refusal {
        Refusal::EndedEarly {
            when: if self.is_welcomed() {
                "(the relay closed the control stream)"
            } else {
                "before WELCOME"
            },
        }
    }
}

#[derive(Debug)]
enum RelayState {
    AwaitHello(HeaderReader<Hello>),
    Deciding,
    Serving(Watch),
}

/// The relay's watch on a welcomed desktop's heartbeats.
#[derive(Debug)]
struct Watch {
    every: Duration,
    last_heard: Instant,
}

impl Watch {
    fn deadline(&self) -> Instant {
        self.last_heard + self.every * MISSED_HEARTBEATS
    }
}

/// The relay's end of a desktop's control stream.
///
/// Feed bytes to [`RelayControl::receive`] (reading at most [`RelayControl::want`] while
/// the HELLO is awaited); on [`ControlEvent::Hello`] check the token and call
/// [`RelayControl::welcome`] or [`RelayControl::refuse`]; send what
/// [`RelayControl::poll_transmit`] gives; call [`RelayControl::handle_timeout`] at
/// [`RelayControl::deadline`]. After WELCOME the relay expects to hear from the desktop
/// (a PING, or any frame) at least once every [`MISSED_HEARTBEATS`] intervals, and
/// declares it gone otherwise, so a stuck node does not stay "online" on QUIC
/// keep-alives alone.
#[derive(Debug)]
pub struct RelayControl {
    state: RelayState,
    frames: FrameBuffer,
    out: Vec<u8>,
}

impl RelayControl {
    /// A control stream that arrived at `now`: its HELLO is due within
    /// [`HEADER_TIMEOUT`], under the header cap.
    pub fn new(now: Instant) -> Self {
        RelayControl {
            state: RelayState::AwaitHello(HeaderReader::new(now, HEADER_TIMEOUT)),
            frames: FrameBuffer::new(MAX_FRAME_LEN),
            out: Vec::new(),
        }
    }

    /// How many bytes to read next.
    pub fn want(&self) -> usize {
        match &self.state {
            RelayState::AwaitHello(reader) => reader.want(),
            _ => 64 << 10,
        }
    }

    /// When the HELLO must have arrived, or (after WELCOME) when the desktop counts as
    /// gone if nothing more is heard; `None` while the HELLO is being decided.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            RelayState::AwaitHello(reader) => Some(reader.deadline()),
            RelayState::Deciding => None,
            RelayState::Serving(watch) => Some(watch.deadline()),
        }
    }

    /// Refuses a HELLO that did not arrive in time, or a desktop that stopped sending
    /// heartbeats.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), Refusal> {
        match &self.state {
            RelayState::AwaitHello(reader) => reader.handle_timeout(now),
            RelayState::Deciding => Ok(()),
            RelayState::Serving(watch) if now >= watch.deadline() => {
                Err(Refusal::HeartbeatsMissed {
                    missed: MISSED_HEARTBEATS,
                    secs: now.saturating_duration_since(watch.last_heard).as_secs(),
                })
            }
            RelayState::Serving(_) => Ok(()),
        }
    }

    /// Takes bytes from the desktop, received at `now`. Bytes after the HELLO wait until
    /// the decision.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<ControlEvent>, Refusal> {
        if let RelayState::Serving(watch) = &mut self.state
            && !bytes.is_empty()
        {
            watch.last_heard = now;
        }
        if let RelayState::AwaitHello(reader) = &mut self.state {
            return match reader.receive(bytes)? {
                None => Ok(Vec::new()),
                Some((hello, _version)) => {
                    let RelayState::AwaitHello(reader) =
                        std::mem::replace(&mut self.state, RelayState::Deciding)
                    else {
                        unreachable!("matched above")
                    };
                    self.frames.push(&reader.into_rest());
                    Ok(vec![ControlEvent::Hello(hello)])
                }
            };
        }
        self.frames.push(bytes);
        self.answer()
    }

    /// Accepts the HELLO at `now`: queues WELCOME (telling the desktop to PING every
    /// `heartbeat_secs`), starts watching for heartbeats, and answers whatever PINGs
    /// already came.
    pub fn welcome(
        &mut self,
        now: Instant,
        device_id: &str,
        heartbeat_secs: u32,
    ) -> Result<Vec<ControlEvent>, Refusal> {
        frame_of(
            &Envelope::new(
                0,
                Body::Welcome {
                    device_id: device_id.to_owned(),
                    version: Version::CURRENT,
                    heartbeat_secs,
                },
            ),
            &mut self.out,
        );
        self.state = RelayState::Serving(Watch {
            every: Duration::from_secs(heartbeat_secs.max(1).into()),
            last_heard: now,
        });
        self.answer()
    }

    /// Refuses the HELLO (or the whole connection): queues one ERROR. Close the
    /// connection once it is sent.
    pub fn refuse(&mut self, code: ErrorCode, message: &str) {
        frame_of(&Envelope::error(0, code, message), &mut self.out);
        self.state = RelayState::Deciding;
    }

    /// Bytes to send, if any are queued.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// The desktop ended the control stream. Before the HELLO that is a refusal (cut
    /// inside the HELLO's frame, or missing); after it, the connection is simply over.
    pub fn finish(&self) -> Refusal {
        match &self.state {
            RelayState::AwaitHello(reader) => reader.finish(),
            _ => Refusal::EndedEarly {
                when: "(the desktop closed its control stream)",
            },
        }
    }

    fn answer(&mut self) -> Result<Vec<ControlEvent>, Refusal> {
        let mut events = Vec::new();
        if !matches!(self.state, RelayState::Serving(_)) {
            return Ok(events);
        }
        loop {
            let reply = match self.frames.next_frame() {
                Ok(None) => return Ok(events),
                Err(err) => return Err(Refusal::Framing(err)),
                Ok(Some(body)) => match Envelope::decode(&body) {
                    Ok(Envelope {
                        request_id,
                        body: Body::Ping { nonce },
                        ..
                    }) => {
                        events.push(ControlEvent::Ping);
                        Envelope::new(request_id, Body::Pong { nonce })
                    }
                    Ok(other) => Envelope::error(
                        other.request_id,
                        ErrorCode::Unsupported,
                        "only PING is accepted on the control stream",
                    ),
                    Err(err) => Refusal::MalformedMessage(err).to_envelope(0),
                },
            };
            frame_of(&reply, &mut self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            device_token: "dt".into(),
            node_version: "0.1.0".into(),
            identity_key: vec![7; 32],
        }
    }

    /// Moves every queued byte from one end to the other.
    fn pump(node: &mut NodeControl, relay: &mut RelayControl, now: Instant) -> Vec<ControlEvent> {
        let mut events = Vec::new();
        loop {
            let mut moved = false;
            if let Some(bytes) = node.poll_transmit() {
                events.extend(relay.receive(&bytes, now).unwrap());
                moved = true;
            }
            if let Some(bytes) = relay.poll_transmit() {
                events.extend(node.receive(&bytes, now).unwrap());
                moved = true;
            }
            if !moved {
                return events;
            }
        }
    }

    #[test]
    fn hello_welcome_then_pings_every_interval_with_round_trips() {
        let t0 = Instant::now();
        let mut node = NodeControl::new(t0, &hello());
        let mut relay = RelayControl::new(t0);
        let events = pump(&mut node, &mut relay, t0);
        assert_eq!(events, [ControlEvent::Hello(hello())]);
        assert!(relay.welcome(t0, "dev-1", 15).unwrap().is_empty());
        let events = pump(&mut node, &mut relay, t0);
        assert_eq!(
            events,
            [ControlEvent::Welcome {
                device_id: "dev-1".into(),
                version: Version::CURRENT,
                heartbeat: Duration::from_secs(15),
            }]
        );
        // The first PING goes at once, the next one interval later.
        assert_eq!(node.deadline(), t0);
        node.handle_timeout(t0).unwrap();
        let sent = node.poll_transmit().unwrap();
        assert_eq!(relay.receive(&sent, t0).unwrap(), [ControlEvent::Ping]);
        let pong = relay.poll_transmit().unwrap();
        let later = t0 + Duration::from_millis(40);
        assert_eq!(
            node.receive(&pong, later).unwrap(),
            [ControlEvent::RoundTrip(Duration::from_millis(40))]
        );
        assert_eq!(node.deadline(), t0 + Duration::from_secs(15));
        node.handle_timeout(t0 + Duration::from_secs(14)).unwrap();
        assert!(node.poll_transmit().is_none());
    }

    #[test]
    fn a_silent_relay_is_declared_dead_after_three_intervals() {
        let t0 = Instant::now();
        let mut node = NodeControl::new(t0, &hello());
        let mut relay = RelayControl::new(t0);
        pump(&mut node, &mut relay, t0);
        relay.welcome(t0, "d", 1).unwrap();
        pump(&mut node, &mut relay, t0);
        let mut now = t0;
        for _ in 0..4 {
            node.handle_timeout(now).unwrap();
            assert!(node.poll_transmit().is_some(), "a PING each second");
            now = node.deadline();
        }
        let refusal = node.handle_timeout(now).unwrap_err();
        assert_eq!(refusal.reason(), "heartbeats_missed");
        assert_eq!(refusal.code(), ErrorCode::PeerGone);
    }

    #[test]
    fn a_missing_welcome_times_out_and_an_error_is_the_relays_refusal() {
        let t0 = Instant::now();
        let mut node = NodeControl::new(t0, &hello());
        node.handle_timeout(t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(
            node.handle_timeout(t0 + WELCOME_TIMEOUT)
                .unwrap_err()
                .to_string(),
            "no WELCOME within 10 s"
        );
        let mut relay = RelayControl::new(t0);
        relay.receive(&node.poll_transmit().unwrap(), t0).unwrap();
        relay.refuse(
            ErrorCode::Unauthenticated,
            "unknown or revoked device token",
        );
        let refusal = node
            .receive(&relay.poll_transmit().unwrap(), t0)
            .unwrap_err();
        assert_eq!(refusal.code(), ErrorCode::Unauthenticated);
        assert!(refusal.is_final());
    }

    #[test]
    fn the_relay_answers_anything_but_ping_with_unsupported() {
        let t0 = Instant::now();
        let mut relay = RelayControl::new(t0);
        let mut wire = Vec::new();
        encode_frame(&hello().encode(), MAX_FRAME_LEN, &mut wire).unwrap();
        frame_of(&Envelope::new(4, Body::GetStatus), &mut wire);
        // The HELLO and the early message arrive together; the answer waits for WELCOME.
        assert_eq!(
            relay.receive(&wire, t0).unwrap(),
            [ControlEvent::Hello(hello())]
        );
        assert!(relay.poll_transmit().is_none());
        relay.welcome(t0, "d", 15).unwrap();
        let mut answers = FrameBuffer::new(MAX_FRAME_LEN);
        answers.push(&relay.poll_transmit().unwrap());
        let welcome = Envelope::decode(&answers.next_frame().unwrap().unwrap()).unwrap();
        assert!(matches!(welcome.body, Body::Welcome { .. }));
        let error = Envelope::decode(&answers.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(error.request_id, 4);
        assert_eq!(
            error.body,
            Body::Error {
                code: "unsupported".into(),
                message: "only PING is accepted on the control stream".into()
            }
        );
    }

    #[test]
    fn the_relay_declares_a_silent_desktop_gone_after_three_intervals() {
        let t0 = Instant::now();
        let mut node = NodeControl::new(t0, &hello());
        let mut relay = RelayControl::new(t0);
        relay.receive(&node.poll_transmit().unwrap(), t0).unwrap();
        relay.welcome(t0, "d", 10).unwrap();
        assert_eq!(relay.deadline(), Some(t0 + Duration::from_secs(30)));
        // A PING at 25 s moves the deadline to 55 s.
        node.receive(&relay.poll_transmit().unwrap(), t0).unwrap();
        node.handle_timeout(t0).unwrap();
        let at = t0 + Duration::from_secs(25);
        relay.receive(&node.poll_transmit().unwrap(), at).unwrap();
        assert!(relay.handle_timeout(t0 + Duration::from_secs(54)).is_ok());
        let refusal = relay
            .handle_timeout(t0 + Duration::from_secs(55))
            .unwrap_err();
        assert_eq!(refusal.reason(), "heartbeats_missed");
        assert_eq!(refusal.to_string(), "no heartbeat for 3 intervals (30 s)");
    }

    #[test]
    fn a_hello_cut_mid_frame_is_told_apart_from_a_missing_one() {
        let t0 = Instant::now();
        let relay = RelayControl::new(t0);
        assert_eq!(relay.finish().reason(), "header_missing");
        let mut relay = RelayControl::new(t0);
        relay.receive(&[0, 0, 0, 9, 1], t0).unwrap();
        assert_eq!(relay.finish().reason(), "malformed_frame");
        assert!(relay.finish().to_string().contains("mid-frame"));
    }

    #[test]
    fn a_hello_must_arrive_within_ten_seconds() {
        let t0 = Instant::now();
        let relay = RelayControl::new(t0);
        assert_eq!(relay.deadline(), Some(t0 + HEADER_TIMEOUT));
        assert_eq!(
            relay
                .handle_timeout(t0 + HEADER_TIMEOUT)
                .unwrap_err()
                .to_string(),
            "no HELLO within 10 s"
        );
    }
}
