//! HTTP Basic authentication against a route's password list: the `Authorization` header
//! decoded, the password checked against the user's htpasswd hash in constant time, and
//! verified credentials remembered (as a digest, never the password) so a client sending the
//! same header on every request pays for one bcrypt, not one per request.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq;
use table::auth::{BasicAuth, PasswordHash};

/// Most verified credentials remembered at once (all routes together).
const REMEMBERED: usize = 1024;

/// Credentials verified recently, as digests of (password list, `Authorization` value).
#[derive(Debug, Default)]
pub(crate) struct Verified {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Verified {
    fn key(list: &BasicAuth, authorization: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&list.id.to_le_bytes());
        ctx.update(list.secret.as_bytes());
        ctx.update(&[0]);
        ctx.update(authorization);
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.inner.lock().is_ok_and(|r| r.set.contains(key))
    }

    fn insert(&self, key: [u8; 32]) {
        let Ok(mut r) = self.inner.lock() else {
            return;
        };
        if !r.set.insert(key) {
            return;
        }
        r.order.push_back(key);
        while r.order.len() > REMEMBERED {
            if let Some(old) = r.order.pop_front() {
                r.set.remove(&old);
            }
        }
    }
}

/// Whether `authorization` (the header's value, if any) names a user of `list` with the right
/// password.
pub(crate) fn check(list: &BasicAuth, authorization: Option<&[u8]>, verified: &Verified) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let key = Verified::key(list, value);
    if verified.contains(&key) {
        return true;
    }
    let Some((user, password)) = credentials(value) else {
        return false;
    };
    let Some(entry) = list.user(&user) else {
        return false;
    };
    let ok = verify(&entry.hash, &password);
    if ok {
        verified.insert(key);
    }
    ok
}

/// The user and password of a `Basic` `Authorization` value.
pub(crate) fn credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Whether `password` matches `hash`; comparisons take the same time whatever the bytes.
pub(crate) fn verify(hash: &PasswordHash, password: &[u8]) -> bool {
    match hash {
        PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        PasswordHash::Apr1 { salt, hash } => {
            let computed = apr1(password, salt.as_bytes());
            computed.as_bytes().ct_eq(hash.as_bytes()).into()
        }
        PasswordHash::Sha1(b64) => {
            let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password);
            let computed = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
            computed.as_bytes().ct_eq(b64.as_bytes()).into()
        }
    }
}

const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5 crypt of `password` with `salt`: the 22 characters after `$apr1$salt$`.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut last: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(last);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(last);
        } else {
            c.update(password);
        }
        last = c.finalize().into();
    }
    let mut out = String::with_capacity(22);
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(CRYPT64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            (u32::from(last[a]) << 16) | (u32::from(last[b]) << 8) | u32::from(last[c]),
            4,
        );
    }
    push(u32::from(last[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use table::auth::{basic_challenge, User};

    // Vectors made with `openssl passwd -apr1`, Python's `bcrypt` and `openssl dgst -sha1`.
    const APR1: &str = "$apr1$r31xyz12$onQKKDsjYs7dR4muzW5nu0";
    const BCRYPT_2Y: &str = "$2y$04$7cbdY/jY7pC4c2zlQV9hweV5vl3vVm1I15RyXi1qNo9tnK.E0Ea7W";
    const BCRYPT_2A: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

    fn hash(text: &str) -> PasswordHash {
        PasswordHash::parse(text).unwrap()
    }

    #[test]
    fn known_hashes_verify_and_wrong_passwords_do_not() {
        assert!(verify(&hash(APR1), b"secret"));
        assert!(!verify(&hash(APR1), b"secreT"));
        assert!(verify(&hash(BCRYPT_2Y), b"hunter2"));
        assert!(!verify(&hash(BCRYPT_2Y), b"hunter3"));
        assert!(verify(&hash(BCRYPT_2A), b"U*U"));
        assert!(verify(&hash(SHA), b"secret"));
        assert!(!verify(&hash(SHA), b""));
    }

    #[test]
    fn apr1_of_long_and_empty_passwords() {
        // openssl passwd -apr1 -salt abcdefgh 'a password longer than sixteen bytes'
        assert_eq!(
            apr1(b"a password longer than sixteen bytes", b"abcdefgh"),
            "KxnTlry9zkkkUhSc6GrVg/"
        );
        // openssl passwd -apr1 -salt s ''
        assert_eq!(apr1(b"", b"s"), "e2aCb9PLCjZ2t55SoAxXn.");
    }

    #[test]
    fn credentials_are_decoded_and_remembered() {
        assert_eq!(
            credentials(b"Basic YWxpY2U6c2VjcmV0"),
            Some((b"alice".to_vec(), b"secret".to_vec()))
        );
        assert_eq!(credentials(b"Bearer YWxpY2U6c2VjcmV0"), None);
        assert_eq!(credentials(b"Basic !!!"), None);
        let list = BasicAuth {
            realm: "r".into(),
            challenge: basic_challenge("r").unwrap(),
            secret: "ns/users".into(),
            users: vec![User {
                name: "alice".into(),
                hash: hash(APR1),
            }],
            id: 7,
        };
        let verified = Verified::default();
        assert!(check(&list, Some(b"Basic YWxpY2U6c2VjcmV0"), &verified));
        assert!(verified.contains(&Verified::key(&list, b"Basic YWxpY2U6c2VjcmV0")));
        assert!(!check(&list, Some(b"Basic YWxpY2U6c2VjcmVU"), &verified));
        assert!(!check(&list, None, &verified));
    }
}
