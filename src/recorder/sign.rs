//! Ed25519 keys for seal signatures, stored as one line of hex in a 0600 file.
//!
//! The writer signs the chain head each time it seals a segment; because each head covers every
//! earlier record through the hash chain, an auditor holding only the public key can check
//! offline that nothing up to the last seal was rewritten, even by someone able to recompute
//! hashes. Records after the last seal are chained but not yet signed: `verify` says how many.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::codec::{hex, unhex};

/// A seal-signing key.
pub type SealKey = SigningKey;
/// The public half, for `verify --pubkey`.
pub type SealPublicKey = VerifyingKey;

/// Loads a signing key (64 hex digits of seed).
pub fn load_signing_key(path: &Path) -> io::Result<SealKey> {
    let bytes = read_hex32(path)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Loads a public key (64 hex digits).
pub fn load_public_key(path: &Path) -> io::Result<SealPublicKey> {
    let bytes = read_hex32(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| {
        invalid(format!(
            "{}: not a valid Ed25519 public key",
            path.display()
        ))
    })
}

/// Makes a new key pair from the OS random source: writes `path` (secret, 0600) and
/// `path.pub` (public, 0644). Refuses to overwrite.
pub fn generate_key(path: &Path) -> io::Result<SealPublicKey> {
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    write_new(path, 0o600, &hex(key.as_bytes()))?;
    let public = key.verifying_key();
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    write_new(Path::new(&pub_path), 0o644, &hex(public.as_bytes()))?;
    Ok(public)
}

pub fn sign(key: &SealKey, message: &[u8]) -> String {
    hex(&key.sign(message).to_bytes())
}

/// Checks a hex signature; any malformed input is simply "not valid".
pub fn check(key: &SealPublicKey, message: &[u8], signature_hex: &str) -> bool {
    let Some(bytes) = unhex(signature_hex) else {
        return false;
    };
    let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&arr)).is_ok()
}

fn read_hex32(path: &Path) -> io::Result<[u8; 32]> {
    let text = fs::read_to_string(path)?;
    unhex(&text)
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| invalid(format!("{}: expected 64 hex digits", path.display())))
}

fn write_new(path: &Path, mode: u32, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    writeln!(f, "{text}")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
