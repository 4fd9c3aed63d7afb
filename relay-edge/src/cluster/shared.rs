//! The cluster's state in Redis (fred): the device map, the per-user counters and
//! sign-in limits, every node's liveness, and the two pub/sub channels (presence,
//! invalidations).
//!
//! Every key starts with `aisa:relay:` and has its owner in a Redis Cluster hash tag
//! (`{…}`), so a script touching a user's two counters stays in one slot. The layout,
//! TTLs and what happens while Redis is down are in `docs/relay.md`, "Cluster".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};

use super::{NodeName, Placement};
use crate::limits::tally::{SyncItem, Synced};

/// The channel every node publishes device presence on (JSON [`PresenceMessage`]).
pub const PRESENCE_CHANNEL: &str = "aisa:relay:presence";
/// The channel every node publishes changed records on (JSON [`InvalidationMessage`]):
/// the others drop their cached copies and cut what the change revokes.
pub const INVALIDATE_CHANNEL: &str = "aisa:relay:invalidate";

/// How long a command may take before it counts as failed (Redis down or partitioned).
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// The device map entry of `device_id` (a hash: `node`, `addr`, `gen`, `user`).
pub fn device_key(device_id: &str) -> String {
    format!("aisa:relay:device:{{{device_id}}}")
}

/// The set of devices `node` placed (so that a restarted node clears its own).
pub fn node_devices_key(node: &NodeName) -> String {
    format!("aisa:relay:node:{{{node}}}:devices")
}

/// `user_id`'s open streams per node (a hash: `<node>` → count, `<node>@exp` → lease
/// end in ms).
pub fn streams_key(user_id: &str) -> String {
    format!("aisa:relay:streams:{{{user_id}}}")
}

/// `user_id`'s action count on `day` (an integer).
pub fn actions_key(user_id: &str, day: &str) -> String {
    format!("aisa:relay:actions:{{{user_id}}}:{day}")
}

/// Every node's liveness: a sorted set of node names, each scored with the moment (ms,
/// Redis's clock) its liveness lapses unless the node refreshes it
/// (`super::liveness`).
pub const ALIVE_KEY: &str = "aisa:relay:alive";

/// Failed sign-ins for a limiter key (`email:…`, `ip:…`; an integer that expires at
/// the end of the window).
pub fn login_key(key: &str) -> String {
    format!("aisa:relay:login:{{{key}}}")
}

/// Writes a placement unless a later connection (a higher generation) holds the
/// device already; refreshes the TTL. KEYS: device key. ARGV: gen, node, addr, user,
/// ttl ms. Returns 1 when written.
const PLACE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'gen')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'node', ARGV[2], 'addr', ARGV[3], 'user', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;

/// Removes a placement only if it is still the given connection's. KEYS: device key.
/// ARGV: gen (or "" for any of this node's), node. Returns 1 when removed.
const UNPLACE: &str = r#"
local gen = redis.call('HGET', KEYS[1], 'gen')
local node = redis.call('HGET', KEYS[1], 'node')
if gen and node == ARGV[2] and (ARGV[1] == '' or gen == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Writes one node's counts of a user and reads back every node's, in one round trip
/// (`crate::limits::tally`): this node's open streams (with a lease), the actions it
/// counted since its last write, and the others' open streams and the day's total.
/// KEYS: streams hash, actions key. ARGV: node, this node's open streams (-1: leave
/// them), lease ms, actions delta, seed (-1: none), actions TTL s, whether actions
/// count (1/0). Returns {status, others' streams, day's total}: status 0 done (total
/// -1 when actions do not count), 3 the day's count is not in Redis and no seed was
/// given (nothing was written: call again with one from the store).
const SYNC: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = -1
if ARGV[7] == '1' then
  local cur = redis.call('GET', KEYS[2])
  if not cur then
    if tonumber(ARGV[5]) < 0 then return {3, 0, 0} end
    redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
  end
  total = redis.call('INCRBY', KEYS[2], ARGV[4])
  if total < 0 then
    redis.call('SET', KEYS[2], 0, 'KEEPTTL')
    total = 0
  end
end
local h = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #h, 2 do fields[h[i]] = h[i + 1] end
local others = 0
for f, v in pairs(fields) do
  if f ~= ARGV[1] and string.sub(f, -4) ~= '@exp' then
    local exp = tonumber(fields[f .. '@exp'] or '0')
    if exp > now then
      others = others + tonumber(v)
    else
      redis.call('HDEL', KEYS[1], f, f .. '@exp')
    end
  end
end
local mine = tonumber(ARGV[2])
if mine > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], mine, ARGV[1] .. '@exp', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif mine == 0 and fields[ARGV[1]] then
  redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. '@exp')
