//! Agent identity: HS256 JWTs with `sub` = customer_id and `bid`, signed with the configured
//! agent secret. Minted by `switchboard token` for development, by the company's own login
//! system in production.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub bid: String,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no agent secret is configured")]
    NoSecret,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token is for {sub:?} of bot {bid:?}")]
    Mismatch { sub: String, bid: String },
}

/// Signs a token valid for `ttl_secs`.
pub fn mint(secret: &str, bid: &str, agent: &str, ttl_secs: u64) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::NoSecret);
    }
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + ttl_secs;
    let claims = Claims { sub: agent.into(), bid: bid.into(), exp };
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

/// Checks signature, expiry and that the token names this agent of this bot.
pub fn verify(secret: &str, token: &str, bid: &str, agent: &str) -> Result<Claims, AuthError> {
    let claims = verify_any_bot(secret, token, agent)?;
    if claims.bid != bid {
        return Err(AuthError::Mismatch { sub: claims.sub, bid: claims.bid });
    }
    Ok(claims)
}

/// Checks signature, expiry and that the token names this agent; the bot is the token's own
/// (goim clients name their agent, and the token says which bot it belongs to).
pub fn verify_any_bot(secret: &str, token: &str, agent: &str) -> Result<Claims, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::NoSecret);
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    // No grace after `exp` (the library allows 60 s): an expired token is refused at login as
    // it is at every later action and by the expiry timer.
    v.leeway = 0;
    let data = decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)?;
    if data.claims.sub != agent {
        return Err(AuthError::Mismatch { sub: data.claims.sub, bid: data.claims.bid });
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let t = mint("s", "1", "a1", 60).expect("mint");
        assert!(verify("s", &t, "1", "a1").is_ok());
        assert!(matches!(verify("s", &t, "2", "a1"), Err(AuthError::Mismatch { .. })));
        assert!(verify("other", &t, "1", "a1").is_err());
        assert!(verify("", &t, "1", "a1").is_err());
        assert!(verify("s", "garbage", "1", "a1").is_err());
    }
}
