//! The Redis backend: every gateway replica pointed at one Redis shares the plugins' entries
//! (a rate limit holds across replicas). Each operation is one command or one Lua script, so
//! increment and compare-and-swap are atomic across every replica as they are across threads
//! in memory. Connections are multiplexed and reconnect by themselves; while Redis cannot be
//! reached every operation fails with [`StoreError::Unavailable`], and the first failure and
//! the recovery are logged once each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Script};

use super::{Store, StoreError, StoreFuture, check_sizes};

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` over TLS.
    pub url: String,
    /// Put before every key, so that several gateways can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections, used in turn.
    pub pool_size: usize,
    /// How long one command (and one connection attempt) may take.
    pub command_timeout: Duration,
    /// For `rediss://`: a PEM file of the CAs the server's certificate must chain to, instead
    /// of the webpki roots.
    pub ca: Option<std::path::PathBuf>,
}

/// Adds `ARGV[1]` to `KEYS[1]`; a key it creates expires after `ARGV[2]` ms (0: never).
const INCREMENT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// Sets `KEYS[1]` to `ARGV[3]` (expiring after `ARGV[4]` ms, 0: never) if its value is
/// `ARGV[2]` (`ARGV[1]` = 1), or if it is absent (`ARGV[1]` = 0); 1 if it did.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// The store on Redis.
pub struct RedisStore {
    connections: Box<[ConnectionManager]>,
    next: AtomicUsize,
    prefix: Vec<u8>,
    timeout: Duration,
    increment: Script,
    compare_and_swap: Script,
    /// Set while Redis cannot be reached: the failure and the recovery are logged once.
    down: AtomicBool,
}

impl RedisStore {
    /// Connects lazily: a Redis that is down at start makes operations unavailable until it
    /// comes up, it does not stop the gateway. Only a URL that does not parse is refused.
    pub fn new(settings: &RedisSettings) -> Result<RedisStore, String> {
        let client = match &settings.ca {
            Some(ca) => {
                let root_cert =
                    std::fs::read(ca).map_err(|e| format!("store.ca: cannot read {}: {e}", ca.display()))?;
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
                redis::Client::build_with_tls(settings.url.as_str(), certificates)
            }
            None => redis::Client::open(settings.url.as_str()),
        }
        .map_err(|e| format!("store.url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.command_timeout))
            .set_connection_timeout(Some(settings.command_timeout))
            // Reconnecting is retried on the next command, not in a loop that holds it.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connections = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Box<[_]>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(RedisStore {
            connections,
            next: AtomicUsize::new(0),
            prefix: settings.key_prefix.as_bytes().to_vec(),
            timeout: settings.command_timeout,
            increment: Script::new(INCREMENT),
            compare_and_swap: Script::new(COMPARE_AND_SWAP),
            down: AtomicBool::new(false),
        })
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// Runs `command`, bounded by the command timeout, and keeps the up/down log.
    async fn run<T: FromRedisValue>(&self, command: Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection();
        let result = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        self.settle(result)
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: Vec<u8>,
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut connection = self.connection();
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        let result = tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut connection)).await;
        self.settle(result)
    }

    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let error = match result {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("the Redis store is reachable again");
                }
                return Ok(value);
            }
            Ok(Err(error)) if is_not_an_integer(&error) => return Err(StoreError::NotAnInteger),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(%error, "the Redis store is unreachable: store calls fail until it is back");
        }
        Err(StoreError::Unavailable(error))
    }
}

/// Redis's answer to INCRBY on a value that is not a 64-bit integer, or one that would overflow.
fn is_not_an_integer(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    text.contains("not an integer") || text.contains("overflow")
}

/// `name key`, built once (not copied out of a builder).
fn command(name: &str, key: Vec<u8>) -> Cmd {
    let mut command = redis::cmd(name);
    command.arg(key);
    command
}

/// A TTL as the milliseconds Redis takes (0: none).
fn ttl_ms(ttl: Option<Duration>) -> Vec<u8> {
    ttl.map_or(0, |t| t.as_millis().max(1)).to_string().into_bytes()
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            check_sizes(key, None)?;
            self.run(command("GET", self.key(key))).await
        })
    }

    fn set<'a>(&'a self, key: &'a [u8], value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_sizes(key, Some(&value))?;
            let mut set = command("SET", self.key(key));
            set.arg(value);
            if let Some(ttl) = ttl {
                set.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            self.run::<()>(set).await
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_sizes(key, None)?;
            let removed: i64 = self.run(command("DEL", self.key(key))).await?;
            Ok(removed > 0)
        })
    }

    fn increment<'a>(&'a self, key: &'a [u8], delta: i64, ttl: Option<Duration>) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            check_sizes(key, None)?;
            let delta = delta.to_string().into_bytes();
            self.script(&self.increment, self.key(key), &[&delta, &ttl_ms(ttl)]).await
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<&'a [u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_sizes(key, Some(&new))?;
            let (present, expected): (&[u8], &[u8]) = match expected {
                Some(value) => (b"1", value),
                None => (b"0", b""),
            };
            let swapped: i64 = self
                .script(&self.compare_and_swap, self.key(key), &[present, expected, &new, &ttl_ms(ttl)])
                .await?;
            Ok(swapped == 1)
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
