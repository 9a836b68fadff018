//! One connection type for the Redis store, whether Redis is a single server
//! (`redis://`, `rediss://`, `redis+unix://`) or a Redis Cluster
//! (`redis-cluster://host:port,host:port`, `rediss-cluster://` for TLS).
//!
//! Both connect lazily, so the daemon starts (not ready) while Redis is down.
//! The store pipelines commands for many keys in one round trip; a cluster
//! connection refuses pipelines that span hash slots, so on a cluster a
//! non-atomic pipeline is sent as its separate commands, concurrently (still
//! one round trip per node, in order per node). Atomic pipelines and Lua
//! scripts are kept to one slot by the key layout (see `store::redis`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// URL schemes that name a Redis Cluster; the rest of the URL is a
/// comma-separated list of seed nodes.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis-cluster://", "redis://"),
    ("rediss-cluster://", "rediss://"),
];

/// Whether `url` names a Redis Cluster.
pub fn is_cluster_url(url: &str) -> bool {
    CLUSTER_SCHEMES.iter().any(|(s, _)| url.starts_with(s))
}

/// The seed node URLs of a cluster URL, each in the single-server scheme.
/// Credentials given once before the first node apply to every node.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, single) = CLUSTER_SCHEMES.iter().find(|(s, _)| url.starts_with(s))?;
    let rest = &url[scheme.len()..];
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{single}{auth}{h}"))
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// Timeouts for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

/// A cluster connection made on first use, and again after a failed attempt.
#[derive(Clone)]
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl RedisConn {
    /// A Redis Cluster: a script may touch keys of one slot only.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Builds a connection without connecting. Must be called inside a Tokio
    /// runtime (the single-server manager spawns its task there).
    pub fn new(url: &str, timeouts: Timeouts) -> redis::RedisResult<Self> {
        if let Some(nodes) = cluster_nodes(url) {
            let client = ClusterClient::builder(nodes)
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                // Fail a call fast (the caller answers 503 and retries); the
                // connection re-learns the topology on later calls.
                .retries(2)
                .build()?;
            return Ok(RedisConn::Cluster(LazyCluster {
                client: Arc::new(client),
                conn: Arc::new(OnceCell::new()),
            }));
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            // Fail a call fast and let the caller answer 503; the manager keeps
            // reconnecting in the background on later calls.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let conn = lazy.get().await?;
                if pipeline.is_transaction() {
                    // MULTI/EXEC on one slot: the cluster connection routes it.
                    let mut conn = conn;
                    return conn.req_packed_commands(pipeline, offset, count).await;
                }
                // Commands are sent and answered concurrently, so two of
                // them may run in either order, even on one node: what must
                // run in order goes in one script call (see
                // `store::redis::script_calls`).
                // A failed command fails the whole call (the store's callers
                // retry or answer 503, as for a failed pipeline).
                let calls = pipeline.cmd_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(cmd).await }
                });
                let answers = futures_util::future::try_join_all(calls).await?;
                Ok(answers.into_iter().skip(offset).take(count).collect())
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_url_lists_every_seed_node_with_shared_credentials() {
        assert_eq!(
            cluster_nodes("redis-cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001"),
            Some(vec![
                "redis://user:pw@10.0.0.1:7000".to_string(),
                "redis://user:pw@10.0.0.2:7001".to_string()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss-cluster://h:1"),
            Some(vec!["rediss://h:1".to_string()])
        );
        assert_eq!(cluster_nodes("redis://h:1"), None);
        assert_eq!(cluster_nodes("redis-cluster://"), None);
    }
}
