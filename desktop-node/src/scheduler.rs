//! Admission and fair scheduling of actions: how many run at once, who waits, who goes
//! next, and when to say `busy`.
//!
//! [`Scheduler`] is the rule, with no clock, lock or channel of its own: a request is
//! admitted to run, queued, or refused; when a running action ends, the queued action
//! whose browser, then app, has the fewest actions running goes next (ties: the one that
//! waited longest). A browser or an app may hold at most its share of the running slots,
//! and a browser at most its share of the queue, so one tab (or one looping mini-app)
//! cannot take the whole node. [`Admission`] wraps it for async callers: a [`Ticket`]
//! waits for its turn and gives its place back when dropped, so a queued action that is
//! cancelled simply goes away.
//!
//! What it does not do: bound an action's time (the sandbox deadline does) or run
//! anything (the guest pool does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many actions may run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Actions running at once on this node.
    pub max_running: usize,
    /// Actions waiting for a slot; past this, requests get `busy`.
    pub max_queued: usize,
    /// Running slots one browser (session) may hold at once.
    pub max_running_per_browser: usize,
    /// Running slots one app may hold at once.
    pub max_running_per_app: usize,
    /// Queue places one browser may hold.
    pub max_queued_per_browser: usize,
}

impl AdmissionConfig {
    /// Defaults for a machine with `cpus` processors: `4 × cpus` running (actions
    /// mostly wait for the model), four times that queued, and half of each for one
    /// browser or one app.
    pub fn for_cpus(cpus: usize) -> AdmissionConfig {
        AdmissionConfig::with_running(4 * cpus.max(1))
    }

    /// `max_running` running, four times that queued, and half of each for one browser
    /// or one app (at least one).
    pub fn with_running(max_running: usize) -> AdmissionConfig {
        let max_running = max_running.max(1);
        let max_queued = 4 * max_running;
        AdmissionConfig {
            max_running,
            max_queued,
            max_running_per_browser: max_running.div_ceil(2),
            max_running_per_app: max_running.div_ceil(2),
            max_queued_per_browser: max_queued.div_ceil(2),
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig::for_cpus(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// A request's place in the [`Scheduler`].
pub type TicketId = u64;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// It may run now.
    Run(TicketId),
    /// It waits; [`Scheduler::release`] says when it may run.
    Queued(TicketId),
}

/// The node is too busy to take the request: the queue (or this browser's part of it) is
/// full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this desktop is busy: {running} actions are running and {queued} waiting ({why}); try again in a few seconds"
)]
pub struct Busy {
    /// Actions running.
    pub running: usize,
    /// Actions waiting.
    pub queued: usize,
    /// Which bound was hit.
    pub why: &'static str,
}

#[derive(Debug)]
struct Waiting {
    id: TicketId,
    browser: String,
    app: String,
}

/// The admission rule; see the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: AdmissionConfig,
    next_id: TicketId,
    running: HashMap<TicketId, (String, String)>,
    running_by_browser: HashMap<String, usize>,
    running_by_app: HashMap<String, usize>,
    queue: VecDeque<Waiting>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: AdmissionConfig) -> Scheduler {
        Scheduler {
            config,
            next_id: 0,
            running: HashMap::new(),
            running_by_browser: HashMap::new(),
            running_by_app: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Actions running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Actions waiting now.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A new request from `browser` for `app`.
    pub fn request(&mut self, browser: &str, app: &str) -> Result<Admit, Busy> {
        let id = self.next_id;
        self.next_id += 1;
        // Nobody waiting and room for this browser and app: run at once.
        if self.queue.is_empty() && self.may_start(browser, app) {
            self.start(id, browser.to_owned(), app.to_owned());
            return Ok(Admit::Run(id));
        }
        let busy = |why| Busy {
            running: self.running.len(),
            queued: self.queue.len(),
            why,
        };
        if self.queue.len() >= self.config.max_queued {
            return Err(busy("the queue is full"));
        }
        let mine = self.queue.iter().filter(|w| w.browser == browser).count();
        if mine >= self.config.max_queued_per_browser {
            return Err(busy("this browser's share of the queue is full"));
        }
        self.queue.push_back(Waiting {
            id,
            browser: browser.to_owned(),
            app: app.to_owned(),
        });
        // A request may be queued behind others only because of their shares, while a
        // slot is free for it: start whatever can start.
        let started = self.start_waiting();
        if started.contains(&id) {
            return Ok(Admit::Run(id));
        }
        Ok(Admit::Queued(id))
    }

    /// `id` ended (ran to its end, or was given up while queued). Returns the queued
    /// requests that may run now.
    pub fn release(&mut self, id: TicketId) -> Vec<TicketId> {
        if let Some((browser, app)) = self.running.remove(&id) {
            decrement(&mut self.running_by_browser, &browser);
            decrement(&mut self.running_by_app, &app);
        } else {
            self.queue.retain(|w| w.id != id);
        }
        self.start_waiting()
    }

    fn may_start(&self, browser: &str, app: &str) -> bool {
        self.running.len() < self.config.max_running
            && self.running_by_browser.get(browser).copied().unwrap_or(0)
                < self.config.max_running_per_browser
            && self.running_by_app.get(app).copied().unwrap_or(0) < self.config.max_running_per_app
    }

    fn start(&mut self, id: TicketId, browser: String, app: String) {
        *self.running_by_browser.entry(browser.clone()).or_default() += 1;
        *self.running_by_app.entry(app.clone()).or_default() += 1;
        self.running.insert(id, (browser, app));
    }

    /// Starts queued requests while slots are free: each time the eligible one whose
    /// browser, then app, runs the fewest actions, the oldest first among equals.
    fn start_waiting(&mut self) -> Vec<TicketId> {
        let mut started = Vec::new();
        while self.running.len() < self.config.max_running {
            let next = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, w)| self.may_start(&w.browser, &w.app))
                .min_by_key(|(position, w)| {
                    (
                        self.running_by_browser
                            .get(&w.browser)
                            .copied()
                            .unwrap_or(0),
                        self.running_by_app.get(&w.app).copied().unwrap_or(0),
                        *position,
                    )
                })
                .map(|(position, _)| position);
            let Some(position) = next else { break };
            let Some(w) = self.queue.remove(position) else {
                break;
            };
            started.push(w.id);
            self.start(w.id, w.browser, w.app);
        }
        started
    }
}

