//! The fleet's shared store: one Redis (or Valkey), reached through a
//! connection manager that reconnects by itself. Every call has a deadline
//! and is made off the request path (the sync task, admin actions).
//!
//! Keys, under `pm:{fleet}:`:
//! - `canary:{route}:{identity}`: the canary's shared control (JSON with a
//!   revision), changed only by compare-and-set;
//! - `win:{route}:{identity}`: a hash of each replica's guard window counts
//!   (stale entries are ignored, the hash expires);
//! - `exp:{name}:{identity}`: an experiment's kill-switch state;
//! - `tally:{name}:{identity}`: a hash of each replica's experiment counts.

use crate::compile::FleetSettings;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::time::Duration;

/// Compare-and-set on a string key: set `ARGV[2]` when the value is
/// `ARGV[1]` (`""`: when the key does not exist). 1 when set.
const CAS: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// A connection to the store and the key prefix of this fleet.
pub(crate) struct Store {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    deadline: Duration,
    cas: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Redis answered with an error, or the connection failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Store {
    /// A store for `settings` (nothing is dialled yet).
    pub(crate) fn new(settings: &FleetSettings) -> Result<Store, StoreError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())?;
        if let Some(p) = &settings.password {
            let redis_info = info.redis_settings().clone().set_password(p.clone());
            info = info.set_redis_settings(redis_info);
        }
        Ok(Store {
            client: redis::Client::open(info)?,
            conn: tokio::sync::OnceCell::new(),
            prefix: format!("pm:{}:", settings.name),
            deadline: settings.sync_interval.max(Duration::from_millis(500)),
            cas: Script::new(CAS),
        })
    }

    /// The full key of `kind:name:identity`.
    pub(crate) fn key(&self, kind: &str, name: &str, identity: &str) -> String {
        format!("{}{kind}:{name}:{identity}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.deadline))
            .set_response_timeout(Some(self.deadline))
            .set_number_of_retries(1);
        let conn = self
            .conn
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await?;
        Ok(conn.clone())
    }

    /// Runs `op` within the deadline.
    async fn within<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        match tokio::time::timeout(self.deadline, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.deadline)),
        }
    }

    /// The value of `key`, if any.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.within(async {
            let mut c = self.conn().await?;
            let v: Option<String> = c.get(key).await?;
            Ok(v)
        })
        .await
    }

    /// Sets `key` to `new` when it holds `old` (`None`: when it is
    /// missing); true when set.
    pub(crate) async fn cas(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError> {
        self.within(async {
            let mut c = self.conn().await?;
            let set: i64 = self
                .cas
                .key(key)
                .arg(old.unwrap_or(""))
                .arg(new)
                .invoke_async(&mut c)
                .await?;
            Ok(set == 1)
        })
        .await
    }

    /// In one round trip: reads `record`, sets field `field` of hash
    /// `hash` to `value` (the hash expires after `ttl` unless written
    /// again), and reads the whole hash.
    pub(crate) async fn exchange(
        &self,
        record: &str,
        hash: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(Option<String>, HashMap<String, String>), StoreError> {
        self.within(async {
            let mut c = self.conn().await?;
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            let (current, all): (Option<String>, HashMap<String, String>) = redis::pipe()
                .get(record)
                .hset(hash, field, value)
                .ignore()
                .pexpire(hash, ms)
                .ignore()
                .hgetall(hash)
                .query_async(&mut c)
                .await?;
            Ok((current, all))
        })
        .await
    }
}
