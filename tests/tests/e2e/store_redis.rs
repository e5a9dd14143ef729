//! The shared store on a real Redis: two gateway processes draw from one `rate-limit` bucket;
//! increments and compare-and-swap stay atomic under concurrent calls from two replicas'
//! stores; a Redis that goes away gives each policy (`fail-open`: the plugin decides;
//! `fail-closed`: 503) with one clear log line, and service resumes when it comes back.

use std::sync::Arc;
use std::time::Duration;

use wasmgate::store::{RedisSettings, RedisStore, Store, StoreError};
use wasmgate_example_origin::Origin;
use wasmgate_tests::harness::{self, GatewayProcess, TempDir, Toml};
use wasmgate_tests::redis::RedisServer;
use wasmgate_tests::{client, wasm};

async fn origin() -> Origin {
    Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

/// A gateway whose one route is limited to a burst of 10 per client address (refilled at one
/// token per 1000 s), with its store on `redis`.
fn limited(backend: std::net::SocketAddr, store: &str) -> Toml {
    Toml::new()
        .listener()
        .raw("[admin]")
        .raw(r#"address = "127.0.0.1:0""#)
        .plugin("limit", wasm::RATE_LIMIT, "{ rate = 0.001, burst = 10 }")
        .upstream("o", &[backend])
        .route("o")
        .raw(r#"plugins = ["limit"]"#)
        .raw("[store]")
        .raw(store)
}

fn redis_store(redis: &RedisServer, extra: &str) -> String {
    format!("backend = \"redis\"\nurl = \"{}\"\ncommand_timeout = \"200ms\"\n{extra}", redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_rate_limit_bucket() {
    let redis = tokio::task::block_in_place(RedisServer::start).expect("redis");
    let o = origin().await;
    let (one, two) = (TempDir::new("replica-1").expect("dir"), TempDir::new("replica-2").expect("dir"));
    let config = limited(o.addr(), &redis_store(&redis, r#"key_prefix = "shared:""#));
    let replicas = tokio::task::block_in_place(|| {
        [GatewayProcess::start(one.path(), &config), GatewayProcess::start(two.path(), &config)]
    });
    let [a, b] = replicas.map(|r| r.expect("replica"));
    let mut statuses = Vec::new();
    for i in 0..20 {
        let replica = if i % 2 == 0 { &a } else { &b };
        statuses.push(client::get(replica.addr, "/", &[]).await.expect("request").status.as_u16());
    }
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((passed, limited), (10, 10), "{statuses:?}");

    // The store's latency shows per operation and backend.
    let admin = wasmgate_tests::rollout::admin_addr(&a).expect("admin");
    let metrics = client::get(admin, "/metrics", &[]).await.expect("metrics").text();
    for op in ["get", "compare-and-swap"] {
        let series = format!("wasmgate_store_duration_seconds_count{{op=\"{op}\",backend=\"redis\"}}");
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
}

fn settings(redis: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: redis.url(),
        key_prefix: "atomic:".into(),
        pool_size: 2,
        command_timeout: Duration::from_secs(2),
        ca: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_and_swaps_stay_atomic_across_replicas() {
    let redis = tokio::task::block_in_place(RedisServer::start).expect("redis");
    // Two stores on one Redis: what two replicas hold.
    let stores: Vec<Arc<dyn Store>> = (0..2)
        .map(|_| Arc::new(RedisStore::new(&settings(&redis)).expect("store")) as Arc<dyn Store>)
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            store.increment(b"counter", 1, None).await.expect("increment");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    assert_eq!(stores[0].get(b"counter").await.expect("get").as_deref(), Some(&b"100"[..]));

    // A counter kept by compare-and-swap: every swap that succeeds adds exactly one.
    for i in 0..40 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            loop {
                let current = store.get(b"swapped").await.expect("get");
                let n: u64 = current
                    .as_deref()
                    .map_or(0, |v| std::str::from_utf8(v).expect("utf-8").parse().expect("n"));
                let next = (n + 1).to_string().into_bytes();
                if store.compare_and_swap(b"swapped", current.as_deref(), next, None).await.expect("cas") {
                    return;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    assert_eq!(stores[1].get(b"swapped").await.expect("get").as_deref(), Some(&b"40"[..]));

    // The other operations keep the memory store's meaning.
    let store = &stores[0];
    assert!(!store.compare_and_swap(b"swapped", None, b"x".to_vec(), None).await.expect("cas"), "present");
    assert!(store.compare_and_swap(b"fresh", None, b"x".to_vec(), None).await.expect("cas"), "absent");
    store.set(b"brief", b"v".to_vec(), Some(Duration::from_millis(100))).await.expect("set");
    assert_eq!(store.get(b"brief").await.expect("get").as_deref(), Some(&b"v"[..]));
    let increment_ttl =
        store.increment(b"window", 5, Some(Duration::from_millis(100))).await.expect("increment");
    assert_eq!(increment_ttl, 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get(b"brief").await.expect("get").is_some()
        || store.get(b"window").await.expect("get").is_some()
    {
        assert!(std::time::Instant::now() < deadline, "the entries did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.delete(b"fresh").await.expect("delete"));
    assert!(!store.delete(b"fresh").await.expect("delete"));
    store.set(b"text", b"abc".to_vec(), None).await.expect("set");
    assert_eq!(store.increment(b"text", 1, None).await, Err(StoreError::NotAnInteger));
    assert_eq!(store.get(&[b'k'; 300]).await, Err(StoreError::TooLarge));
    assert_eq!(store.set(b"big", vec![0; 65 * 1024], None).await, Err(StoreError::TooLarge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_the_policy_and_service_resumes() {
    let mut redis = tokio::task::block_in_place(RedisServer::start).expect("redis");
    let o = origin().await;
    let (open_dir, closed_dir) =
        (TempDir::new("outage-open").expect("dir"), TempDir::new("outage-closed").expect("dir"));
    let open_config = limited(o.addr(), &redis_store(&redis, r#"key_prefix = "open:""#));
    let closed_config = limited(
        o.addr(),
        &redis_store(&redis, "key_prefix = \"closed:\"\nwhen_unavailable = \"fail-closed\""),
    );
    let (open, closed) = tokio::task::block_in_place(|| {
        (
            GatewayProcess::start(open_dir.path(), &open_config),
            GatewayProcess::start(closed_dir.path(), &closed_config),
        )
    });
    let (open, closed) = (open.expect("fail-open gateway"), closed.expect("fail-closed gateway"));
    assert_eq!(client::get(open.addr, "/", &[]).await.expect("request").status, 200);
    assert_eq!(client::get(closed.addr, "/", &[]).await.expect("request").status, 200);

    redis.stop();
    // fail-open: the plugin is told `unavailable` and lets the request through.
    assert_eq!(client::get(open.addr, "/", &[]).await.expect("request").status, 200);
    // fail-closed: 503, named.
    let refused = client::get(closed.addr, "/", &[]).await.expect("request");
    assert_eq!((refused.status.as_u16(), refused.header("x-wasmgate-error")), (503, "store-unavailable"));
    // The gateway's stderr reaches the test through a reader thread, so the line may trail the response.
    harness::wait_until("the outage was logged", || {
        !closed.log_lines("the Redis store is unreachable").is_empty()
    })
    .await;
    // Further failures are not logged again.
    assert_eq!(client::get(closed.addr, "/", &[]).await.expect("request").status, 503);
    assert_eq!(closed.log_lines("the Redis store is unreachable").len(), 1);

    tokio::task::block_in_place(|| redis.resume()).expect("redis again");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = client::get(closed.addr, "/", &[]).await.expect("request").status;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "service did not resume: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness::wait_until("the recovery was logged", || !closed.log_lines("reachable again").is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_reaches_redis() {
    let dir = TempDir::new("redis-tls").expect("dir");
    let ca = wasmgate_tests::tls::TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("ca pem");
    let (cert, key) = ca.write_leaf(dir.path(), &["localhost"]).expect("leaf");
    let tls = Some([cert, key, ca_pem.clone()]);
    let redis =
        tokio::task::block_in_place(|| RedisServer::start_with(tls, Some("s3cret"))).expect("redis over TLS");
    let port = redis.addr.port();
    let with = |password: &str, ca: Option<std::path::PathBuf>| RedisSettings {
        url: format!("rediss://:{password}@localhost:{port}"),
        key_prefix: "tls:".into(),
        pool_size: 1,
        command_timeout: Duration::from_secs(2),
        ca,
    };
    let store = RedisStore::new(&with("s3cret", Some(ca_pem.clone()))).expect("store");
    store.set(b"k", b"over tls".to_vec(), None).await.expect("set over TLS");
    assert_eq!(store.get(b"k").await.expect("get").as_deref(), Some(&b"over tls"[..]));

    // The server's certificate is checked: without the CA, the webpki roots refuse it.
    let untrusted = RedisStore::new(&with("s3cret", None)).expect("store");
    assert!(matches!(untrusted.get(b"k").await, Err(StoreError::Unavailable(_))));
    // And the password is needed.
    let wrong = RedisStore::new(&with("wrong", Some(ca_pem))).expect("store");
    assert!(matches!(wrong.get(b"k").await, Err(StoreError::Unavailable(_))));
}