fn decrement(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The node's [`Scheduler`] behind a lock, for async callers.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    scheduler: Scheduler,
    waiting: HashMap<TicketId, tokio::sync::oneshot::Sender<()>>,
}

impl Admission {
    /// An admission with these bounds.
    pub fn new(config: AdmissionConfig) -> Admission {
        Admission {
            inner: Arc::new(Mutex::new(Inner {
                scheduler: Scheduler::new(config),
                waiting: HashMap::new(),
            })),
        }
    }

    /// Asks for a slot for `browser`'s action of `app`. The ticket either holds a slot
    /// already or waits for one ([`Ticket::ready`]); dropping it gives the place back.
    pub fn request(&self, browser: &str, app: &str) -> Result<Ticket, Busy> {
        let mut inner = self.lock();
        let (id, ready) = match inner.scheduler.request(browser, app)? {
            Admit::Run(id) => (id, None),
            Admit::Queued(id) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                inner.waiting.insert(id, tx);
                (id, Some(rx))
            }
        };
        Ok(Ticket {
            admission: self.clone(),
            id,
            ready,
        })
    }

    /// `(running, queued)` now.
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.scheduler.running(), inner.scheduler.queued())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, id: TicketId) {
        let mut inner = self.lock();
        inner.waiting.remove(&id);
        for started in inner.scheduler.release(id) {
            if let Some(tx) = inner.waiting.remove(&started) {
                // The receiver lives in a ticket, which releases under this lock when
                // dropped: it is alive here.
                let _ = tx.send(());
            }
        }
    }
}

