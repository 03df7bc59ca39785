//! Pure functions over block bytes: checksums, compression, encryption and the keyed dedup
//! hash, and the order they compose in.
//!
//! Writing a block: content → zstd (kept only when it saves an eighth) → AES-256-GCM (with the
//! block id, the compression flag and the content length as associated data) → the stored
//! bytes, which the XXH3 checksum covers. Scrub, copies and migrations verify and move stored
//! bytes, so they need no key; only reading content back decrypts and decompresses.

pub mod compress;
pub mod crypt;

pub use compress::Compression;
use crypt::{BlockNonce, PoolKeys};

/// The 64-bit checksum (XXH3) stored with every block and superblock.
pub fn checksum64(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The dedup table's key for a block's content: BLAKE3 keyed with a per-pool secret, so the
/// table reveals nothing about content to someone who lacks the key, and nobody can probe
/// the pool with a known file's hash.
pub fn dedup_hash(key: &[u8; crypt::KEY_LEN], content: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, content).as_bytes()
}

/// Why block bytes or keys could not be processed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("encryption failed")]
    Encrypt,
    #[error("the block fails authentication: its ciphertext or record was changed")]
    Authentication,
    #[error("wrong passphrase or keyfile")]
    WrongKey,
    #[error("the stored key is unusable: {0}")]
    BadKeySlot(&'static str),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("the system gave no random bytes: {0}")]
    Random(String),
    #[error("the block is encrypted and the pool's key is not loaded")]
    Locked,
}

/// How a block's stored bytes encode its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    /// zstd-compressed.
    pub compressed: bool,
    /// AES-256-GCM-encrypted with this nonce (the tag follows the ciphertext).
    pub nonce: Option<BlockNonce>,
}

/// Associated data of a block's encryption: everything its record says about the content.
fn block_aad(id: u64, compressed: bool, logical_len: usize) -> [u8; 17] {
    let mut aad = [0u8; 17];
    aad[..8].copy_from_slice(&id.to_le_bytes());
    aad[8] = u8::from(compressed);
    aad[9..].copy_from_slice(&(logical_len as u64).to_le_bytes());
    aad
}

/// Encodes the content of block `id`: compressed if `compression` asks for it and it pays,
/// then encrypted under `encryption` (keys and a fresh nonce) if given. Returns the stored
/// bytes and how to decode them.
pub fn encode_block(
    content: &[u8],
    compression: Compression,
    encryption: Option<(&PoolKeys, BlockNonce)>,
    id: u64,
) -> Result<(Vec<u8>, Encoding), CodecError> {
    let packed = match compression {
        Compression::Off => None,
        Compression::Zstd { level } => compress::compress(content, level),
    };
    let compressed = packed.is_some();
    let Some((keys, nonce)) = encryption else {
        return Ok((
            packed.unwrap_or_else(|| content.to_vec()),
            Encoding {
                compressed,
                nonce: None,
            },
        ));
    };
    let mut stored = packed.unwrap_or_else(|| {
        let mut buf = Vec::with_capacity(content.len() + crypt::TAG_LEN);
        buf.extend_from_slice(content);
        buf
    });
    keys.seal_block(
        &nonce,
        &block_aad(id, compressed, content.len()),
        &mut stored,
    )?;
    Ok((
        stored,
        Encoding {
            compressed,
            nonce: Some(nonce),
        },
    ))
}

/// The content of block `id` from its verified stored bytes.
pub fn decode_block(
    mut stored: Vec<u8>,
    encoding: Encoding,
    logical_len: usize,
    id: u64,
    keys: Option<&PoolKeys>,
) -> Result<Vec<u8>, CodecError> {
    if let Some(nonce) = encoding.nonce {
        let keys = keys.ok_or(CodecError::Locked)?;
        keys.open_block(
            &nonce,
            &block_aad(id, encoding.compressed, logical_len),
            &mut stored,
        )?;
    }
    if encoding.compressed {
        return compress::decompress(&stored, logical_len);
    }
    if stored.len() != logical_len {
        return Err(CodecError::Decompress(format!(
            "{} bytes stored, {logical_len} expected",
            stored.len()
        )));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::crypt::{MasterKey, NonceSequence};
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        b"AegisFS keeps every block checksummed. "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn every_combination_round_trips() {
        let keys = PoolKeys::derive(&MasterKey::generate().expect("key"));
        let nonces = NonceSequence::new(1);
        let mut noise = vec![0u8; 100_000];
        getrandom::fill(&mut noise).expect("random");
        for content in [text(131_072), noise, Vec::new(), vec![1]] {
            for compression in [Compression::Off, Compression::Zstd { level: 3 }] {
                for encrypt in [false, true] {
                    let encryption = encrypt.then(|| (&keys, nonces.next()));
                    let (stored, encoding) =
                        encode_block(&content, compression, encryption, 42).expect("encodes");
                    assert_eq!(encoding.nonce.is_some(), encrypt);
                    let back = decode_block(stored, encoding, content.len(), 42, Some(&keys))
                        .expect("decodes");
                    assert_eq!(back, content);
                }
            }
        }
    }

    #[test]
    fn compressible_text_shrinks_and_stays_hidden_when_encrypted() {
        let keys = PoolKeys::derive(&MasterKey::generate().expect("key"));
        let content = text(131_072);
        let (stored, encoding) = encode_block(
            &content,
            Compression::Zstd { level: 3 },
            Some((&keys, NonceSequence::new(3).next())),
            7,
        )
        .expect("encodes");
        assert!(encoding.compressed);
        assert!(stored.len() < content.len() / 10);
        assert!(!stored.windows(8).any(|w| w == &content[..8]));
    }

    #[test]
    fn a_record_that_lies_about_the_block_fails() {
        let keys = PoolKeys::derive(&MasterKey::generate().expect("key"));
        let content = text(5000);
        let (stored, encoding) = encode_block(
            &content,
            Compression::Zstd { level: 1 },
            Some((&keys, NonceSequence::new(1).next())),
            9,
        )
        .expect("encodes");
        let lies = [
            (encoding, content.len(), 10),
            (encoding, content.len() + 1, 9),
            (
                Encoding {
                    compressed: false,
                    ..encoding
                },
                content.len(),
                9,
            ),
        ];
        for (encoding, len, id) in lies {
            assert!(decode_block(stored.clone(), encoding, len, id, Some(&keys)).is_err());
        }
        assert!(matches!(
            decode_block(stored, encoding, content.len(), 9, None),
            Err(CodecError::Locked)
        ));
    }

    #[test]
    fn the_dedup_hash_depends_on_the_key() {
        let a = dedup_hash(&[1; 32], b"same content");
        assert_eq!(a, dedup_hash(&[1; 32], b"same content"));
        assert_ne!(a, dedup_hash(&[2; 32], b"same content"));
        assert_ne!(a, dedup_hash(&[1; 32], b"other content"));
    }
}
