//! Which transport the node reaches the relay on, as pure state machines with time
//! passed in (no tokio, no clock, no socket): the driver in `connection.rs` does the I/O.
//!
//! * [`Race`]: one connection attempt, happy-eyeballs style. QUIC is dialled first; TCP
//!   (the mux over a WebSocket on the relay's HTTP port) [`PathConfig::head_start`] later,
//!   or at once when QUIC fails sooner. The first leg to connect wins. On a network where
//!   TCP is remembered to have been needed, both are dialled at once (QUIC gets no head
//!   start it would waste).
//! * [`Healing`]: while on TCP, when to try QUIC again in the background: after
//!   [`PathConfig::probe_first`], then doubling (jittered) up to [`PathConfig::probe_max`].
//!   A probe that gets a WELCOME over QUIC becomes the node's connection; streams already
//!   running on TCP finish there.
//! * [`PathMemory`]: what worked per network (relay address and the local address the
//!   system routes to it from), for [`PathConfig::remember_for`], kept in
//!   `transport.json` in the node's home so a restart on a UDP-blocked network does not
//!   wait for QUIC first.
//!
//! What is not here: the dialling, the HELLO/WELCOME (tunnel's `NodeControl`), and the
//! relay's side of a move (relay-edge `desktop.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A way to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Raw QUIC (ALPN `aisa/1`) to the relay's UDP port.
    Quic,
    /// The mux over a WebSocket (`/tunnel/desktop`) on the relay's HTTP(S) port.
    Tcp,
}

impl Transport {
    /// `quic` or `tcp` (logs, metrics, `transport.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The timings of racing, healing and remembering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathConfig {
    /// How long QUIC is dialled alone before TCP is dialled too. A QUIC handshake takes
    /// one round trip and TCP + TLS + the WebSocket upgrade three, so on a network where
    /// both work QUIC wins with this head start; where UDP is black-holed the node is on
    /// TCP after this plus TCP's own set-up. 250 ms is the connection-attempt delay RFC
    /// 8305 recommends.
    pub head_start: Duration,
    /// The first QUIC probe after the node settled on TCP.
    pub probe_first: Duration,
    /// The longest wait between QUIC probes (each failed probe doubles the wait).
    pub probe_max: Duration,
    /// How long a probe may take (QUIC handshake, HELLO, WELCOME) before it counts as
    /// failed: a black-holed UDP never answers.
    pub probe_timeout: Duration,
    /// How long a network's transport is remembered.
    pub remember_for: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            head_start: Duration::from_millis(250),
            probe_first: Duration::from_secs(5),
            probe_max: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(5),
            remember_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// How to start a race: which legs exist and when TCP is dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RacePlan {
    /// Whether the node knows a TCP way to the relay (an HTTP URL).
    pub tcp: bool,
    /// When TCP is dialled, counted from the start of the race.
    pub tcp_delay: Duration,
}

/// One leg of a race.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leg {
    /// Not dialled yet (TCP waits for its head start).
    Waiting,
    /// Dialled; no answer yet.
    Dialing,
    /// Dialled and failed, with the reason.
    Failed(String),
    /// Not available (TCP without a URL).
    Absent,
}

/// What the driver of a [`Race`] does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaceStep {
    /// Dial this transport (then report [`Race::connected`] or [`Race::failed`]).
    Dial(Transport),
    /// Nothing to do before this instant, unless a dial reports first.
    Wait(Instant),
    /// Nothing to do until a dial reports.
    WaitForDials,
    /// This transport connected first: use it, drop the other dial.
    Won(Transport),
    /// Every leg failed; the reasons, for the log.
    Lost(String),
}

/// One happy-eyeballs race between QUIC and TCP.
#[derive(Debug, Clone)]
pub struct Race {
    quic: Leg,
    tcp: Leg,
    tcp_at: Instant,
    won: Option<Transport>,
}

impl Race {
    /// A race started at `now`.
    pub fn new(now: Instant, plan: RacePlan) -> Self {
        Race {
            quic: Leg::Waiting,
            tcp: if plan.tcp { Leg::Waiting } else { Leg::Absent },
            tcp_at: now + plan.tcp_delay,
            won: None,
        }
    }

