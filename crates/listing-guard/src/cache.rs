//! The score cache: what analysing an image produced, kept in an embedded redb file and shared by
//! the live pipeline and re-audits.
//!
//! Two kinds of entry, both evicted oldest first once older than `max_age` or beyond
//! `max_entries`:
//! - **analysis**: keyed by (image content sha256, analysis version): the signals, dimensions
//!   or decode failure. The analysis version names the provenance detector, the model and the
//!   decode limits, so a new model or new limits never reuse an old result. Re-posted images
//!   (same bytes, new listing) are analysed once.
//! - **url**: the content hash last fetched from a URL. Only a re-audit trusts it (to replay
//!   history without fetching every image again); live traffic always fetches, since a URL's
//!   content can change.
//!
//! Fetch failures are never cached: they are usually transient.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lg_events::{ImageFailure, Signals};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// key → 8-byte big-endian store time (ms since the epoch) followed by the value.
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
/// (store time ms, key) → (): the eviction order.
const AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("age");

/// Puts between two eviction sweeps.
const SWEEP_EVERY: u64 = 1000;

/// Why the cache failed. Callers treat a failing cache as a miss and go on.
#[derive(Debug, thiserror::Error)]
#[error("score cache: {0}")]
pub struct CacheError(String);

macro_rules! impl_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CacheError {
            fn from(e: $t) -> Self {
                CacheError(e.to_string())
            }
        }
    )*};
}
impl_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// The outcome of analysing one image's bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnalysis {
    /// Content hash.
    pub sha256: String,
    /// Width and height, when it decoded.
    pub dims: Option<[u32; 2]>,
    /// Why it did not decode, if it did not.
    pub failure: Option<ImageFailure>,
    /// Metadata and model signals.
    pub signals: Signals,
}

/// Bounds.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Entries older than this are ignored and evicted.
    pub max_age: Duration,
    /// Most entries kept.
    pub max_entries: u64,
}

/// Hit and miss counts since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Analyses found.
    pub hits: u64,
    /// Analyses looked up and not found.
    pub misses: u64,
}

/// The cache.
#[derive(Debug)]
pub struct ScoreCache {
    db: Database,
    limits: CacheLimits,
    hits: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store time and the value of a stored item; `None` for a malformed one (read as a miss).
fn split_stored(v: &[u8]) -> Option<(u64, &[u8])> {
    let (t, value) = v.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*t), value))
}

fn analysis_key(version: &str, sha256: &str) -> String {
    format!("a\u{1f}{version}\u{1f}{sha256}")
}

fn url_key(url: &str) -> String {
    format!("u\u{1f}{url}")
}

impl ScoreCache {
    /// Opens (or creates) the cache file.
    pub fn open(path: &Path, limits: CacheLimits) -> Result<Self, CacheError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CacheError(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(ITEMS)?;
        tx.open_table(AGE)?;
        tx.commit()?;
        Ok(Self {
            db,
            limits,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        })
    }

