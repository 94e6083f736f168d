//! Unit tests of `jwks.rs` with a scripted [`Fetch`]: the fetch gate, persistence,
//! staleness and concurrency, without sockets. The real HTTP path is exercised by
//! `tests/identity.rs` against the mock IdP.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::auth::testkit::{TENANT, key_set};

const AUTH: &str = "http://idp.test";

#[derive(Default)]
struct Script {
    jwks: Mutex<Vec<u8>>,
    jwks_uri: Mutex<String>,
    down: AtomicBool,
    discovery_hits: AtomicUsize,
    delay_ms: AtomicUsize,
}

struct Fake(Arc<Script>);

impl Fetch for Fake {
    fn get(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
        let s = &self.0;
        std::thread::sleep(Duration::from_millis(
            s.delay_ms.load(Ordering::SeqCst) as u64
        ));
        if s.down.load(Ordering::SeqCst) {
            return Err("connection refused".to_string());
        }
        let body = if url.ends_with("/.well-known/openid-configuration") {
            assert_eq!(
                url,
                format!("{AUTH}/{TENANT}/v2.0/.well-known/openid-configuration")
            );
            s.discovery_hits.fetch_add(1, Ordering::SeqCst);
            let uri = s.jwks_uri.lock().clone();
            serde_json::to_vec(&serde_json::json!({ "jwks_uri": uri })).unwrap()
        } else {
            assert_eq!(url, *s.jwks_uri.lock());
            s.jwks.lock().clone()
        };
        if body.len() > max_bytes {
            return Err("body too large".to_string());
        }
        Ok(body)
    }
}

fn jwks_of(entries: &[(&str, u8)]) -> Vec<u8> {
    serde_json::to_vec(&key_set(entries).to_jwks_json()).unwrap()
}

fn setup(min_refresh: u64) -> (Arc<Script>, Arc<MemoryKeyStore>, JwksCache) {
    let script = Arc::new(Script::default());
    *script.jwks.lock() = jwks_of(&[("k1", 1)]);
    *script.jwks_uri.lock() = format!("{AUTH}/{TENANT}/discovery/v2.0/keys");
    let store = Arc::new(MemoryKeyStore::new());
    let cache = cache_over(&script, &store, min_refresh);
    (script, store, cache)
}

fn cache_over(script: &Arc<Script>, store: &Arc<MemoryKeyStore>, min_refresh: u64) -> JwksCache {
    let cfg = JwksConfig {
        authority: AUTH.to_string(),
        min_refresh_secs: min_refresh,
        http_timeout: Duration::from_secs(2),
        ..JwksConfig::default()
    };
    JwksCache::new(cfg, store.clone(), Box::new(Fake(script.clone())))
}

fn hits(s: &Script) -> usize {
    s.discovery_hits.load(Ordering::SeqCst)
}

#[test]
fn first_use_fetches_then_memory_serves() {
    let (script, store, cache) = setup(300);
    let keys = cache.keys(TENANT, 1_000).unwrap();
    assert_eq!(keys.kids(), ["k1"]);
    for t in 1_000..1_100 {
        cache.keys(TENANT, t).unwrap();
    }
    assert_eq!(hits(&script), 1);
    assert!(store.load(TENANT).is_some(), "persisted");
    let st = cache.status(1_010);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].key_count, 1);
    assert_eq!(st[0].last_good_age_secs, Some(10));
    assert_eq!(st[0].last_result, RefreshResult::Fetched { keys: 1 });
}

#[test]
fn unknown_kid_refetch_is_gated() {
    let (script, _store, cache) = setup(300);
    cache.keys(TENANT, 1_000).unwrap();
    *script.jwks.lock() = jwks_of(&[("k1", 1), ("k2", 2)]);
    // Within the window of the first fetch: no refetch.
    for _ in 0..200 {
        let k = cache.keys_after_unknown_kid(TENANT, 1_299).unwrap();
        assert!(!k.contains("k2"));
    }
    assert_eq!(hits(&script), 1);
    let k = cache.keys_after_unknown_kid(TENANT, 1_300).unwrap();
    assert!(k.contains("k2"));
    for _ in 0..200 {
        cache.keys_after_unknown_kid(TENANT, 1_400).unwrap();
    }
    assert_eq!(hits(&script), 2);
}

#[test]
fn idp_down_keeps_last_good_keys_until_stale_bound() {
    let (script, _store, cache) = setup(0);
    cache.keys(TENANT, 1_000).unwrap();
    script.down.store(true, Ordering::SeqCst);
    let k = cache.keys_after_unknown_kid(TENANT, 1_001).unwrap();
    assert!(k.contains("k1"));
    let st = &cache.status(1_001)[0];
    assert!(matches!(st.last_result, RefreshResult::Failed { .. }));
    assert_eq!(st.last_good_age_secs, Some(1));
    // Past max_age a fetch is due; it fails; old keys still serve.
    let day = 24 * 3600;
    assert!(cache.keys(TENANT, 1_000 + day + 5).is_ok());
    // Past max_stale nothing serves.
    let week = 7 * day;
    assert_eq!(
        cache.keys(TENANT, 1_000 + week).unwrap_err(),
        Refusal::KeysUnavailable
    );
}