    /// What to do at `now`. Call again after every [`RaceStep::Dial`] and after every
    /// report, until it says [`RaceStep::Won`] or [`RaceStep::Lost`].
    pub fn poll(&mut self, now: Instant) -> RaceStep {
        if let Some(won) = self.won {
            return RaceStep::Won(won);
        }
        if self.quic == Leg::Waiting {
            self.quic = Leg::Dialing;
            return RaceStep::Dial(Transport::Quic);
        }
        if self.tcp == Leg::Waiting {
            // TCP goes at once once QUIC has failed (no reason to wait for it).
            if now >= self.tcp_at || matches!(self.quic, Leg::Failed(_)) {
                self.tcp = Leg::Dialing;
                return RaceStep::Dial(Transport::Tcp);
            }
            return RaceStep::Wait(self.tcp_at);
        }
        match (&self.quic, &self.tcp) {
            (Leg::Failed(quic), Leg::Failed(tcp)) => {
                RaceStep::Lost(format!("QUIC: {quic}; TCP: {tcp}"))
            }
            (Leg::Failed(quic), Leg::Absent) => RaceStep::Lost(quic.clone()),
            _ => RaceStep::WaitForDials,
        }
    }

    /// A dial connected. The first one wins; a later one is to be dropped (returns
    /// false).
    pub fn connected(&mut self, transport: Transport) -> bool {
        if self.won.is_some() {
            return false;
        }
        self.won = Some(transport);
        true
    }

    /// A dial failed.
    pub fn failed(&mut self, transport: Transport, reason: impl Into<String>) {
        let leg = match transport {
            Transport::Quic => &mut self.quic,
            Transport::Tcp => &mut self.tcp,
        };
        *leg = Leg::Failed(reason.into());
    }
}

/// When to try QUIC again while the node is on TCP.
#[derive(Debug, Clone)]
pub struct Healing {
    config: PathConfig,
    failures: u32,
    next_probe: Option<Instant>,
    probing: bool,
}

impl Healing {
    /// No probes until the node connects over TCP.
    pub fn new(config: PathConfig) -> Self {
        Healing {
            config,
            failures: 0,
            next_probe: None,
            probing: false,
        }
    }

    /// The node is connected over `transport` (at `now`; `unit` is a random number in
    /// `[0, 1)` for the jitter). On TCP the first probe is scheduled; on QUIC there is
    /// nothing to heal.
    pub fn connected(&mut self, transport: Transport, now: Instant, unit: f64) {
        self.failures = 0;
        self.probing = false;
        self.next_probe = match transport {
            Transport::Quic => None,
            Transport::Tcp => Some(now + self.jittered(unit)),
        };
    }

    /// The connection ended: no probes until the next one.
    pub fn disconnected(&mut self) {
        self.next_probe = None;
        self.probing = false;
    }

    /// When the next probe is due, if one is scheduled and none is running.
    pub fn deadline(&self) -> Option<Instant> {
        if self.probing { None } else { self.next_probe }
    }

    /// Whether a probe starts at `now` (it is then running until
    /// [`Healing::probe_failed`] or [`Healing::connected`]).
    pub fn start_probe(&mut self, now: Instant) -> bool {
        match self.next_probe {
            Some(at) if !self.probing && now >= at => {
                self.probing = true;
                true
            }
            _ => false,
        }
    }

    /// The running probe failed at `now`: the next one waits twice as long (up to
    /// [`PathConfig::probe_max`]).
    pub fn probe_failed(&mut self, now: Instant, unit: f64) {
        self.probing = false;
        if self.next_probe.is_some() {
            self.next_probe = Some(now + self.jittered(unit));
        }
    }

    fn jittered(&mut self, unit: f64) -> Duration {
        // Equal jitter over [delay, 1.5 × delay): never sooner than the schedule says,
        // and many nodes behind one blocked network do not probe together.
        let delay = self
            .config
            .probe_first
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.config.probe_max);
        self.failures = self.failures.saturating_add(1);
        delay + delay.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// The configuration.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }
}

/// One network's remembered transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Remembered {
    /// What worked last.
    pub transport: Transport,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// At most this many networks are remembered (the oldest are forgotten).
const MAX_NETWORKS: usize = 64;

/// What worked on each network, kept in `<home>/transport.json`.
#[derive(Debug, Clone, Default)]
pub struct PathMemory {
    file: Option<PathBuf>,
    networks: HashMap<String, Remembered>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MemoryFile {
    networks: HashMap<String, Remembered>,
}

impl PathMemory {
    /// The memory kept in `home` (empty when the file is missing or unreadable: it is
    /// only a hint).
    pub fn load(home: &Path) -> Self {
        let file = home.join("transport.json");
        let networks = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<MemoryFile>(&bytes).ok())
            .map(|f| f.networks)
            .unwrap_or_default();
        PathMemory {
            file: Some(file),
            networks,
        }
    }

