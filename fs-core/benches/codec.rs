//! Codec benchmark (issue 7): per-core throughput of what the data path does to every block —
//! the XXH3 checksum, zstd, AES-256-GCM, the two together as `encode_block`/`decode_block`
//! compose them, the keyed BLAKE3 dedup hash — and of the AES-256-XTS metadata page cipher.
//!
//! ```sh
//! cargo bench -p fs-core --bench codec                 # everything, about two minutes
//! cargo bench -p fs-core --bench codec -- zstd         # only the groups whose name matches
//! ```
//!
//! Pure functions in one thread, no I/O: the figures are what one core can do, the ceiling
//! these steps put on a mount's throughput per serving thread. Every block is the default
//! block size, 128 KiB, of two kinds of content, both deterministic (the same bytes every run):
//! - `text`: generated prose and log-like lines (words from a fixed vocabulary, numbers), which
//!   zstd:3 packs to about a third;
//! - `random`: xorshift noise, which no level compresses (`compress` gives up and the block is
//!   stored as it is; that failed attempt is what `random` measures for compression).
//!
//! Groups (criterion reports time per call and MiB/s or GiB/s of content):
//! - `checksum64`: XXH3-64 over the block;
//! - `zstd_compress/N`, `zstd_decompress/N`: `codec::compress` at levels 1, 3, 9 and 19, and
//!   decompressing its output (text only: random blocks are never stored compressed);
//! - `gcm_seal`, `gcm_open`: `PoolKeys::seal_block`/`open_block` in place on the block, with
//!   the 17-byte associated data a block record gives;
//! - `encode_block/MODE`, `decode_block/MODE`: the whole write and read transform for `off`,
//!   `zstd3`, `encrypted` and `zstd3+encrypted`;
//! - `dedup_hash`: BLAKE3 keyed with the pool's dedup key;
//! - `xts_encrypt_page`, `xts_decrypt_page`: one 4 KiB metadata page.
//!
//! Where a call consumes or overwrites its input (the in-place ciphers, `decode_block`), a
//! fresh copy is made just before each call, outside the timed part, so the input is in the
//! CPU cache as a block just copied in from FUSE is (with a batch of cold copies instead,
//! AES-GCM measured 1.7–2.9 GiB/s rather than 4.3 on the machine this was written on). The header lines printed first give the
//! stored size of each kind of block at each level. Each benchmark takes 10 samples over
//! about 2 s after 0.5 s of warm-up: enough to compare features, not to resolve a few percent.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use fs_core::codec::compress::{compress, decompress};
use fs_core::codec::crypt::{MasterKey, NonceSequence, PoolKeys, PAGE_LEN, TAG_LEN};
use fs_core::codec::{checksum64, decode_block, dedup_hash, encode_block, Compression};
use fs_core::device::SplitMix64 as Rng;

/// The default block size.
const BLOCK: usize = 128 * 1024;
const LEVELS: [i32; 4] = [1, 3, 9, 19];
/// The block id every encoded block is bound to (any will do).
const BLOCK_ID: u64 = 42;

/// An index below `n` (small: the modulo bias does not matter here).
fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn random_block() -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..BLOCK / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect()
}

/// Text-like content: log lines with a timestamp, a level, a few numbers and words drawn from
/// a vocabulary, so it compresses as ordinary text and logs do (not as one phrase repeated).
fn text_block() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "to",
        "in",
        "a",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "had",
        "they",
        "you",
        "were",
        "their",
        "one",
        "all",
        "we",
        "can",
        "her",
        "has",
        "there",
        "been",
        "if",
        "more",
        "when",
        "will",
        "would",
        "who",
        "so",
        "block",
        "pool",
        "device",
        "tier",
        "fast",
        "slow",
        "migration",
        "snapshot",
        "commit",
        "checksum",
        "metadata",
        "inode",
        "directory",
        "file",
        "write",
        "read",
        "cache",
        "request",
        "latency",
        "queue",
        "worker",
        "thread",
        "buffer",
        "offset",
        "length",
        "error",
        "retry",
        "timeout",
        "connection",
        "client",
        "server",
        "session",
        "user",
        "storage",
        "volume",
        "replica",
        "transaction",
        "index",
        "record",
        "table",
        "value",
        "compression",
        "encryption",
        "mount",
        "scrub",
        "heat",
        "watermark",
        "allocation",
    ];
    const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    let mut rng = Rng(0x5EED_7E47_0000_0001);
    let mut out = String::with_capacity(BLOCK + 256);
    let mut seconds = 1_764_000_000u64;
    while out.len() < BLOCK {
        seconds += rng.next_u64() % 3;
        let words = 6 + pick(&mut rng, 14);
        out.push_str(&format!(
            "{seconds}.{:06} {} [{}] ",
            rng.next_u64() % 1_000_000,
            LEVELS[pick(&mut rng, LEVELS.len())],
            WORDS[48 + pick(&mut rng, WORDS.len() - 48)],
        ));
        for w in 0..words {
            if w > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[pick(&mut rng, WORDS.len())]);
            if pick(&mut rng, 8) == 0 {
                out.push_str(&format!(" {}", rng.next_u64() % 100_000));
            }
        }
        out.push_str(if pick(&mut rng, 4) == 0 { ".\n" } else { "\n" });
    }
    let mut bytes = out.into_bytes();
    bytes.truncate(BLOCK);
    bytes
}

