//! `X-Line-Signature`: Base64 of HMAC-SHA256 over the raw body, keyed by the channel secret.
//! The comparison is the `hmac` crate's constant-time one, so a forger learns nothing from
//! how long a refusal took.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// True when `header` is the signature of `body` under `secret`.
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Ok(claimed) = STANDARD.decode(header.trim()) else { return false };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

/// The signature LINE would send (tests sign their webhooks with it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_only_with_its_secret_and_body() {
        let body = br#"{"destination":"U0","events":[]}"#;
        let sig = sign("secret", body);
        assert!(verify("secret", body, &sig));
        assert!(!verify("other", body, &sig));
        assert!(!verify("secret", b"{}", &sig));
        assert!(!verify("secret", body, "not base64 !"));
        assert!(!verify("secret", body, ""));
    }

    #[test]
    fn matches_an_independent_hmac() {
        // openssl dgst -sha256 -hmac key -binary <<< -n 'The quick brown fox jumps over the lazy dog' | base64
        assert_eq!(sign("key", b"The quick brown fox jumps over the lazy dog"), "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=");
    }
}
