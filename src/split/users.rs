//! Distinct users (SPEC 3): which sticky ids an experiment or a canary has
//! already seen, so users are counted once however many requests they send
//! (SRM is judged on users) and each gets one exposure line.
//!
//! Two tiers, both lock-free, memory growing with the ids actually seen:
//!
//! 1. An exact set of 64-bit fingerprints: 64 chunks of 2,048 slots,
//!    allocated on first use, open addressing with compare-and-swap. A
//!    chunk takes ids until it is 70% full (about 90,000 ids in all).
//! 2. Beyond that, a register-blocked Bloom filter of 2^27 bits (16 MiB),
//!    allocated in 4 KiB pages on first touch: each id sets 7 bits of one
//!    64-bit word with one compare-and-swap. At 10,000,000 ids it misses
//!    (calls a new id seen) well under 1% of the time; misses fall on every
//!    variant alike, so they do not bias the SRM test.
//!
//! An id is claimed new by exactly one caller even when several requests of
//! the same user race: both tiers decide with a single compare-and-swap.
//! (At the moment a chunk fills, one racing pair may land in different
//! tiers; the later insert then sees the earlier one, so at most a miss.)
//! Past [`SATURATION`] ids the set reports itself saturated and keeps
//! counting as best it can.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Chunks of the exact tier.
const CHUNKS: usize = 64;
/// Slots per chunk.
const CHUNK_SLOTS: usize = 2048;
/// A chunk stops taking ids at this many (70%).
const CHUNK_FULL: u32 = (CHUNK_SLOTS * 7 / 10) as u32;
/// Probes before a chunk is treated as full for an id.
const MAX_PROBES: usize = 64;
/// Words of the Bloom tier (2^21 × 64 bits = 16 MiB).
const BLOOM_WORDS: usize = 1 << 21;
/// Words per lazily allocated page (4 KiB).
const PAGE_WORDS: usize = 512;
/// Bits set per id in its word.
const BLOOM_K: u32 = 7;
/// Ids beyond which the set reports itself saturated.
pub const SATURATION: u64 = 10_000_000;

/// The distinct ids seen, in bounded memory.
pub struct DistinctIds {
    chunks: Box<[OnceLock<Chunk>]>,
    pages: Box<[OnceLock<Box<[AtomicU64]>>]>,
    bloom_ids: AtomicU64,
    saturated: AtomicBool,
}

struct Chunk {
    slots: Box<[AtomicU64]>,
    used: AtomicU32,
}

impl std::fmt::Debug for DistinctIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistinctIds")
            .field("bytes", &self.bytes())
            .field("saturated", &self.saturated())
            .finish()
    }
}

impl Default for DistinctIds {
    fn default() -> Self {
        DistinctIds {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            pages: (0..BLOOM_WORDS / PAGE_WORDS)
                .map(|_| OnceLock::new())
                .collect(),
            bloom_ids: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
        }
    }
}

impl DistinctIds {
    /// An empty set (about 1.5 KiB until ids arrive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id` (under `salt`, e.g. a canary arm); true the first time,
    /// for exactly one caller.
    pub fn insert(&self, salt: u8, id: &str) -> bool {
        let fp = fingerprint(salt, id);
        match self.insert_exact(fp) {
            Some(new) => new,
            None => self.insert_bloom(fp),
        }
    }

    /// Whether the Bloom tier holds more ids than it is sized for.
    pub fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Bytes allocated for ids so far.
    pub fn bytes(&self) -> usize {
        let chunks = self.chunks.iter().filter(|c| c.get().is_some()).count();
        let pages = self.pages.iter().filter(|p| p.get().is_some()).count();
        chunks * CHUNK_SLOTS * 8 + pages * PAGE_WORDS * 8
    }