    /// The analysis of `sha256` under `version`, if cached and not expired.
    pub fn analysis(
        &self,
        version: &str,
        sha256: &str,
    ) -> Result<Option<CachedAnalysis>, CacheError> {
        let found = match self.read(&analysis_key(version, sha256))? {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    /// Stores an analysis.
    pub fn put_analysis(&self, version: &str, a: &CachedAnalysis) -> Result<(), CacheError> {
        self.write(&analysis_key(version, &a.sha256), &serde_json::to_vec(a)?)
    }

    /// The content hash last fetched from `url`, if cached and not expired.
    pub fn url_content(&self, url: &str) -> Result<Option<String>, CacheError> {
        Ok(self
            .read(&url_key(url))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Records that `url` served `sha256`.
    pub fn put_url_content(&self, url: &str, sha256: &str) -> Result<(), CacheError> {
        self.write(&url_key(url), sha256.as_bytes())
    }

    /// Hit and miss counts of analysis lookups.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Number of entries (both kinds).
    pub fn len(&self) -> Result<u64, CacheError> {
        Ok(self.db.begin_read()?.open_table(ITEMS)?.len()?)
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ITEMS)?;
        let Some(v) = table.get(key)? else {
            return Ok(None);
        };
        let Some((stored, value)) = split_stored(v.value()) else {
            return Ok(None);
        };
        let fresh = now_ms().saturating_sub(stored) <= self.limits.max_age.as_millis() as u64;
        Ok(fresh.then(|| value.to_vec()))
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<(), CacheError> {
        self.write_at(key, value, now_ms())
    }

    fn write_at(&self, key: &str, value: &[u8], at: u64) -> Result<(), CacheError> {
        let mut tx = self.db.begin_write()?;
        // A cache: losing the last few writes in a crash costs a re-analysis, not correctness.
        tx.set_durability(Durability::Eventual);
        {
            let mut items = tx.open_table(ITEMS)?;
            let mut age = tx.open_table(AGE)?;
            let mut stored = Vec::with_capacity(8 + value.len());
            stored.extend_from_slice(&at.to_be_bytes());
            stored.extend_from_slice(value);
            if let Some(old) = items.insert(key, stored.as_slice())? {
                let t = split_stored(old.value()).map(|(t, _)| t);
                drop(old);
                if let Some(t) = t {
                    age.remove((t, key))?;
                }
            }
            age.insert((at, key), ())?;
        }
        tx.commit()?;
        if self.puts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep()?;
        }
        Ok(())
    }

    /// Evicts expired entries, then the oldest beyond `max_entries`. Returns how many went.
    pub fn sweep(&self) -> Result<u64, CacheError> {
        let cutoff = now_ms().saturating_sub(self.limits.max_age.as_millis() as u64);
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Eventual);
        let mut removed = 0;
        {
            let mut items = tx.open_table(ITEMS)?;
            let mut age = tx.open_table(AGE)?;
            let mut len = items.len()?;
            loop {
                let over = len > self.limits.max_entries;
                let Some((k, _)) = age.first()? else { break };
                let (t, key) = k.value();
                if t >= cutoff && !over {
                    break;
                }
                let key = key.to_owned();
                drop(k);
                age.remove((t, key.as_str()))?;
                if items.remove(key.as_str())?.is_some() {
                    len = len.saturating_sub(1);
                }
                removed += 1;
            }
        }
        tx.commit()?;
        if removed > 0 {
            tracing::debug!(removed, "score cache sweep");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(sha: &str) -> CachedAnalysis {
        CachedAnalysis {
            sha256: sha.into(),
            dims: Some([640, 480]),
            failure: None,
            signals: Signals::default(),
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("lg-cache-{}-{name}.redb", std::process::id()));
        std::fs::remove_file(&p).ok();
        p
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn keyed_by_content_and_version_and_survives_reopen() {
        let path = temp("reopen");
        let limits = CacheLimits {
            max_age: DAY,
            max_entries: 100,
        };
        {
            let c = ScoreCache::open(&path, limits).unwrap();
            c.put_analysis("v1", &analysis("aa")).unwrap();
            c.put_url_content("https://img/1.jpg", "aa").unwrap();
            assert_eq!(c.analysis("v1", "aa").unwrap(), Some(analysis("aa")));
            assert_eq!(c.analysis("v2", "aa").unwrap(), None, "other version");
            assert_eq!(c.analysis("v1", "bb").unwrap(), None, "other content");
            assert_eq!(c.stats(), CacheStats { hits: 1, misses: 2 });
        }
        let c = ScoreCache::open(&path, limits).unwrap();
        assert_eq!(c.analysis("v1", "aa").unwrap(), Some(analysis("aa")));
        assert_eq!(
            c.url_content("https://img/1.jpg").unwrap().as_deref(),
            Some("aa")
        );
        assert_eq!(c.url_content("https://img/2.jpg").unwrap(), None);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn bounded_by_count_and_by_age() {
        let path = temp("bounds");
        let c = ScoreCache::open(
            &path,
            CacheLimits {
                max_age: DAY,
                max_entries: 3,
            },
        )
        .unwrap();
        let now = now_ms();
        // Two expired entries, then five fresh ones written in order; one overwritten later.
        for (i, at) in [now - 2 * 86_400_000, now - 3 * 86_400_000]
            .into_iter()
            .enumerate()
        {
            c.write_at(&analysis_key("v", &format!("old{i}")), b"{}", at)
                .unwrap();
        }
        for i in 0..5 {
            c.write_at(&url_key(&format!("u{i}")), b"x", now + i)
                .unwrap();
        }
        c.write_at(&url_key("u0"), b"y", now + 10).unwrap();
        assert_eq!(c.len().unwrap(), 7);
        assert_eq!(
            c.read(&analysis_key("v", "old0")).unwrap(),
            None,
            "expired reads miss"
        );
        assert_eq!(c.sweep().unwrap(), 4);
        // Kept: the three most recently written (u3, u4 and the rewritten u0).
        let kept: Vec<bool> = (0..5)
            .map(|i| c.url_content(&format!("u{i}")).unwrap().is_some())
            .collect();
        assert_eq!(kept, vec![true, false, false, true, true]);
        assert_eq!(c.url_content("u0").unwrap().as_deref(), Some("y"));
        assert_eq!(c.len().unwrap(), 3);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn a_malformed_entry_is_a_miss_not_a_crash() {
        let path = temp("malformed");
        let c = ScoreCache::open(
            &path,
            CacheLimits {
                max_age: DAY,
                max_entries: 10,
            },
        )
        .unwrap();
        let tx = c.db.begin_write().unwrap();
        tx.open_table(ITEMS)
            .unwrap()
            .insert(analysis_key("v", "aa").as_str(), b"shrt".as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(c.analysis("v", "aa").unwrap(), None);
        c.put_analysis("v", &analysis("aa")).unwrap();
        assert_eq!(c.analysis("v", "aa").unwrap(), Some(analysis("aa")));
        std::fs::remove_file(&path).ok();
    }
}