fn contents() -> [(&'static str, Vec<u8>); 2] {
    [("text", text_block()), ("random", random_block())]
}

fn keys() -> PoolKeys {
    PoolKeys::derive(&MasterKey::generate().expect("the system gives random bytes"))
}

/// The associated data `encode_block` binds a block with: id, compressed flag, length.
fn aad(len: usize) -> [u8; 17] {
    let mut aad = [0u8; 17];
    aad[..8].copy_from_slice(&BLOCK_ID.to_le_bytes());
    aad[9..].copy_from_slice(&(len as u64).to_le_bytes());
    aad
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum64");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (kind, content) in contents() {
        group.bench_function(kind, |b| b.iter(|| checksum64(black_box(&content))));
    }
    group.finish();
}

fn zstd(c: &mut Criterion) {
    let contents = contents();
    for (kind, content) in &contents {
        let sizes: Vec<String> = LEVELS
            .iter()
            .map(|&level| match compress(content, level) {
                Some(packed) => format!(
                    "level {level}: {} B ({:.1} %)",
                    packed.len(),
                    100.0 * packed.len() as f64 / content.len() as f64
                ),
                None => format!("level {level}: not compressed"),
            })
            .collect();
        println!("# {kind} block of {BLOCK} B, stored: {}", sizes.join(", "));
    }
    let mut group = c.benchmark_group("zstd_compress");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for level in LEVELS {
        for (kind, content) in &contents {
            group.bench_with_input(
                BenchmarkId::new(level.to_string(), kind),
                content,
                |b, c| b.iter(|| compress(black_box(c), level)),
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("zstd_decompress");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    let (kind, text) = &contents[0];
    for level in LEVELS {
        let packed = compress(text, level).expect("text compresses");
        group.bench_with_input(
            BenchmarkId::new(level.to_string(), kind),
            &packed,
            |b, p| b.iter(|| decompress(black_box(p), BLOCK).expect("decompresses")),
        );
    }
    group.finish();
}

fn gcm(c: &mut Criterion) {
    let keys = keys();
    let nonces = NonceSequence::new(1);
    let aad = aad(BLOCK);
    let mut group = c.benchmark_group("gcm_seal");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (kind, content) in contents() {
        group.bench_function(kind, |b| {
            b.iter_batched_ref(
                || {
                    let mut buf = Vec::with_capacity(BLOCK + TAG_LEN);
                    buf.extend_from_slice(&content);
                    (nonces.next(), buf)
                },
                |(nonce, buf)| keys.seal_block(nonce, &aad, buf).expect("seals"),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("gcm_open");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (kind, content) in contents() {
        let nonce = nonces.next();
        let mut sealed = content.clone();
        keys.seal_block(&nonce, &aad, &mut sealed).expect("seals");
        group.bench_function(kind, |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| keys.open_block(&nonce, &aad, buf).expect("opens"),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn blocks(c: &mut Criterion) {
    let keys = keys();
    let nonces = NonceSequence::new(2);
    let modes = [
        ("off", Compression::Off, false),
        ("zstd3", Compression::Zstd { level: 3 }, false),
        ("encrypted", Compression::Off, true),
        ("zstd3+encrypted", Compression::Zstd { level: 3 }, true),
    ];
    let contents = contents();
    let mut group = c.benchmark_group("encode_block");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (mode, compression, encrypt) in modes {
        for (kind, content) in &contents {
            group.bench_with_input(BenchmarkId::new(mode, kind), content, |b, content| {
                b.iter(|| {
                    let encryption = encrypt.then(|| (&keys, nonces.next()));
                    encode_block(black_box(content), compression, encryption, BLOCK_ID)
                        .expect("encodes")
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("decode_block");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (mode, compression, encrypt) in modes {
        for (kind, content) in &contents {
            let encryption = encrypt.then(|| (&keys, nonces.next()));
            let (stored, encoding) =
                encode_block(content, compression, encryption, BLOCK_ID).expect("encodes");
            group.bench_with_input(BenchmarkId::new(mode, kind), &stored, |b, stored| {
                b.iter_batched(
                    || stored.clone(),
                    |stored| {
                        decode_block(stored, encoding, BLOCK, BLOCK_ID, Some(&keys))
                            .expect("decodes")
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

fn dedup(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("dedup_hash");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (kind, content) in contents() {
        group.bench_function(kind, |b| {
            b.iter(|| dedup_hash(keys.dedup_key(), black_box(&content)))
        });
    }
    group.finish();
}

fn pages(c: &mut Criterion) {
    let keys = keys();
    let mut page = [0u8; PAGE_LEN];
    page.copy_from_slice(&text_block()[..PAGE_LEN]);
    let mut group = c.benchmark_group("xts_encrypt_page");
    group.throughput(Throughput::Bytes(PAGE_LEN as u64));
    group.bench_function("4KiB", |b| {
        b.iter(|| keys.encrypt_pages(black_box(7), black_box(&mut page)))
    });
    group.finish();
    let mut group = c.benchmark_group("xts_decrypt_page");
    group.throughput(Throughput::Bytes(PAGE_LEN as u64));
    group.bench_function("4KiB", |b| {
        b.iter(|| keys.decrypt_pages(black_box(7), black_box(&mut page)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = codec;
    config = config();
    targets = checksum, zstd, gcm, blocks, dedup, pages
}
criterion_main!(codec);
