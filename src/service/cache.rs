//! The result cache: computed explanations (maps, logits, metrics) keyed by everything
//! that changes their numbers, so asking again for the same photo with another output
//! format, resolution, colour map or opacity costs no pass. Bounded by bytes, least
//! recently used first out.
//!
//! The key is a BLAKE3 hash of the model's load (a changed package is a new load, so its
//! old entries can never match), the method with every parameter, the targets asked for,
//! whether metrics were asked for, and the preprocessed input tensor. Hashing the tensor
//! rather than the uploaded bytes means two encodings of the same pixels share an entry;
//! the upload itself stays with each request (it is only needed to draw the overlay).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::request::{ExplainRequest, ImageInput, ReferenceSpec, RegionSpec, TargetSpec};
use super::result::{RunStats, TargetInfo};
use crate::cam::Saliency;
use crate::cam::faithfulness::Faithfulness;
use crate::engine::EngineModel;

/// Whether an answer came from the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Computed now and stored.
    Miss,
    /// Served from the cache: no pass ran.
    Hit,
    /// Not looked up (the cache is off, or the request injects a fault).
    #[default]
    Off,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Miss => "miss",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Off => "off",
        }
    }
}

/// What a cached explanation keeps: everything but the rendering and the upload.
#[derive(Clone, Debug)]
pub(crate) struct CachedResult {
    pub logits: Vec<f32>,
    pub targets: Vec<usize>,
    pub target_info: TargetInfo,
    pub maps: Vec<Saliency>,
    pub metrics: Option<Vec<Faithfulness>>,
    pub stats: RunStats,
}

impl CachedResult {
    /// Bytes the entry holds (what the bound counts).
    fn bytes(&self) -> usize {
        let maps: usize =
            self.maps.iter().map(|m| m.input.data.len() + m.feature.as_ref().map_or(0, |f| f.data.len())).sum();
        (maps + self.logits.len()) * 4 + self.targets.len() * 8 + 256
    }
}

pub(crate) type CacheKey = [u8; 32];

/// The key of a request on a prepared input.
pub(crate) fn key(model: &EngineModel, request: &ExplainRequest, tensor: &[f32]) -> CacheKey {
    let mut h = blake3::Hasher::new();
    h.update(b"scorecam-result-v2\0");
    h.update(&model.id.to_le_bytes());
    h.update(model.name().as_bytes());
    h.update(b"\0");
    // Every parameter with its value, in the registry's order.
    h.update(serde_json::to_string(&request.method).unwrap_or_default().as_bytes());
    h.update(b"\0");
    match &request.targets {
        TargetSpec::Classes(c) => {
            h.update(b"classes");
            c.iter().for_each(|c| {
                h.update(&(*c as u64).to_le_bytes());
            });
        }
        TargetSpec::TopK(k) => {
            h.update(b"top_k");
            h.update(&(*k as u64).to_le_bytes());
        }
    }
    hash_region(&mut h, request.region.as_ref());
    h.update(format!("{:?}", request.detection).as_bytes());
    hash_reference(&mut h, request.reference.as_ref());
    h.update(&[u8::from(request.metrics)]);
    h.update(&(request.max_passes.unwrap_or(0) as u64).to_le_bytes());
    // The tensor's bytes, a block at a time (one `update` per value would be slow).
    let mut block = [0u8; 4096];
    for chunk in tensor.chunks(block.len() / 4) {
        for (dst, v) in block.chunks_exact_mut(4).zip(chunk) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&block[..chunk.len() * 4]);
    }
    *h.finalize().as_bytes()
}

/// A segmentation target's region, when given.
fn hash_region(h: &mut blake3::Hasher, region: Option<&RegionSpec>) {
    match region {
        None => h.update(b"region:none"),
        Some(RegionSpec::Box(b)) => {
            h.update(b"region:box");
            b.iter().for_each(|v| {
                h.update(&v.to_le_bytes());
            });
            h
        }
        Some(RegionSpec::Mask { width, height, pixels }) => {
            h.update(b"region:mask");
            h.update(&width.to_le_bytes()).update(&height.to_le_bytes()).update(pixels)
        }
    };
}

