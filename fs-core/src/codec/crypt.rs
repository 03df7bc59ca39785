//! Encryption: the pool's master key, its passphrase-wrapped form in the superblocks, the keys
//! derived from it, and the nonces of block encryption.
//!
//! - A random 256-bit master key is made at format. It never reaches a device in the clear:
//!   each superblock holds it wrapped (AES-256-GCM) under a key derived from the passphrase or
//!   keyfile with Argon2id and a random salt ([`KeySlot`]). Changing the passphrase re-wraps it;
//!   no data is rewritten.
//! - From the master key, BLAKE3's key derivation makes independent keys ([`PoolKeys`]): one for
//!   data blocks (AES-256-GCM, authenticated), two for metadata pages (AES-256-XTS, as dm-crypt
//!   uses for sectors: redb rewrites pages in place and XTS needs no per-page nonce), and the
//!   key of the dedup hash.
//! - A GCM nonce must never repeat under one key. Block nonces are a 32-bit mount generation
//!   (counted in the metadata and committed before the first block of a mount is encrypted)
//!   followed by a 64-bit counter of that mount ([`NonceSequence`]), so no crash or remount can
//!   hand out a nonce twice. Copies and migrations move ciphertext as it is; they never
//!   encrypt again.

use std::sync::atomic::{AtomicU64, Ordering};

use aes::cipher::array::Array;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::Aes256;
use aes_gcm::aead::AeadInOut;
use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

use super::CodecError;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const SALT_LEN: usize = 32;
/// A wrapped master key: the key encrypted, then GCM's tag.
pub const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
/// The unit of metadata encryption (one redb page).
pub const PAGE_LEN: usize = 4096;

/// A block's GCM nonce.
pub type BlockNonce = [u8; NONCE_LEN];

/// Argon2id cost parameters, stored with the wrapped key so they can change per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, one lane: about half a second on a small server core, and far over
    /// OWASP's minimum for Argon2id (19 MiB, 2 passes).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    /// The cheapest parameters accepted; for tests, which derive keys many times.
    pub const TEST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// Refuses parameters outside what this build accepts: a damaged or hostile superblock
    /// must not make a mount allocate unbounded memory or spin for hours.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(8 * self.parallelism..=1 << 20).contains(&self.memory_kib) {
            return Err("key derivation memory out of range");
        }
        if !(1..=64).contains(&self.iterations) {
            return Err("key derivation passes out of range");
        }
        if !(1..=16).contains(&self.parallelism) {
            return Err("key derivation lanes out of range");
        }
        Ok(())
    }
}

/// The master key, wiped from memory when dropped.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CodecError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(key.as_mut()).map_err(|e| CodecError::Random(e.to_string()))?;
        Ok(Self(key))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// The master key as a superblock holds it: wrapped under a passphrase-derived key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    pub kdf: KdfParams,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_LEN],
}

/// The key that wraps the master key, derived from a passphrase (or keyfile bytes).
fn derive_wrapping_key(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CodecError> {
    kdf.validate().map_err(CodecError::BadKeySlot)?;
    let params = argon2::Params::new(
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|_| CodecError::BadKeySlot("key derivation parameters"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| CodecError::Kdf(e.to_string()))?;
    Ok(key)
}

impl KeySlot {
    /// Wraps `master` under `passphrase` with a fresh salt; the pool's UUID is bound in, so a
    /// slot copied to another pool does not open.
    pub fn seal(
        master: &MasterKey,
        passphrase: &[u8],
        kdf: KdfParams,
        pool_uuid: &[u8; 16],
    ) -> Result<Self, CodecError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut salt).map_err(|e| CodecError::Random(e.to_string()))?;
        getrandom::fill(&mut nonce).map_err(|e| CodecError::Random(e.to_string()))?;
        let kek = derive_wrapping_key(passphrase, &salt, kdf)?;
        let cipher = Aes256Gcm::new(&(*kek).into());
        let mut buf = master.0.to_vec();
        cipher
            .encrypt_in_place(&nonce.into(), pool_uuid, &mut buf)
            .map_err(|_| CodecError::Encrypt)?;
        let wrapped: [u8; WRAPPED_LEN] =
            buf.as_slice().try_into().map_err(|_| CodecError::Encrypt)?;
        Ok(Self {
            kdf,
            salt,
            nonce,
            wrapped,
        })
    }

    /// Unwraps the master key; [`CodecError::WrongKey`] when the passphrase (or keyfile) is not
    /// the one the slot was sealed with.
    pub fn open(&self, passphrase: &[u8], pool_uuid: &[u8; 16]) -> Result<MasterKey, CodecError> {
        let kek = derive_wrapping_key(passphrase, &self.salt, self.kdf)?;
        let cipher = Aes256Gcm::new(&(*kek).into());
        let mut buf = Zeroizing::new(self.wrapped.to_vec());
        cipher
            .decrypt_in_place(&self.nonce.into(), pool_uuid, &mut *buf)
            .map_err(|_| CodecError::WrongKey)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf);
        Ok(MasterKey(key))
    }
}