    /// A memory that is not written anywhere (tests).
    pub fn in_memory() -> Self {
        PathMemory::default()
    }

    /// The remembered transport of `network`, if still fresh at `now` (Unix seconds).
    pub fn recall(&self, network: &str, now: u64, config: &PathConfig) -> Option<Transport> {
        self.networks
            .get(network)
            .filter(|r| now.saturating_sub(r.at) < config.remember_for.as_secs())
            .map(|r| r.transport)
    }

    /// How to race on `network`: TCP waits out QUIC's head start, unless TCP is what
    /// worked here lately (then both go at once).
    pub fn plan(&self, network: &str, now: u64, config: &PathConfig, tcp: bool) -> RacePlan {
        let tcp_delay = match self.recall(network, now, config) {
            Some(Transport::Tcp) => Duration::ZERO,
            _ => config.head_start,
        };
        RacePlan { tcp, tcp_delay }
    }

    /// Notes that `transport` worked on `network` at `now` (Unix seconds) and writes the
    /// file (best effort: a failure to write is returned, the memory is updated anyway).
    pub fn record(&mut self, network: &str, transport: Transport, now: u64) -> std::io::Result<()> {
        let previous = self
            .networks
            .insert(network.to_owned(), Remembered { transport, at: now });
        if previous.map(|p| p.transport) == Some(transport)
            && previous.is_some_and(|p| now.saturating_sub(p.at) < 3600)
        {
            // Nothing worth a write: same answer, noted within the hour.
            return Ok(());
        }
        while self.networks.len() > MAX_NETWORKS {
            let oldest = self
                .networks
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.networks.remove(&oldest);
            }
        }
        self.save()
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&MemoryFile {
            networks: self.networks.clone(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, file)
    }
}