/// An embedding target's reference, when given: the vector, or the reference photo.
fn hash_reference(h: &mut blake3::Hasher, reference: Option<&ReferenceSpec>) {
    match reference {
        None => h.update(b"reference:none"),
        Some(ReferenceSpec::Vector(v)) => h.update(b"reference:vector").update(&floats(v)),
        Some(ReferenceSpec::Image(ImageInput::Encoded(bytes))) => h.update(b"reference:encoded").update(bytes),
        Some(ReferenceSpec::Image(ImageInput::Pixels(rgb))) => h
            .update(b"reference:pixels")
            .update(&rgb.width().to_le_bytes())
            .update(&rgb.height().to_le_bytes())
            .update(rgb.as_raw()),
        Some(ReferenceSpec::Image(ImageInput::Tensor(t))) => h.update(b"reference:tensor").update(&floats(t)),
    };
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

struct Entry {
    value: std::sync::Arc<CachedResult>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<CacheKey, Entry>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    bytes: usize,
    clock: u64,
}

/// A bounded least-recently-used map of results. Lookups and inserts take a short lock
/// (no computation happens under it).
pub struct ResultCache {
    max_bytes: usize,
    lru: Mutex<Lru>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ResultCache {
    pub fn new(max_mib: usize) -> Self {
        Self {
            max_bytes: max_mib.saturating_mul(1 << 20),
            lru: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<std::sync::Arc<CachedResult>> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        lru.clock += 1;
        let found = match lru.entries.get_mut(key) {
            Some(e) => {
                lru.order.remove(&e.used);
                e.used = lru.clock;
                lru.order.insert(e.used, *key);
                Some(e.value.clone())
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a result, evicting the least recently used until it fits; a result larger
    /// than the whole cache is not stored.
    pub(crate) fn put(&self, key: CacheKey, value: CachedResult) {
        let bytes = value.bytes();
        if bytes > self.max_bytes {
            return;
        }
        let mut lru = self.lock();
        let lru = &mut *lru;
        if let Some(old) = lru.entries.remove(&key) {
            lru.order.remove(&old.used);
            lru.bytes -= old.bytes;
        }
        while lru.bytes + bytes > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else { break };
            if let Some(e) = lru.entries.remove(&oldest) {
                lru.bytes -= e.bytes;
            }
        }
        lru.clock += 1;
        let used = lru.clock;
        lru.order.insert(used, key);
        lru.entries.insert(key, Entry { value: std::sync::Arc::new(value), bytes, used });
        lru.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::Map;

    fn result(values: usize) -> CachedResult {
        CachedResult {
            logits: vec![0.0; 10],
            targets: vec![1],
            target_info: TargetInfo { scores: vec![0.1], ..Default::default() },
            maps: vec![Saliency { input: Map::new(values, 1, vec![0.5; values]), feature: None }],
            metrics: None,
            stats: RunStats::default(),
        }
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_bounded() {
        let cache = ResultCache::new(1);
        // Three entries of ~400 KB: the third evicts the least recently used.
        let big = 100_000;
        cache.put([1; 32], result(big));
        cache.put([2; 32], result(big));
        assert!(cache.get(&[1; 32]).is_some(), "1 is now the most recent");
        cache.put([3; 32], result(big));
        assert!(cache.get(&[2; 32]).is_none(), "2 was the least recently used");
        assert!(cache.get(&[1; 32]).is_some());
        assert!(cache.get(&[3; 32]).is_some());
        assert!(cache.bytes() <= 1 << 20, "{}", cache.bytes());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.hits.load(Ordering::Relaxed), 3);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_entry_larger_than_the_cache_is_not_stored_and_zero_is_off() {
        let cache = ResultCache::new(1);
        cache.put([1; 32], result(300_000));
        assert!(cache.is_empty());
        assert!(!ResultCache::new(0).enabled());
    }

    #[test]
    fn replacing_a_key_does_not_count_its_bytes_twice() {
        let cache = ResultCache::new(1);
        cache.put([1; 32], result(1000));
        let once = cache.bytes();
        cache.put([1; 32], result(1000));
        assert_eq!(cache.bytes(), once);
        assert_eq!(cache.len(), 1);
    }
}