/// The working keys of an unlocked pool, derived from its master key.
pub struct PoolKeys {
    blocks: Aes256Gcm,
    /// XTS's data key and tweak key (IEEE 1619 AES-256-XTS).
    pages: Aes256,
    page_tweaks: Aes256,
    dedup: Zeroizing<[u8; KEY_LEN]>,
}

/// AES blocks in a metadata page.
const PAGE_BLOCKS: usize = PAGE_LEN / 16;

/// Multiplies an XTS tweak by the primitive element α of GF(2^128) (little-endian convention
/// of IEEE 1619).
fn next_tweak(tweak: u128) -> u128 {
    (tweak << 1) ^ ((tweak >> 127) * 0x87)
}

impl std::fmt::Debug for PoolKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolKeys(..)")
    }
}

fn derive(context: &str, master: &MasterKey) -> Zeroizing<[u8; KEY_LEN]> {
    Zeroizing::new(blake3::derive_key(context, master.0.as_ref()))
}

impl PoolKeys {
    pub fn derive(master: &MasterKey) -> Self {
        let block_key = derive("AegisFS 2026-11 data block key (AES-256-GCM)", master);
        let page_key = derive(
            "AegisFS 2026-11 metadata page key (AES-256-XTS, data)",
            master,
        );
        let tweak_key = derive(
            "AegisFS 2026-11 metadata page key (AES-256-XTS, tweak)",
            master,
        );
        Self {
            blocks: Aes256Gcm::new(&(*block_key).into()),
            pages: Aes256::new(&(*page_key).into()),
            page_tweaks: Aes256::new(&(*tweak_key).into()),
            dedup: derive("AegisFS 2026-11 dedup hash key (BLAKE3 keyed)", master),
        }
    }

    /// Encrypts a block's bytes in place and appends the tag (the buffer grows by
    /// [`TAG_LEN`]). `aad` binds the block's identity, so bytes moved to another block fail.
    pub fn seal_block(
        &self,
        nonce: &BlockNonce,
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.blocks
            .encrypt_in_place(&(*nonce).into(), aad, buf)
            .map_err(|_| CodecError::Encrypt)
    }

    /// Checks the tag and decrypts in place (the buffer shrinks by [`TAG_LEN`]).
    pub fn open_block(
        &self,
        nonce: &BlockNonce,
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.blocks
            .decrypt_in_place(&(*nonce).into(), aad, buf)
            .map_err(|_| CodecError::Authentication)
    }

    /// Encrypts whole metadata pages in place (AES-256-XTS, the page index as the tweak);
    /// `first_page` is the index of the first one.
    pub fn encrypt_pages(&self, first_page: u64, buf: &mut [u8]) {
        self.xts_pages(first_page, buf, |blocks| self.pages.encrypt_blocks(blocks));
    }

    /// Decrypts whole metadata pages in place.
    pub fn decrypt_pages(&self, first_page: u64, buf: &mut [u8]) {
        self.xts_pages(first_page, buf, |blocks| self.pages.decrypt_blocks(blocks));
    }

    /// XTS over whole pages: each 16-byte block is masked with its tweak before and after
    /// `cipher` runs on the whole page at once (so AES pipelines many blocks, where a
    /// block-at-a-time XTS spends 12 µs a page).
    fn xts_pages(&self, first_page: u64, buf: &mut [u8], cipher: impl Fn(&mut [aes::Block])) {
        debug_assert!(buf.len().is_multiple_of(PAGE_LEN));
        let mut tweaks = [0u128; PAGE_BLOCKS];
        for (page, bytes) in (u128::from(first_page)..).zip(buf.chunks_exact_mut(PAGE_LEN)) {
            let mut tweak = Array::from(page.to_le_bytes());
            self.page_tweaks.encrypt_block(&mut tweak);
            let mut tweak = u128::from_le_bytes(tweak.into());
            for slot in &mut tweaks {
                *slot = tweak;
                tweak = next_tweak(tweak);
            }
            let (blocks, _) = Array::slice_as_chunks_mut(bytes);
            let mask = |blocks: &mut [aes::Block]| {
                for (block, tweak) in blocks.iter_mut().zip(&tweaks) {
                    let masked = u128::from_le_bytes((*block).into()) ^ tweak;
                    *block = Array::from(masked.to_le_bytes());
                }
            };
            mask(blocks);
            cipher(blocks);
            mask(blocks);
        }
    }

    /// The key of the dedup hash.
    pub fn dedup_key(&self) -> &[u8; KEY_LEN] {
        &self.dedup
    }
}

/// Hands out block nonces: the mount's generation, then a counter. See the module docs.
#[derive(Debug)]
pub struct NonceSequence {
    generation: u32,
    next: AtomicU64,
}