/// A place in the [`Admission`]: a running slot, or a place in the queue.
pub struct Ticket {
    admission: Admission,
    id: TicketId,
    ready: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Ticket {
    /// Whether the ticket had to wait in the queue when it was issued.
    pub fn was_queued(&self) -> bool {
        self.ready.is_some()
    }

    /// Completes when this ticket holds a running slot.
    pub async fn ready(&mut self) {
        if let Some(rx) = &mut self.ready {
            // The sender is only dropped after sending, or with the admission (never
            // while a ticket holds a clone of it).
            let _ = rx.await;
            self.ready = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_running: usize, max_queued: usize) -> AdmissionConfig {
        AdmissionConfig {
            max_running,
            max_queued,
            max_running_per_browser: max_running,
            max_running_per_app: max_running,
            max_queued_per_browser: max_queued,
        }
    }

    fn id(admit: Admit) -> TicketId {
        match admit {
            Admit::Run(id) | Admit::Queued(id) => id,
        }
    }

    #[test]
    fn runs_up_to_the_limit_then_queues_then_refuses() {
        let mut s = Scheduler::new(config(2, 1));
        let a = s.request("b1", "app").unwrap();
        let b = s.request("b1", "app").unwrap();
        assert!(matches!(a, Admit::Run(_)) && matches!(b, Admit::Run(_)));
        let c = s.request("b1", "app").unwrap();
        assert!(matches!(c, Admit::Queued(_)));
        let busy = s.request("b1", "app").unwrap_err();
        assert_eq!((busy.running, busy.queued), (2, 1));
        assert!(busy.to_string().contains("try again"), "{busy}");
        // A slot frees: the queued one starts.
        assert_eq!(s.release(id(a)), vec![id(c)]);
        assert_eq!((s.running(), s.queued()), (2, 0));
    }

    #[test]
    fn a_queued_request_given_up_leaves_the_queue() {
        let mut s = Scheduler::new(config(1, 4));
        let a = id(s.request("b1", "x").unwrap());
        let b = id(s.request("b1", "x").unwrap());
        let c = id(s.request("b1", "x").unwrap());
        assert!(s.release(b).is_empty(), "b was only queued");
        assert_eq!(s.release(a), vec![c]);
    }

    #[test]
    fn the_browser_with_fewer_running_goes_first() {
        let mut s = Scheduler::new(config(2, 8));
        let a1 = id(s.request("a", "x").unwrap());
        let _a2 = id(s.request("a", "x").unwrap());
        let a3 = id(s.request("a", "x").unwrap()); // queued first
        let b1 = id(s.request("b", "x").unwrap()); // queued second
        // "a" holds both slots; when one ends, "b" (0 running) goes before a3.
        assert_eq!(s.release(a1), vec![b1]);
        assert_eq!(s.queued(), 1);
        let _ = a3;
    }

    #[test]
    fn one_browser_cannot_hold_every_slot() {
        let mut s = Scheduler::new(AdmissionConfig::with_running(4));
        let mine: Vec<_> = (0..3).map(|_| s.request("tab1", "spin").unwrap()).collect();
        assert!(matches!(mine[0], Admit::Run(_)) && matches!(mine[1], Admit::Run(_)));
        assert!(
            matches!(mine[2], Admit::Queued(_)),
            "the third of one browser waits"
        );
        // Another browser, another app, runs at once although tab1 is waiting.
        assert!(matches!(s.request("tab2", "hello").unwrap(), Admit::Run(_)));
    }

    #[test]
    fn one_app_cannot_hold_every_slot() {
        let mut s = Scheduler::new(AdmissionConfig::with_running(4));
        for tab in ["t1", "t2"] {
            assert!(matches!(s.request(tab, "spin").unwrap(), Admit::Run(_)));
        }
        assert!(matches!(s.request("t3", "spin").unwrap(), Admit::Queued(_)));
        assert!(matches!(s.request("t3", "hello").unwrap(), Admit::Run(_)));
    }

    #[test]
    fn one_browser_cannot_fill_the_queue() {
        let mut s = Scheduler::new(AdmissionConfig::with_running(1));
        // 1 running, 4 queued at most, 2 of them for one browser.
        s.request("tab1", "x").unwrap();
        s.request("tab1", "x").unwrap();
        s.request("tab1", "x").unwrap();
        let busy = s.request("tab1", "x").unwrap_err();
        assert!(busy.why.contains("browser"), "{busy}");
        assert!(matches!(s.request("tab2", "x").unwrap(), Admit::Queued(_)));
    }

    #[tokio::test]
    async fn a_ticket_waits_for_its_turn_and_gives_it_back_when_dropped() {
        let admission = Admission::new(config(1, 4));
        let first = admission.request("b", "x").unwrap();
        assert!(!first.was_queued());
        let mut second = admission.request("b", "x").unwrap();
        let third = admission.request("b", "x").unwrap();
        assert!(second.was_queued());
        assert_eq!(admission.load(), (1, 2));
        // Not ready while the first runs.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), second.ready()).await;
        assert!(waited.is_err());
        drop(third); // a cancelled queued action
        assert_eq!(admission.load(), (1, 1));
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.ready())
            .await
            .expect("second runs after first");
        assert_eq!(admission.load(), (1, 0));
        drop(second);
        assert_eq!(admission.load(), (0, 0));
    }
}