/// Names the network the node is on, as seen from the relay's address: the relay's
/// `host:port` and the local address the system would send from to reach it (which
/// changes with the Wi-Fi, the office LAN, a VPN). No packet is sent.
pub fn network_key(relay: std::net::SocketAddr) -> String {
    let local = std::net::UdpSocket::bind(match relay {
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
    })
    .and_then(|s| {
        s.connect(relay)?;
        s.local_addr()
    })
    .map(|a| a.ip().to_string())
    .unwrap_or_else(|_| "unknown".into());
    format!("{relay} from {local}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plan(tcp_delay: u64) -> RacePlan {
        RacePlan {
            tcp: true,
            tcp_delay: ms(tcp_delay),
        }
    }

    #[test]
    fn quic_first_then_tcp_after_the_head_start() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, plan(250));
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        assert_eq!(race.poll(t0), RaceStep::Wait(t0 + ms(250)));
        assert_eq!(race.poll(t0 + ms(249)), RaceStep::Wait(t0 + ms(250)));
        assert_eq!(race.poll(t0 + ms(250)), RaceStep::Dial(Transport::Tcp));
        assert_eq!(race.poll(t0 + ms(251)), RaceStep::WaitForDials);
        // QUIC answers late but first: it wins, TCP's answer is dropped.
        assert!(race.connected(Transport::Quic));
        assert!(!race.connected(Transport::Tcp));
        assert_eq!(race.poll(t0 + ms(300)), RaceStep::Won(Transport::Quic));
    }

    #[test]
    fn quic_within_the_head_start_never_dials_tcp() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, plan(250));
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        assert!(race.connected(Transport::Quic));
        assert_eq!(race.poll(t0 + ms(10)), RaceStep::Won(Transport::Quic));
        assert_eq!(race.poll(t0 + ms(500)), RaceStep::Won(Transport::Quic));
    }

    #[test]
    fn black_holed_udp_falls_back_to_tcp_after_the_head_start() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, plan(250));
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        assert_eq!(race.poll(t0 + ms(250)), RaceStep::Dial(Transport::Tcp));
        assert!(race.connected(Transport::Tcp));
        assert_eq!(race.poll(t0 + ms(260)), RaceStep::Won(Transport::Tcp));
    }

    #[test]
    fn a_quic_failure_dials_tcp_at_once() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, plan(250));
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        race.failed(Transport::Quic, "port unreachable");
        assert_eq!(race.poll(t0 + ms(5)), RaceStep::Dial(Transport::Tcp));
        race.failed(Transport::Tcp, "connection refused");
        assert_eq!(
            race.poll(t0 + ms(6)),
            RaceStep::Lost("QUIC: port unreachable; TCP: connection refused".into())
        );
    }

    #[test]
    fn without_a_tcp_way_quic_alone_decides() {
        let t0 = Instant::now();
        let mut race = Race::new(
            t0,
            RacePlan {
                tcp: false,
                tcp_delay: ms(250),
            },
        );
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        assert_eq!(race.poll(t0 + ms(300)), RaceStep::WaitForDials);
        race.failed(Transport::Quic, "timed out");
        assert_eq!(race.poll(t0 + ms(301)), RaceStep::Lost("timed out".into()));
    }

    #[test]
    fn a_remembered_tcp_network_dials_both_at_once() {
        let config = PathConfig::default();
        let mut memory = PathMemory::in_memory();
        let now = 1_000_000;
        assert_eq!(memory.plan("net", now, &config, true), plan(250));
        memory.record("net", Transport::Tcp, now).unwrap();
        let remembered = memory.plan("net", now + 60, &config, true);
        assert_eq!(remembered, plan(0));
        let t0 = Instant::now();
        let mut race = Race::new(t0, remembered);
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Quic));
        assert_eq!(race.poll(t0), RaceStep::Dial(Transport::Tcp));
        // Another network, and the same one after the memory expired, race as usual.
        assert_eq!(memory.plan("other", now, &config, true), plan(250));
        let day = config.remember_for.as_secs();
        assert_eq!(memory.plan("net", now + day, &config, true), plan(250));
        // QUIC working again is remembered too.
        memory.record("net", Transport::Quic, now + 120).unwrap();
        assert_eq!(memory.plan("net", now + 121, &config, true), plan(250));
    }

    #[test]
    fn memory_survives_a_restart_and_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut memory = PathMemory::load(dir.path());
        memory.record("a", Transport::Tcp, 100).unwrap();
        let again = PathMemory::load(dir.path());
        assert_eq!(
            again.recall("a", 200, &PathConfig::default()),
            Some(Transport::Tcp)
        );
        let mut memory = again;
        for i in 0..MAX_NETWORKS as u64 {
            memory
                .record(&format!("n{i}"), Transport::Quic, 1000 + i)
                .unwrap();
        }
        let reloaded = PathMemory::load(dir.path());
        assert_eq!(reloaded.networks.len(), MAX_NETWORKS);
        assert_eq!(reloaded.recall("a", 2000, &PathConfig::default()), None);
        // A corrupt file is no memory, not an error.
        std::fs::write(dir.path().join("transport.json"), b"{nope").unwrap();
        assert!(PathMemory::load(dir.path()).networks.is_empty());
    }

    #[test]
    fn healing_probes_quic_on_a_doubling_schedule_only_while_on_tcp() {
        let config = PathConfig {
            probe_first: Duration::from_secs(5),
            probe_max: Duration::from_secs(60),
            ..PathConfig::default()
        };
        let t0 = Instant::now();
        let mut healing = Healing::new(config);
        healing.connected(Transport::Quic, t0, 0.0);
        assert_eq!(healing.deadline(), None, "nothing to heal on QUIC");
        healing.connected(Transport::Tcp, t0, 0.0);
        let first = healing.deadline().unwrap();
        assert_eq!(first - t0, Duration::from_secs(5));
        assert!(!healing.start_probe(t0 + Duration::from_secs(4)));
        assert!(healing.start_probe(first));
        assert_eq!(healing.deadline(), None, "one probe at a time");
        assert!(!healing.start_probe(first + Duration::from_secs(100)));
        let mut at = first;
        let mut waits = Vec::new();
        for _ in 0..6 {
            healing.probe_failed(at, 0.0);
            let next = healing.deadline().unwrap();
            waits.push((next - at).as_secs());
            at = next;
            assert!(healing.start_probe(at));
        }
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        // Jitter only ever lengthens a wait, by at most half.
        healing.probe_failed(at, 0.99);
        let jittered = healing.deadline().unwrap() - at;
        assert!(jittered >= Duration::from_secs(60) && jittered < Duration::from_secs(90));
        // Moving to QUIC, or losing the connection, stops the probes.
        healing.connected(Transport::Quic, at, 0.0);
        assert_eq!(healing.deadline(), None);
        healing.connected(Transport::Tcp, at, 0.0);
        assert_eq!(healing.deadline().unwrap() - at, Duration::from_secs(5));
        healing.disconnected();
        assert_eq!(healing.deadline(), None);
    }

    #[test]
    fn the_network_key_names_the_relay_and_the_local_address() {
        let key = network_key(([127, 0, 0, 1], 4433).into());
        assert_eq!(key, "127.0.0.1:4433 from 127.0.0.1");
    }
}
