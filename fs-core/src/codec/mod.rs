//! Pure functions over block bytes: checksums now; compression and encryption join here.

/// The 64-bit checksum (XXH3) stored with every block and superblock.
pub fn checksum64(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
