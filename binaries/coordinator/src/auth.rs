//! Authentication, the server side: the coordinator compares the token a client presents as
//! `Authorization: Bearer <token>` with its own in constant time. The [`Token`] type and its
//! file live in `adora-client`.

use adora_client::Token;
use subtle::ConstantTimeEq;

/// Constant-time check of an `Authorization` header value against `token`.
pub(crate) fn verify_header(token: &Token, header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.as_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check() {
        let token = Token::new("abc").expect("non-empty");
        assert!(verify_header(&token, Some("Bearer abc")));
        assert!(!verify_header(&token, Some("Bearer abd")));
        assert!(!verify_header(&token, Some("abc")));
        assert!(!verify_header(&token, None));
        assert!(format!("{token:?}").contains("redacted"));
    }
}