end
return {0, others, total}
"#;

/// Refreshes this node's liveness and reads every node's, in one round trip. KEYS:
/// [`ALIVE_KEY`]. ARGV: node, ms until this node's liveness lapses (0: at once, a
/// stopping node), ms after which a lapsed node is forgotten. Returns {now (ms, Redis's
/// clock), whether this node's liveness had not lapsed ("1"/"0"), then node, lapse
/// moment, node, lapse moment…}, all as strings.
const LIVENESS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local was = '0'
if prev and tonumber(prev) > now then was = '1' end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local out = {string.format('%.0f', now), was}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

/// Counts a failed sign-in. KEYS: login key. ARGV: window ms. Returns the count.
const LOGIN_FAILED: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

/// A failed sign-in count and the ms left in its window. KEYS: login key.
const LOGIN_CHECK: &str = r#"
local n = redis.call('GET', KEYS[1])
if not n then return {0, 0} end
return {tonumber(n), redis.call('PTTL', KEYS[1])}
"#;

/// A device came or went, as published on [`PRESENCE_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMessage {
    /// The publishing node (which ignores its own messages).
    pub node: String,
    /// The device's owner, whose event streams get the status.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// Whether it is online now.
    pub online: bool,
    /// The desktop's version, if known.
    pub node_version: String,
}

/// What changed, as published on [`INVALIDATE_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationMessage {
    /// The publishing node (which ignores its own messages).
    pub node: String,
    /// The record that changed.
    pub change: crate::facts::Invalidation,
}

/// Counts of Redis commands and errors, for tests and `/metrics`
/// (`aisa_relay_redis_commands_total{op}`, `aisa_relay_redis_errors_total{op}`,
/// `aisa_relay_redis_seconds{op}`).
#[derive(Default)]
pub struct RedisCounts {
    /// Commands (round trips) sent.
    pub commands: AtomicU64,
    /// Commands that failed (timeout, connection, script error).
    pub errors: AtomicU64,
    by_op: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
}

impl RedisCounts {
    /// Commands sent for operation `op` (the metric's label) so far.
    pub fn of(&self, op: &str) -> u64 {
        let by_op = self.by_op.lock().unwrap_or_else(|e| e.into_inner());
        by_op.get(op).copied().unwrap_or(0)
    }
}

/// A connection to the cluster's Redis. See the module's documentation.
pub struct Shared {
    client: Client,
    subscriber: SubscriberClient,
    node: NodeName,
    /// How long a device map entry lives without a refresh.
    pub device_ttl: Duration,
    /// How long a node's stream counts count without a refresh.
    pub streams_lease: Duration,
    /// Each user's counts as this node sees them (limits decided in memory, written
    /// in batches: `crate::limits::sync_counts`).
    pub tally: crate::limits::tally::Tally,
    connected: AtomicBool,
    resubscribe: tokio::task::JoinHandle<()>,
    /// Commands and errors so far.
    pub counts: RedisCounts,
    place: Script,
    unplace: Script,
    sync: Script,
    login_failed: Script,
    login_check: Script,
    liveness: Script,
    /// The nodes whose liveness lapsed, as last read (`super::liveness`).
    dead: std::sync::RwLock<std::collections::HashSet<NodeName>>,
}

