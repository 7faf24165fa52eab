//! The bearer token Heketi checks on every request: a JWT signed with HS256 and the user's key,
//! bound to one request by `qsh`, the SHA-256 of `METHOD&PATH`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Long enough for clock skew between us and Heketi, short enough to be useless if leaked.
const LIFETIME_SECONDS: u64 = 300;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
    exp: u64,
    qsh: String,
}

/// `qsh`: lowercase hex SHA-256 of the method and the path, without any query.
pub fn query_hash(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let digest = Sha256::digest(format!("{method}&{path}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token for one request, issued at `now` (seconds since the Unix epoch).
pub fn token(user: &str, key: &str, method: &str, path: &str, now: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = Claims {
        iss: user,
        iat: now,
        exp: now + LIFETIME_SECONDS,
        qsh: query_hash(method, path),
    };
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made independently with Python's hmac, hashlib and base64 modules.
    #[test]
    fn matches_an_independently_made_token() {
        assert_eq!(
            token("admin", "My Secret", "POST", "/volumes", 1_700_000_000),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhZG1pbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhw\
             IjoxNzAwMDAwMzAwLCJxc2giOiIzYTk4MzFhOTkwODkyNGUzZjc4ZmU5NDg1ODVmNDE4NDllOTI3MjQ1MjJm\
             NTE1M2NiOTFhZmY3ZjhlYTQ4ZWFjIn0.nax0Am-gjTj16KcLWGT66Mlf9ckIP5R3K_j-iZL_Vxc"
        );
    }

    #[test]
    fn the_query_is_not_hashed() {
        assert_eq!(
            query_hash("GET", "/volumes?x=1"),
            query_hash("GET", "/volumes")
        );
        assert_ne!(
            query_hash("GET", "/volumes"),
            query_hash("DELETE", "/volumes")
        );
    }
}