impl NonceSequence {
    /// Nonces of mount `generation`, which must never have been used before (the caller
    /// commits it durably before the first nonce is used).
    pub fn new(generation: u32) -> Self {
        Self {
            generation,
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> BlockNonce {
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.generation.to_le_bytes());
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: [u8; 16] = [5; 16];

    #[test]
    fn a_slot_opens_with_its_passphrase_only() {
        let master = MasterKey::generate().expect("key");
        let slot = KeySlot::seal(&master, b"correct horse", KdfParams::TEST, &POOL).expect("seal");
        let opened = slot.open(b"correct horse", &POOL).expect("opens");
        assert_eq!(*opened.0, *master.0);
        assert!(matches!(
            slot.open(b"correct horsf", &POOL),
            Err(CodecError::WrongKey)
        ));
        assert!(matches!(
            slot.open(b"correct horse", &[6; 16]),
            Err(CodecError::WrongKey)
        ));
        let mut damaged = slot;
        damaged.wrapped[3] ^= 1;
        assert!(matches!(
            damaged.open(b"correct horse", &POOL),
            Err(CodecError::WrongKey)
        ));
    }

    #[test]
    fn sealing_twice_gives_different_slots() {
        let master = MasterKey::generate().expect("key");
        let a = KeySlot::seal(&master, b"pw", KdfParams::TEST, &POOL).expect("seal");
        let b = KeySlot::seal(&master, b"pw", KdfParams::TEST, &POOL).expect("seal");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.wrapped, b.wrapped);
    }

    #[test]
    fn hostile_kdf_parameters_are_refused_before_any_work() {
        let master = MasterKey::generate().expect("key");
        let mut slot = KeySlot::seal(&master, b"pw", KdfParams::TEST, &POOL).expect("seal");
        for kdf in [
            KdfParams {
                memory_kib: u32::MAX,
                ..KdfParams::TEST
            },
            KdfParams {
                iterations: 1_000_000,
                ..KdfParams::TEST
            },
            KdfParams {
                parallelism: 0,
                ..KdfParams::TEST
            },
        ] {
            slot.kdf = kdf;
            assert!(matches!(
                slot.open(b"pw", &POOL),
                Err(CodecError::BadKeySlot(_))
            ));
        }
    }

    #[test]
    fn blocks_authenticate_their_bytes_and_identity() {
        let keys = PoolKeys::derive(&MasterKey::generate().expect("key"));
        let nonces = NonceSequence::new(7);
        let nonce = nonces.next();
        let plain = b"attack at dawn".to_vec();
        let mut buf = plain.clone();
        keys.seal_block(&nonce, b"block 1", &mut buf).expect("seal");
        assert_eq!(buf.len(), plain.len() + TAG_LEN);
        assert!(!buf.windows(plain.len()).any(|w| w == plain.as_slice()));
        let mut copy = buf.clone();
        keys.open_block(&nonce, b"block 1", &mut copy)
            .expect("opens");
        assert_eq!(copy, plain);
        let mut wrong_id = buf.clone();
        assert!(keys.open_block(&nonce, b"block 2", &mut wrong_id).is_err());
        let mut flipped = buf.clone();
        flipped[0] ^= 1;
        assert!(keys.open_block(&nonce, b"block 1", &mut flipped).is_err());
    }

    #[test]
    fn nonces_never_repeat_within_or_across_generations() {
        let first = NonceSequence::new(1);
        let second = NonceSequence::new(2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(first.next()));
            assert!(seen.insert(second.next()));
        }
    }

    #[test]
    fn pages_are_standard_aes_256_xts() {
        use aes::cipher::consts::U32;
        // The xts-mode crate (one block at a time) as the reference, with the same keys.
        let master = MasterKey::generate().expect("key");
        let keys = PoolKeys::derive(&master);
        let page_key = derive(
            "AegisFS 2026-11 metadata page key (AES-256-XTS, data)",
            &master,
        );
        let tweak_key = derive(
            "AegisFS 2026-11 metadata page key (AES-256-XTS, tweak)",
            &master,
        );
        let reference = xts_mode::Xts128::new(
            Aes256::new(&Array::<u8, U32>::from(*page_key)),
            Aes256::new(&Array::<u8, U32>::from(*tweak_key)),
        );
        let mut plain = vec![0u8; 3 * PAGE_LEN];
        getrandom::fill(&mut plain).expect("random");
        for first in [0u64, 1, 77, u64::MAX - 2] {
            let mut ours = plain.clone();
            keys.encrypt_pages(first, &mut ours);
            let mut theirs = plain.clone();
            reference.encrypt_area(
                &mut theirs,
                PAGE_LEN,
                u128::from(first),
                xts_mode::get_tweak_default,
            );
            assert_eq!(ours, theirs, "page {first}");
            keys.decrypt_pages(first, &mut ours);
            assert_eq!(ours, plain);
        }
    }

    #[test]
    fn pages_round_trip_and_depend_on_their_index() {
        let keys = PoolKeys::derive(&MasterKey::generate().expect("key"));
        let plain = vec![0x42u8; 2 * PAGE_LEN];
        let mut buf = plain.clone();
        keys.encrypt_pages(10, &mut buf);
        assert_ne!(
            buf[..PAGE_LEN],
            buf[PAGE_LEN..],
            "same bytes at two indices"
        );
        let mut single = plain[..PAGE_LEN].to_vec();
        keys.encrypt_pages(11, &mut single);
        assert_eq!(single, buf[PAGE_LEN..], "a page encrypts alone as in a run");
        keys.decrypt_pages(10, &mut buf);
        assert_eq!(buf, plain);
    }
}