/// A Redis command failed (the message says which and why).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis {op}: {message}")]
pub struct RedisError {
    /// The operation (metric label).
    pub op: &'static str,
    /// What went wrong.
    pub message: String,
}

impl Shared {
    /// Connects to `url` (fred's URL forms: `redis://`, `rediss://`,
    /// `redis-cluster://`, `redis-sentinel://`), with reconnection forever (exponential
    /// backoff up to 2 s), and subscribes to the cluster's channels (resubscribed after
    /// every reconnect).
    pub async fn connect(
        url: &str,
        node: NodeName,
        device_ttl: Duration,
    ) -> Result<Shared, RedisError> {
        let fail = |op: &'static str| {
            move |e: Error| RedisError {
                op,
                message: e.to_string(),
            }
        };
        let config = Config::from_url(url).map_err(fail("config"))?;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 2;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2));
        let client = builder.build().map_err(fail("connect"))?;
        let subscriber = builder.build_subscriber_client().map_err(fail("connect"))?;
        client.init().await.map_err(fail("connect"))?;
        subscriber.init().await.map_err(fail("connect"))?;
        // Subscribes again after every reconnect (a Redis restart, a failover).
        let resubscribe = subscriber.manage_subscriptions();
        subscriber
            .subscribe(vec![PRESENCE_CHANNEL, INVALIDATE_CHANNEL])
            .await
            .map_err(fail("subscribe"))?;
        Ok(Shared {
            client,
            subscriber,
            node,
            device_ttl,
            streams_lease: device_ttl,
            tally: crate::limits::tally::Tally::default(),
            connected: AtomicBool::new(true),
            resubscribe,
            counts: RedisCounts::default(),
            place: Script::from_lua(PLACE),
            unplace: Script::from_lua(UNPLACE),
            sync: Script::from_lua(SYNC),
            login_failed: Script::from_lua(LOGIN_FAILED),
            login_check: Script::from_lua(LOGIN_CHECK),
            liveness: Script::from_lua(LIVENESS),
            dead: Default::default(),
        })
    }

    /// The command client (events: reconnects, errors).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The subscriber client (its `message_rx` carries both channels).
    pub fn subscriber(&self) -> &SubscriberClient {
        &self.subscriber
    }

    /// Whether the last command reached Redis.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Records one command's outcome (metrics, the connected flag).
    fn record<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: Result<T, Error>,
    ) -> Result<T, RedisError> {
        self.counts.commands.fetch_add(1, Ordering::Relaxed);
        *self
            .counts
            .by_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        metrics::counter!("aisa_relay_redis_commands_total", "op" => op).increment(1);
        metrics::histogram!("aisa_relay_redis_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("aisa_relay_redis_errors_total", "op" => op).increment(1);
                if !matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Parse) {
                    self.connected.store(false, Ordering::Relaxed);
                }
                Err(RedisError {
                    op,
                    message: e.to_string(),
                })
            }
        }
    }

    /// Runs a script (EVALSHA, loading it once after a `NOSCRIPT`, e.g. after Redis
    /// restarted), failing at once when Redis is not connected.
    async fn script<R: FromValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, RedisError> {
        let started = Instant::now();
        let options = Options {
            fail_fast: true,
            timeout: Some(COMMAND_TIMEOUT),
            ..Default::default()
        };
        let client = self.client.with_options(&options);
        let mut result: Result<R, Error> = client
            .evalsha(script.sha1().clone(), keys.clone(), args.clone())
            .await;
        if let Err(e) = &result
            && e.details().starts_with("NOSCRIPT")
        {
            result = client
                .eval(script.lua().cloned().unwrap_or_default(), keys, args)
                .await;
        }
        self.record(op, started, result)
    }

    /// Where `device_id` is connected according to the device map.
    pub async fn placement(&self, device_id: &str) -> Result<Option<Placement>, RedisError> {
        let started = Instant::now();
        let options = Options {
            fail_fast: true,
            timeout: Some(COMMAND_TIMEOUT),
            ..Default::default()
        };
        let result: Result<std::collections::HashMap<String, String>, Error> = self
            .client
            .with_options(&options)
            .hgetall(device_key(device_id))
            .await;
        let fields = self.record("locate", started, result)?;
        let parsed = (|| {
            Some(Placement {
                node: NodeName::new(fields.get("node")?).ok()?,
                forward_addr: fields.get("addr")?.parse::<SocketAddr>().ok()?,
                generation: fields.get("gen")?.parse().ok()?,
            })
        })();
        Ok(parsed)
    }

    /// Writes (or refreshes) this node's placement of a device, unless a later
    /// connection holds it. Returns whether it was written.
    pub async fn place(
        &self,
        device_id: &str,
        user_id: &str,
        generation: u64,
        forward_addr: SocketAddr,
    ) -> Result<bool, RedisError> {
        let written: i64 = self
            .script(
                "place",
                &self.place,
                vec![device_key(device_id)],
                vec![
                    generation.to_string(),
                    self.node.to_string(),
                    forward_addr.to_string(),
                    user_id.to_owned(),
                    self.device_ttl.as_millis().to_string(),
                ],
            )
            .await?;
        Ok(written == 1)
    }

    /// Adds devices to this node's set (so that a restart clears them), refreshing its
    /// TTL.
    pub async fn remember(&self, device_ids: Vec<String>) -> Result<(), RedisError> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let key = node_devices_key(&self.node);
        let started = Instant::now();
        let result: Result<(), Error> = async {
            let _: i64 = self.client.sadd(&key, device_ids).await?;
            let _: bool = self
                .client
                .pexpire(&key, 3 * self.device_ttl.as_millis() as i64, None)
                .await?;
            Ok(())
        }
        .await;
        self.record("remember", started, result)
    }

    /// Removes this node's placement of `device_id` if it is still connection
    /// `generation` (`None`: whichever of this node's).
    pub async fn unplace(
        &self,
        device_id: &str,
        generation: Option<u64>,
    ) -> Result<bool, RedisError> {
        let removed: i64 = self
            .script(
                "unplace",
                &self.unplace,
                vec![device_key(device_id)],
                vec![
                    generation.map(|g| g.to_string()).unwrap_or_default(),
                    self.node.to_string(),
                ],
            )
            .await?;
        if removed == 1 {
            let started = Instant::now();
            let result: Result<i64, Error> = self
                .client
                .srem(node_devices_key(&self.node), device_id)
                .await;
            let _ = self.record("forget", started, result);
        }
        Ok(removed == 1)
    }

    /// The devices in this node's set (those it placed and has not removed).
    pub async fn own_devices(&self) -> Result<Vec<String>, RedisError> {
        let started = Instant::now();
        let result: Result<Vec<String>, Error> =
            self.client.smembers(node_devices_key(&self.node)).await;
        self.record("own_devices", started, result)
    }

    /// Clears what this node left in Redis before a restart: its placements (only
    /// those still naming it) and its stream counts are gone with its set. Returns how
    /// many placements were removed.
    pub async fn clear_own(&self) -> Result<usize, RedisError> {
        let key = node_devices_key(&self.node);
        let started = Instant::now();
        let result: Result<Vec<String>, Error> = self.client.smembers(&key).await;
        let devices = self.record("clear", started, result)?;
        let mut removed = 0;
        for device_id in &devices {
            if self.unplace(device_id, None).await? {
                removed += 1;
            }
        }
        let started = Instant::now();
        let result: Result<i64, Error> = self.client.del(&key).await;
        self.record("clear", started, result)?;
        Ok(removed)
    }

    /// Writes one user's counts (`item`) and reads back every node's: one round trip,
    /// counted under `op` (`count_sync` for the background batches, `count_cold` for a
    /// stream's admission that found no fresh totals).
    pub async fn sync_counts(
        &self,
        op: &'static str,
        item: &SyncItem,
    ) -> Result<Synced, RedisError> {
        let reply: Vec<i64> = self
            .script(
                op,
                &self.sync,
                vec![
                    streams_key(&item.user_id),
                    actions_key(&item.user_id, &item.day),
                ],
                vec![
                    self.node.to_string(),
                    item.open.unwrap_or(-1).to_string(),
                    self.streams_lease.as_millis().to_string(),
                    item.delta.to_string(),
                    item.seed.unwrap_or(-1).to_string(),
                    (2 * 24 * 3600).to_string(),
                    if item.counts_actions { "1" } else { "0" }.to_owned(),
                ],
            )
            .await?;
        Ok(match reply.as_slice() {
            [0, others, total] => Synced::Totals {
                others_streams: *others,
                actions: (*total >= 0).then_some(*total),
            },
            [3, _, _] => Synced::NeedsSeed,
            other => {
                return Err(RedisError {
                    op,
                    message: format!("unexpected reply {other:?}"),
                });
            }
        })
    }

    /// How long `key` must wait before signing in again, if it reached `max` failures
    /// in its window.
    pub async fn login_wait(&self, key: &str, max: usize) -> Result<Option<Duration>, RedisError> {
        let reply: Vec<i64> = self
            .script(
                "login_check",
                &self.login_check,
                vec![login_key(key)],
                vec![],
            )
            .await?;
        Ok(match reply.as_slice() {
            [n, ttl] if *n >= max as i64 => Some(Duration::from_millis((*ttl).max(1) as u64)),
            _ => None,
        })
    }

    /// Counts a failed sign-in of `key`; the window starts at its first failure.
    pub async fn login_failed(&self, key: &str, window: Duration) -> Result<(), RedisError> {
        let _: i64 = self
            .script(
                "login_failed",
                &self.login_failed,
                vec![login_key(key)],
                vec![window.as_millis().to_string()],
            )
            .await?;
        Ok(())
    }

    /// Forgets `key`'s failures after a successful sign-in.
    pub async fn login_succeeded(&self, key: &str) -> Result<(), RedisError> {
        let started = Instant::now();
        let result: Result<i64, Error> = self.client.del(login_key(key)).await;
        self.record("login_succeeded", started, result)?;
        Ok(())
    }

    /// Publishes `message` (JSON) on `channel`.
    pub async fn publish<M: Serialize>(
        &self,
        channel: &'static str,
        message: &M,
    ) -> Result<(), RedisError> {
        let body = serde_json::to_string(message).map_err(|e| RedisError {
            op: "publish",
            message: e.to_string(),
        })?;
        let started = Instant::now();
        let options = Options {
            fail_fast: true,
            timeout: Some(COMMAND_TIMEOUT),
            ..Default::default()
        };
        let result: Result<i64, Error> = self
            .client
            .with_options(&options)
            .publish(channel, body)
            .await;
        self.record("publish", started, result)?;
        Ok(())
    }

    /// This node's name.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Refreshes this node's liveness so that it lapses `lapse` from now (zero: now, for
    /// a stopping node), forgets the nodes lapsed for longer than `forget`, and reads
    /// every node's liveness: one round trip.
    pub async fn liveness(
        &self,
        lapse: Duration,
        forget: Duration,
    ) -> Result<super::liveness::Reading, RedisError> {
        let reply: Vec<String> = self
            .script(
                "liveness",
                &self.liveness,
                vec![ALIVE_KEY.to_owned()],
                vec![
                    self.node.to_string(),
                    lapse.as_millis().to_string(),
                    forget.as_millis().to_string(),
                ],
            )
            .await?;
        super::liveness::Reading::parse(&reply).ok_or_else(|| RedisError {
            op: "liveness",
            message: format!("unexpected reply {reply:?}"),
        })
    }

    /// Whether `node`'s liveness had lapsed when last read (it died, or stopped).
    pub fn is_dead(&self, node: &NodeName) -> bool {
        self.dead
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node)
    }

    /// Records the nodes whose liveness lapsed, as just read.
    pub fn set_dead(&self, dead: std::collections::HashSet<NodeName>) {
        *self.dead.write().unwrap_or_else(|e| e.into_inner()) = dead;
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.resubscribe.abort();
    }
}
