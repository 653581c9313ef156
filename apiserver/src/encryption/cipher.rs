//! The ciphers, in upstream's stored format: `k8s:enc:<cipher>:v1:<key name>:` followed by, for
//! aescbc, a random 16-byte IV and the PKCS#7-padded AES-CBC ciphertext; for aesgcm, a random
//! 12-byte nonce and the AES-GCM ciphertext with its tag, the object's store key as additional
//! data (a value moved to another key does not decrypt).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};

use super::EncryptionError;

fn random<const N: usize>() -> Result<[u8; N], EncryptionError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| EncryptionError::Crypto("no random bytes".into()))?;
    Ok(b)
}

macro_rules! cbc_with {
    ($key:expr, $f:ident, $($arg:expr),*) => {
        match $key.len() {
            16 => $f::<aes::Aes128>($key, $($arg),*),
            24 => $f::<aes::Aes192>($key, $($arg),*),
            _ => $f::<aes::Aes256>($key, $($arg),*),
        }
    };
}

fn cbc_seal<C: aes::cipher::BlockCipher + aes::cipher::BlockEncryptMut + aes::cipher::KeyInit>(key: &[u8], iv: &[u8; 16], plain: &[u8]) -> Option<Vec<u8>> {
    Some(cbc::Encryptor::<C>::new_from_slices(key, iv).ok()?.encrypt_padded_vec_mut::<Pkcs7>(plain))
}

fn cbc_open<C: aes::cipher::BlockCipher + aes::cipher::BlockDecryptMut + aes::cipher::KeyInit>(key: &[u8], iv: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?.decrypt_padded_vec_mut::<Pkcs7>(sealed).ok()
}

/// AES-CBC: IV then ciphertext.
pub fn aescbc_seal(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    let iv = random::<16>()?;
    let mut out = iv.to_vec();
    out.extend(cbc_with!(key, cbc_seal, &iv, plain).ok_or_else(|| EncryptionError::Crypto("bad aescbc key".into()))?);
    Ok(out)
}

pub fn aescbc_open(key: &[u8], data: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    if data.len() < 32 || !data.len().is_multiple_of(16) {
        return Err(EncryptionError::Crypto("the data is not an AES-CBC ciphertext".into()));
    }
    let (iv, sealed) = data.split_at(16);
    cbc_with!(key, cbc_open, iv, sealed).ok_or_else(|| EncryptionError::Crypto("invalid padding on input".into()))
}

fn gcm_key(key: &[u8]) -> Result<aead::LessSafeKey, EncryptionError> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => return Err(EncryptionError::Crypto(format!("aesgcm takes 16- or 32-byte keys here, not {n}"))),
    };
    aead::UnboundKey::new(alg, key).map(aead::LessSafeKey::new).map_err(|_| EncryptionError::Crypto("bad aesgcm key".into()))
}

/// AES-GCM: nonce then ciphertext and tag, `context` authenticated.
pub fn aesgcm_seal(key: &[u8], context: &[u8], plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    let nonce = random::<12>()?;
    let mut sealed = plain.to_vec();
    gcm_key(key)?
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(context), &mut sealed)
        .map_err(|_| EncryptionError::Crypto("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

pub fn aesgcm_open(key: &[u8], context: &[u8], data: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    if data.len() < 12 + 16 {
        return Err(EncryptionError::Crypto("the data is not an AES-GCM ciphertext".into()));
    }
    let (nonce, sealed) = data.split_at(12);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| EncryptionError::Crypto("bad nonce".into()))?;
    let mut buf = sealed.to_vec();
    let plain = gcm_key(key)?
        .open_in_place(nonce, aead::Aad::from(context), &mut buf)
        .map_err(|_| EncryptionError::Crypto("cipher: message authentication failed".into()))?;
    Ok(plain.to_vec())
}
