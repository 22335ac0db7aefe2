//! Database tokens: made here, kept encrypted at rest.
//!
//! The cluster keeps only a token's SHA-256 (its catalog's
//! `token_sha256`); the sidecar keeps the token itself encrypted with
//! AES-256-GCM under `ANYKV_TOKEN_KEY` (64 hex digits), so a retried
//! provisioning request gets the same `REDIS_URL` back and an admin can
//! reveal it, while a copy of the sidecar's database alone reveals
//! nothing. ring (already in the build, under rustls) provides the cipher
//! and the random numbers.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Errors handling tokens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("ANYKV_TOKEN_KEY must be 64 hex digits (32 bytes)")]
    BadKey,
    #[error("the system's random number generator failed")]
    Random,
    #[error(
        "a stored token does not decrypt with ANYKV_TOKEN_KEY (wrong key, or the row was altered)"
    )]
    Undecryptable,
}

/// A new token: 32 random bytes, hex (64 characters; the catalog takes
/// tokens of 16 bytes and up).
pub fn new_token() -> Result<String, TokenError> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| TokenError::Random)?;
    Ok(crate::hex::encode(&b))
}

/// The token's SHA-256 in hex, as the cluster's catalog takes it.
pub fn digest_hex(token: &str) -> String {
    crate::hex::encode(&Sha256::digest(token.as_bytes()))
}

/// Encrypts and decrypts tokens at rest.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// From `ANYKV_TOKEN_KEY`'s value.
    pub fn from_hex(key: &str) -> Result<Sealer, TokenError> {
        let raw = crate::hex::decode(key.trim())
            .filter(|k| k.len() == 32)
            .ok_or(TokenError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| TokenError::BadKey)?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `nonce || ciphertext+tag`, hex; the database's Fly id is bound in
    /// as associated data, so a sealed token moved to another row does
    /// not open.
    pub fn seal(&self, token: &str, row: &str) -> Result<String, TokenError> {
        let mut n = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut n)
            .map_err(|_| TokenError::Random)?;
        let mut data = token.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(row.as_bytes()),
                &mut data,
            )
            .map_err(|_| TokenError::Random)?;
        Ok(format!(
            "{}{}",
            crate::hex::encode(&n),
            crate::hex::encode(&data)
        ))
    }

    /// The token sealed for `row`.
    pub fn open(&self, sealed: &str, row: &str) -> Result<String, TokenError> {
        let raw = crate::hex::decode(sealed).ok_or(TokenError::Undecryptable)?;
        if raw.len() < NONCE_LEN {
            return Err(TokenError::Undecryptable);
        }
        let (n, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| TokenError::Undecryptable)?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(row.as_bytes()), &mut data)
            .map_err(|_| TokenError::Undecryptable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| TokenError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_row() {
        let s = Sealer::from_hex(KEY).unwrap();
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token().unwrap());
        let sealed = s.seal(&t, "ext_1").unwrap();
        assert!(!sealed.contains(&t));
        assert_eq!(s.open(&sealed, "ext_1"), Ok(t.clone()));
        assert_eq!(s.open(&sealed, "ext_2"), Err(TokenError::Undecryptable));
        let other = Sealer::from_hex(&KEY.replace("00", "ff")).unwrap();
        assert_eq!(other.open(&sealed, "ext_1"), Err(TokenError::Undecryptable));
        let mut flipped = sealed.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(s.open(&flipped, "ext_1"), Err(TokenError::Undecryptable));
        assert_eq!(s.open("zz", "ext_1"), Err(TokenError::Undecryptable));
    }

    #[test]
    fn keys_must_be_32_bytes_of_hex_and_digests_are_sha256() {
        assert!(Sealer::from_hex("00").is_err());
        assert!(Sealer::from_hex(&"g".repeat(64)).is_err());
        // SHA-256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            digest_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