    /// The exact tier: `Some(new)`, or `None` when its chunk is full (the
    /// id may still be in the Bloom tier).
    fn insert_exact(&self, fp: u64) -> Option<bool> {
        let chunk = self.chunks.get(chunk_of(fp))?.get_or_init(Chunk::new);
        let mut i = slot_of(fp);
        for _ in 0..MAX_PROBES {
            let slot = chunk.slots.get(i)?;
            match slot.load(Ordering::Acquire) {
                v if v == fp => return Some(false),
                0 => {
                    if chunk.used.load(Ordering::Relaxed) >= CHUNK_FULL {
                        return None;
                    }
                    match slot.compare_exchange(0, fp, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => {
                            chunk.used.fetch_add(1, Ordering::Relaxed);
                            return Some(true);
                        }
                        Err(v) if v == fp => return Some(false),
                        Err(_) => {}
                    }
                }
                _ => {}
            }
            i = (i + 1) % CHUNK_SLOTS;
        }
        None
    }

    /// The Bloom tier: true when this caller set the id's last bits.
    fn insert_bloom(&self, fp: u64) -> bool {
        let h = mix(fp ^ 0x9e37_79b9_7f4a_7c15);
        let word = (h % BLOOM_WORDS as u64) as usize;
        let Some(page) = self.pages.get(word / PAGE_WORDS) else {
            return false;
        };
        let page = page.get_or_init(|| (0..PAGE_WORDS).map(|_| AtomicU64::new(0)).collect());
        let Some(slot) = page.get(word % PAGE_WORDS) else {
            return false;
        };
        let mask = bits(h);
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if cur & mask == mask {
                return false;
            }
            match slot.compare_exchange_weak(cur, cur | mask, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        if self.bloom_ids.fetch_add(1, Ordering::Relaxed) + 1 > SATURATION {
            self.saturated.store(true, Ordering::Relaxed);
        }
        true
    }
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            slots: (0..CHUNK_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            used: AtomicU32::new(0),
        }
    }
}

/// A 64-bit fingerprint of `id` under `salt` (never 0: 0 marks an empty
/// slot). FNV-1a over the bytes, then a full-avalanche finalizer.
fn fingerprint(salt: u8, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(salt).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h).max(1)
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn chunk_of(fp: u64) -> usize {
    (fp >> 58) as usize % CHUNKS
}

fn slot_of(fp: u64) -> usize {
    (fp % CHUNK_SLOTS as u64) as usize
}

/// [`BLOOM_K`] bit positions in a word, from successive 6-bit slices of `h`
/// above the bits that chose the word.
fn bits(h: u64) -> u64 {
    let mut mask = 0u64;
    let mut rest = mix(h);
    for _ in 0..BLOOM_K {
        mask |= 1 << (rest & 63);
        rest >>= 6;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_each_id_once_per_salt() {
        let s = DistinctIds::new();
        assert!(s.insert(0, "alice"));
        assert!(!s.insert(0, "alice"));
        assert!(s.insert(1, "alice"), "another salt is another key");
        assert!(s.insert(0, "bob"));
        assert!(s.bytes() <= 3 * CHUNK_SLOTS * 8, "{}", s.bytes());
    }

    #[test]
    fn exact_below_the_bloom_tier_and_rarely_wrong_beyond() {
        let s = DistinctIds::new();
        let n = 300_000;
        let new = (0..n).filter(|i| s.insert(0, &format!("u{i}"))).count();
        // The first ~90,000 are exact; the rest meet an almost empty filter.
        assert!(new >= n - 10, "{new}");
        assert_eq!((0..n).filter(|i| s.insert(0, &format!("u{i}"))).count(), 0);
        assert!(s.bytes() <= 17 << 20);
        assert!(!s.saturated());
    }

    #[test]
    fn racing_inserts_of_one_id_claim_it_once() {
        for round in 0..50 {
            let s = Arc::new(DistinctIds::new());
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        (0..200)
                            .filter(|i| s.insert(0, &format!("r{round}-{i}")))
                            .count()
                    })
                })
                .collect();
            let claimed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(claimed, 200);
        }
    }
}