#[test]
fn restart_with_idp_down_uses_persisted_keys() {
    let (script, store, cache) = setup(300);
    cache.keys(TENANT, 1_000).unwrap();
    drop(cache);
    script.down.store(true, Ordering::SeqCst);
    let cache = cache_over(&script, &store, 300);
    let k = cache.keys(TENANT, 2_000).unwrap();
    assert!(k.contains("k1"));
    let st = &cache.status(2_000)[0];
    assert_eq!(st.last_result, RefreshResult::Loaded { keys: 1 });
    assert_eq!(st.last_good_age_secs, Some(1_000));
    // A fresh cache with an empty store and the IdP down has nothing: refuse.
    let empty = cache_over(&script, &Arc::new(MemoryKeyStore::new()), 300);
    assert_eq!(
        empty.keys(TENANT, 2_000).unwrap_err(),
        Refusal::KeysUnavailable
    );
}

#[test]
fn corrupt_persisted_value_is_ignored() {
    let (script, store, _cache) = setup(300);
    store.save(TENANT, b"{not json");
    script.down.store(true, Ordering::SeqCst);
    let cache = cache_over(&script, &store, 300);
    assert_eq!(cache.keys(TENANT, 1).unwrap_err(), Refusal::KeysUnavailable);
}

#[test]
fn failed_documents_do_not_replace_keys() {
    let (script, _store, cache) = setup(0);
    cache.keys(TENANT, 1_000).unwrap();
    *script.jwks.lock() = b"{\"keys\": []}".to_vec();
    assert!(!cache.refresh(TENANT, 1_001));
    assert!(cache.keys(TENANT, 1_002).unwrap().contains("k1"));
    *script.jwks.lock() = vec![b' '; 300 * 1024];
    assert!(!cache.refresh(TENANT, 1_003));
    let st = &cache.status(1_003)[0];
    assert_eq!(
        st.last_result,
        RefreshResult::Failed {
            error: "body too large".to_string()
        }
    );
}

#[test]
fn jwks_uri_must_be_https_or_the_authority() {
    let (script, _store, cache) = setup(0);
    *script.jwks_uri.lock() = "http://elsewhere.test/keys".to_string();
    assert_eq!(cache.keys(TENANT, 1).unwrap_err(), Refusal::KeysUnavailable);
    assert_eq!(hits(&script), 1);
}

#[test]
fn odd_tenant_ids_never_reach_a_url() {
    let (script, _store, cache) = setup(0);
    for t in ["", "../x", "a/b", "a?b", &"x".repeat(65)] {
        assert_eq!(cache.keys(t, 1).unwrap_err(), Refusal::KeysUnavailable);
        assert_eq!(
            cache.keys_after_unknown_kid(t, 1).unwrap_err(),
            Refusal::KeysUnavailable
        );
    }
    assert_eq!(hits(&script), 0);
}

#[test]
fn concurrent_unknown_kids_share_one_fetch() {
    let (script, _store, cache) = setup(300);
    cache.keys(TENANT, 1_000).unwrap();
    *script.jwks.lock() = jwks_of(&[("k2", 2)]);
    script.delay_ms.store(100, Ordering::SeqCst);
    let cache = Arc::new(cache);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let c = cache.clone();
            std::thread::spawn(move || c.keys_after_unknown_kid(TENANT, 2_000).unwrap())
        })
        .collect();
    for t in threads {
        let keys = t.join().unwrap();
        assert!(keys.contains("k2"), "waiters see the fetched keys");
    }
    assert_eq!(hits(&script), 2);
}

#[test]
fn refresh_due_and_background_refresher() {
    let (script, _store, cache) = setup(0);
    cache.keys(TENANT, 1_000).unwrap();
    cache.refresh_due(1_500);
    assert_eq!(hits(&script), 1, "not due before the interval");
    cache.refresh_due(1_000 + 3_600);
    assert_eq!(hits(&script), 2);

    let (script, _store, cache) = setup(0);
    let cache = Arc::new(cache);
    let r = cache.start_refresher(vec![TENANT.to_string()], Duration::from_millis(20));
    let start = std::time::Instant::now();
    while hits(&script) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    r.stop();
    assert_eq!(hits(&script), 1, "prefetched once; not due again");
    assert_eq!(cache.status(unix_now())[0].key_count, 1);
}
