//! Block compression: the `compression` property's values and zstd over one block.
//!
//! A block is stored compressed only when that saves at least an eighth of its bytes (as ZFS
//! does), so incompressible data costs one failed attempt and nothing on read. Compression and
//! decompression contexts are kept per thread and reused.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use super::CodecError;

/// Levels `zstd:N` accepts (zstd's own negative "fast" levels are not offered).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
/// The level `zstd` without a number means.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How new blocks of a file are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Off,
    Zstd {
        level: i32,
    },
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => f.write_str("off"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `off`, `zstd` (level 3) or `zstd:N` with N from 1 to 19.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("compression must be off, zstd or zstd:1 to zstd:19, not '{s}'");
        match s {
            "off" => Ok(Compression::Off),
            "zstd" => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            _ => {
                let level: i32 = s
                    .strip_prefix("zstd:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if ZSTD_LEVELS.contains(&level) {
                    Ok(Compression::Zstd { level })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Levels above this first try level 1 ([`compress`]).
const EARLY_ABORT_ABOVE: i32 = 3;

/// `content` compressed at `level` when that saves at least an eighth of it; `None` when it
/// does not (or when the content is too small to matter). Above level 3, a block that level 1
/// cannot shrink by an eighth is not tried at the slow level (as ZFS's zstd early abort does):
/// level 19 takes milliseconds to give up on a block of random bytes, level 1 microseconds.
pub fn compress(content: &[u8], level: i32) -> Option<Vec<u8>> {
    let limit = content.len() - content.len() / 8;
    if limit == 0 {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(compressor) => compressor,
            None => cell.insert(zstd::bulk::Compressor::new(level).ok()?),
        };
        let mut attempt = |level: i32| {
            compressor.set_compression_level(level).ok()?;
            let mut out = Vec::with_capacity(limit);
            // zstd refuses to write past the buffer's capacity: an error means "not worth it".
            let written = compressor.compress_to_buffer(content, &mut out).ok()?;
            (written <= limit).then_some(out)
        };
        if level > EARLY_ABORT_ABOVE {
            attempt(1)?;
        }
        attempt(level)
    })
}

/// Decompresses a stored block whose content is `logical_len` bytes.
pub fn decompress(stored: &[u8], logical_len: usize) -> Result<Vec<u8>, CodecError> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match cell.as_mut() {
            Some(decompressor) => decompressor,
            None => cell.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| CodecError::Decompress(e.to_string()))?,
            ),
        };
        let mut out = Vec::with_capacity(logical_len);
        decompressor
            .decompress_to_buffer(stored, &mut out)
            .map_err(|e| CodecError::Decompress(e.to_string()))?;
        if out.len() != logical_len {
            return Err(CodecError::Decompress(format!(
                "{} bytes decompressed, {logical_len} expected",
                out.len()
            )));
        }
        Ok(out)
    })
}

/// Whether every byte of `content` is zero (such blocks are stored as holes).
pub fn is_zero(content: &[u8]) -> bool {
    // OR-folding fixed chunks vectorises; `iter().all` would stop at each byte.
    content
        .chunks(256)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_values() {
        assert_eq!("off".parse(), Ok(Compression::Off));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 3 }));
        assert_eq!("zstd:19".parse(), Ok(Compression::Zstd { level: 19 }));
        for bad in ["", "zstd:0", "zstd:20", "zstd:-1", "lz4", "zstd:", "ZSTD"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(Compression::Zstd { level: 9 }.to_string(), "zstd:9");
        assert_eq!(Compression::Off.to_string(), "off");
    }

    #[test]
    fn compresses_text_and_refuses_noise() {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(128 * 1024)
            .collect();
        let packed = compress(&text, 3).expect("text compresses");
        assert!(packed.len() < text.len() / 10);
        assert_eq!(decompress(&packed, text.len()).expect("round trip"), text);

        let mut noise = vec![0u8; 128 * 1024];
        getrandom::fill(&mut noise).expect("random bytes");
        assert_eq!(compress(&noise, 3), None);
        assert_eq!(compress(&[], 3), None);
    }

    #[test]
    fn refuses_savings_under_an_eighth() {
        // Half noise, half zeros: compresses to about half, so it is kept compressed; seven
        // eighths noise cannot save an eighth.
        let mut mostly_noise = vec![0u8; 64 * 1024];
        getrandom::fill(&mut mostly_noise[..60 * 1024]).expect("random bytes");
        assert_eq!(compress(&mostly_noise, 3), None);
        let mut half = vec![0u8; 64 * 1024];
        getrandom::fill(&mut half[..32 * 1024]).expect("random bytes");
        assert!(compress(&half, 3).is_some());
    }

    #[test]
    fn slow_levels_store_noise_as_it_is_and_compress_text() {
        // (How fast level 19 gives up is measured by the codec bench, not timed here.)
        let mut noise = vec![0u8; 128 * 1024];
        getrandom::fill(&mut noise).expect("random bytes");
        assert_eq!(compress(&noise, 19), None);
        let text = vec![b'a'; 128 * 1024];
        let packed = compress(&text, 19).expect("text compresses at level 19");
        assert_eq!(decompress(&packed, text.len()).expect("round trip"), text);
    }

    #[test]
    fn damaged_or_mislabelled_input_is_an_error() {
        let text = vec![7u8; 10_000];
        let packed = compress(&text, 1).expect("compresses");
        assert!(decompress(&packed, 9_999).is_err());
        assert!(decompress(&packed[..packed.len() - 1], 10_000).is_err());
        assert!(decompress(b"not zstd at all", 10).is_err());
    }

    #[test]
    fn finds_zero_blocks() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; 131_072]));
        for at in [0, 1, 7, 8, 4095, 131_071] {
            let mut block = vec![0u8; 131_072];
            block[at] = 1;
            assert!(!is_zero(&block), "{at}");
            assert!(!is_zero(&block[at..]), "unaligned start at {at}");
        }
    }
}
