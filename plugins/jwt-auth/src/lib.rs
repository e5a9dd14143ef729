//! jwt-auth: lets through only requests with a valid `Authorization: Bearer <JWT>`, signed
//! with HS256 or RS256 by a configured key, and answers the others 401 in
//! `on_request_headers`. Verified claims can be copied to request headers for the upstream.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use wasmgate_sdk::{Action, LocalResponse, Plugin, Request, clock, log};

/// The smallest RSA modulus accepted, in bytes (2048 bits): shorter keys are within reach of
/// factoring and are refused at start.
const MIN_RSA_BYTES: usize = 256;

/// A token's claims, by name.
type Claims = Map<String, Value>;

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The shared secret of HS256 tokens (its UTF-8 bytes).
    #[serde(default)]
    hs256_secret: Option<String>,
    /// The public key of RS256 tokens, PEM: `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1).
    #[serde(default)]
    rs256_public_key: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    leeway_s: u64,
    /// The `iss` tokens must have, if set.
    #[serde(default)]
    issuer: Option<String>,
    /// A value the token's `aud` (a string or a list) must hold, if set.
    #[serde(default)]
    audience: Option<String>,
    /// Claim name → request header set to its value.
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    /// Whether the upstream still gets the `Authorization` header.
    #[serde(default = "default_true")]
    forward_token: bool,
}

fn default_leeway() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

/// What a token is checked against, apart from its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    leeway_s: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

/// The keys tokens may be signed with; at least one is set. No `Debug`: it holds a secret.
struct Keys {
    /// The HMAC secret.
    hs256: Option<Vec<u8>>,
    rs256: Option<VerifyingKey<Sha256>>,
}

/// Why a request is refused; each reason is told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    MissingToken,
    Malformed,
    UnsupportedAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl Reject {
    fn reason(self) -> &'static str {
        match self {
            Reject::MissingToken => "missing bearer token",
            Reject::Malformed => "malformed token",
            Reject::UnsupportedAlgorithm => "unsupported algorithm",
            Reject::BadSignature => "bad signature",
            Reject::Expired => "token expired",
            Reject::NotYetValid => "token not yet valid",
            Reject::WrongIssuer => "wrong issuer",
            Reject::WrongAudience => "wrong audience",
        }
    }
}

struct JwtAuth {
    keys: Keys,
    policy: Policy,
    /// (claim, lowercased header name).
    claims_to_headers: Vec<(String, String)>,
    forward_token: bool,
}

#[wasmgate_sdk::plugin]
impl Plugin for JwtAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let hs256 = match config.hs256_secret {
            Some(secret) if secret.is_empty() => return Err("`hs256_secret` must not be empty".to_owned()),
            Some(secret) => Some(secret.into_bytes()),
            None => None,
        };
        let rs256 = config.rs256_public_key.as_deref().map(rs256_key).transpose()?;
        if hs256.is_none() && rs256.is_none() {
            return Err("no key: set `hs256_secret` or `rs256_public_key` (or both)".to_owned());
        }
        let mut claims_to_headers = Vec::with_capacity(config.claims_to_headers.len());
        for (claim, header) in config.claims_to_headers {
            if header.is_empty() || !header.bytes().all(is_token_char) {
                return Err(format!(
                    "`claims_to_headers`: {header:?} (for claim {claim:?}) is not a header name (an RFC 9110 token)"
                ));
            }
            claims_to_headers.push((claim, header.to_ascii_lowercase()));
        }
        Ok(JwtAuth {
            keys: Keys { hs256, rs256 },
            policy: Policy { leeway_s: config.leeway_s, issuer: config.issuer, audience: config.audience },
            claims_to_headers,
            forward_token: config.forward_token,
        })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let authorization = req.header("authorization");
        let verified = bearer_token(authorization.as_deref())
            .and_then(|token| verify(token, &self.keys, &self.policy, clock::wall_ms()));
        let claims = match verified {
            Ok(claims) => claims,
            Err(reject) => return Action::Respond(unauthorized(reject)),
        };
        for (header, value) in claim_headers(&claims, &self.claims_to_headers) {
            set_or_remove(req, header, value.as_deref());
        }
        if !self.forward_token
            && let Err(error) = req.remove_header("authorization")
        {
            log::warn!("authorization header not removed: {error}");
        }
        Action::Continue
    }
}

/// The RS256 key from its PEM, checked now so that a bad key stops the gateway at start
/// instead of failing every request.
fn rs256_key(pem: &str) -> Result<VerifyingKey<Sha256>, String> {
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        return Err("`rs256_public_key` holds a private key: give the public key only".to_owned());
    }
    let key = if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        rsa::PublicKey::from_public_key_pem(pem).map_err(|error| error.to_string())
    } else if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(pem).map_err(|error| error.to_string())
    } else {
        return Err("`rs256_public_key` is not a PEM `PUBLIC KEY` or `RSA PUBLIC KEY`".to_owned());
    };
    let key = key.map_err(|error| format!("`rs256_public_key` is not a usable RSA public key: {error}"))?;
    if key.size() < MIN_RSA_BYTES {
        return Err(format!(
            "`rs256_public_key` is a {}-bit key: at least 2048 bits are required",
            key.size() * 8
        ));
    }
    Ok(VerifyingKey::new(key))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(authorization: Option<&str>) -> Result<&str, Reject> {
    let value = authorization.ok_or(Reject::MissingToken)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(Reject::MissingToken)?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Reject::MissingToken);
    }
    Ok(token)
}

/// Verifies `token` at `now_ms` (Unix milliseconds): the signature with the key of the
/// token's algorithm, then the time, issuer and audience claims. Returns its claims.
fn verify(token: &str, keys: &Keys, policy: &Policy, now_ms: u64) -> Result<Claims, Reject> {
    // The signed message is the encoded header and payload, as sent.
    let (message, signature) = token.rsplit_once('.').ok_or(Reject::Malformed)?;
    let (header, payload) = message.split_once('.').ok_or(Reject::Malformed)?;
    if payload.contains('.') {
        return Err(Reject::Malformed);
    }
    let signature = decode_part(signature)?;
    // The algorithm is read first, and only a configured key's is accepted: `none`, or an
    // RS256 public key used as an HMAC secret, never get as far as a signature check.
    match (read_header(header)?.alg.as_str(), keys) {
        ("HS256", Keys { hs256: Some(secret), .. }) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Reject::BadSignature)?;
            mac.update(message.as_bytes());
            // Constant-time comparison: the time taken tells nothing about the right MAC.
            mac.verify_slice(&signature).map_err(|_| Reject::BadSignature)?;
        }
        ("RS256", Keys { rs256: Some(key), .. }) => {
            let signature = Signature::try_from(signature.as_slice()).map_err(|_| Reject::BadSignature)?;
            key.verify(message.as_bytes(), &signature).map_err(|_| Reject::BadSignature)?;
        }
        _ => return Err(Reject::UnsupportedAlgorithm),
    }
    let claims: Claims = serde_json::from_slice(&decode_part(payload)?).map_err(|_| Reject::Malformed)?;
    check_claims(&claims, policy, now_ms)?;
    Ok(claims)
}

/// The JOSE header fields this plugin reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Extensions the token says must be understood (RFC 7515 4.1.11); none are.
    #[serde(default)]
    crit: Option<Value>,
}

/// The token's header, refused if it is not JSON or names critical extensions.
fn read_header(header: &str) -> Result<Header, Reject> {
    let header: Header = serde_json::from_slice(&decode_part(header)?).map_err(|_| Reject::Malformed)?;
    if header.crit.is_some() {
        return Err(Reject::Malformed);
    }
    Ok(header)
}

/// One base64url part of a token (no padding, canonical: one token, one encoding).
fn decode_part(part: &str) -> Result<Vec<u8>, Reject> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Reject::Malformed)
}

/// Checks `exp`, `nbf` (when present), `iss` and `aud` (when configured) at `now_ms`.
fn check_claims(claims: &Claims, policy: &Policy, now_ms: u64) -> Result<(), Reject> {
    let now_s = now_ms as f64 / 1000.0;
    let leeway_s = policy.leeway_s as f64;
    // NumericDate (RFC 7519): seconds since the epoch, possibly fractional.
    let numeric_date = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(Reject::Malformed),
    };
    // RFC 7519 4.1.4: the token must not be accepted on or after `exp`.
    if numeric_date("exp")?.is_some_and(|exp| now_s >= exp + leeway_s) {
        return Err(Reject::Expired);
    }
    if numeric_date("nbf")?.is_some_and(|nbf| now_s + leeway_s < nbf) {
        return Err(Reject::NotYetValid);
    }
    if let Some(issuer) = &policy.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(Reject::WrongIssuer);
    }
    if let Some(audience) = &policy.audience {
        let holds = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience.as_str())),
            _ => false,
        };
        if !holds {
            return Err(Reject::WrongAudience);
        }
    }
    Ok(())
}

/// Each configured header with the value of its claim: strings as they are, numbers in
/// decimal, other values as JSON; `None` if the token lacks the claim.
fn claim_headers<'a>(claims: &Claims, mapping: &'a [(String, String)]) -> Vec<(&'a str, Option<String>)> {
    mapping
        .iter()
        .map(|(claim, header)| {
            let value = claims.get(claim).map(|value| match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
            (header.as_str(), value)
        })
        .collect()
}

/// Sets `header` to `value`, or removes it: a client must not be able to send a claim header
/// itself and have it pass for a verified one, so a missing or refused value leaves none.
fn set_or_remove(req: &mut Request, header: &str, value: Option<&str>) {
    if let Some(value) = value {
        match req.set_header(header, value) {
            Ok(()) => return,
            Err(error) => log::warn!("claim header {header:?} not set: {error}"),
        }
    }
    if let Err(error) = req.remove_header(header) {
        log::warn!("claim header {header:?} not removed: {error}");
    }
}

/// The 401 answer for `reject` (RFC 6750 section 3).
fn unauthorized(reject: Reject) -> LocalResponse {
    let reason = reject.reason();
    LocalResponse::new(401)
        .header("www-authenticate", format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""))
        .header("content-type", "text/plain; charset=utf-8")
        .body(reason)
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`. Tokens are signed here
    //! with the same primitives; the RSA key pair is generated once per run. An RFC 7515 test
    //! vector checks the HS256 path against a token signed elsewhere.

    use std::sync::OnceLock;

    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";
    /// 2026-01-01T00:00:00Z.
    const NOW_S: u64 = 1_767_225_600;
    const NOW_MS: u64 = NOW_S * 1000;

    /// The test RSA key: its signing key, and its public key as SPKI and PKCS#1 PEM, and its
    /// private key as PKCS#8 PEM.
    struct RsaKey {
        signing: SigningKey<Sha256>,
        spki_pem: String,
        pkcs1_pem: String,
        private_pem: String,
    }

    fn rsa_key() -> &'static RsaKey {
        static KEY: OnceLock<RsaKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation");
            let public = private.to_public_key();
            RsaKey {
                spki_pem: public.to_public_key_pem(LineEnding::LF).expect("SPKI PEM"),
                pkcs1_pem: public.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM"),
                private_pem: private.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM").as_str().to_owned(),
                signing: SigningKey::new(private),
            }
        })
    }

    fn config() -> Config {
        Config {
            hs256_secret: None,
            rs256_public_key: None,
            leeway_s: default_leeway(),
            issuer: None,
            audience: None,
            claims_to_headers: BTreeMap::new(),
            forward_token: true,
        }
    }

    fn plugin(hs256: bool, rs256: bool) -> JwtAuth {
        JwtAuth::new(Config {
            hs256_secret: hs256.then(|| SECRET.to_owned()),
            rs256_public_key: rs256.then(|| rsa_key().spki_pem.clone()),
            ..config()
        })
        .expect("valid config")
    }

    /// A token with `header` and `claims`, signed by `sign` over the encoded parts.
    fn token(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let signature = URL_SAFE_NO_PAD.encode(sign(message.as_bytes()));
        format!("{message}.{signature}")
    }

    fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    fn hs256(claims: &Value, secret: &str) -> String {
        token(&json!({"alg": "HS256", "typ": "JWT"}), claims, |message| {
            hmac_sha256(secret.as_bytes(), message)
        })
    }

    fn rs256(claims: &Value) -> String {
        token(&json!({"alg": "RS256", "typ": "JWT"}), claims, |message| {
            rsa_key().signing.sign(message).to_vec()
        })
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn check(plugin: &JwtAuth, token: &str) -> Result<Claims, Reject> {
        verify(token, &plugin.keys, &plugin.policy, NOW_MS)
    }

    #[test]
    fn accepts_valid_hs256_and_rs256_tokens() {
        let both = plugin(true, true);
        let claims = json!({"sub": "alice", "exp": NOW_S + 60});
        let accepted = check(&both, &hs256(&claims, SECRET)).expect("HS256 token");
        assert_eq!(accepted.get("sub"), Some(&json!("alice")));
        assert!(check(&both, &rs256(&claims)).is_ok());
    }

    #[test]
    fn verifies_the_rfc_7515_hs256_example() {
        // RFC 7515 appendix A.1: a token signed elsewhere, with a binary key. It expired in
        // 2011, so it is checked as of a minute before.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .expect("key");
        let keys = Keys { hs256: Some(key), rs256: None };
        let policy = Policy { leeway_s: 0, issuer: Some("joe".to_owned()), audience: None };
        let token = concat!(
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
            ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
            ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        let claims = verify(token, &keys, &policy, 1_300_819_320_000).expect("RFC example");
        assert_eq!(claims.get("http://example.com/is_root"), Some(&json!(true)));
        assert_eq!(verify(token, &keys, &policy, 1_300_819_380_000).err(), Some(Reject::Expired));
        // One bit of the signature flipped.
        let flipped = token.replace("4CVP", "4CVQ");
        assert_eq!(verify(&flipped, &keys, &policy, 1_300_819_320_000).err(), Some(Reject::BadSignature));
    }

    #[test]
    fn accepts_both_rsa_public_key_pem_forms() {
        let token = rs256(&json!({"sub": "alice"}));
        for pem in [&rsa_key().spki_pem, &rsa_key().pkcs1_pem] {
            let plugin =
                JwtAuth::new(Config { rs256_public_key: Some(pem.clone()), ..config() }).expect("key");
            assert!(check(&plugin, &token).is_ok(), "{pem}");
        }
    }

    #[test]
    fn refuses_a_wrong_key_or_a_tampered_token() {
        let plugin = plugin(true, true);
        let claims = json!({"sub": "alice"});
        assert_eq!(check(&plugin, &hs256(&claims, "another-secret")).err(), Some(Reject::BadSignature));
        // The payload swapped for another, the signature kept.
        let token = rs256(&claims);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64(&json!({"sub": "admin"})), parts[2]);
        assert_eq!(check(&plugin, &forged).err(), Some(Reject::BadSignature));
    }

    #[test]
    fn refuses_alg_none_and_algorithms_without_a_key() {
        let claims = b64(&json!({"sub": "admin"}));
        for alg in ["none", "None", "NONE"] {
            let token = format!("{}.{claims}.", b64(&json!({"alg": alg, "typ": "JWT"})));
            assert_eq!(check(&plugin(true, true), &token).err(), Some(Reject::UnsupportedAlgorithm), "{alg}");
        }
        let hs384 = format!("{}.{claims}.c2ln", b64(&json!({"alg": "HS384"})));
        assert_eq!(check(&plugin(true, true), &hs384).err(), Some(Reject::UnsupportedAlgorithm));
        // Algorithms whose key is not configured, including the RS256-to-HS256 confusion: the
        // public key (which anyone has) used as an HMAC secret.
        let token = rs256(&json!({"sub": "alice"}));
        assert_eq!(check(&plugin(true, false), &token).err(), Some(Reject::UnsupportedAlgorithm));
        let confused = hs256(&json!({"sub": "admin"}), &rsa_key().spki_pem);
        assert_eq!(check(&plugin(false, true), &confused).err(), Some(Reject::UnsupportedAlgorithm));
    }

    #[test]
    fn refuses_malformed_tokens() {
        let plugin = plugin(true, false);
        let good = hs256(&json!({"sub": "alice"}), SECRET);
        let parts: Vec<&str> = good.split('.').collect();
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.sig",
            &format!("{}.{}", parts[0], parts[1]),
            &format!("{}.{}.{}.x", parts[0], parts[1], parts[2]),
            // No `alg`.
            &format!("{}.e30.c2ln", b64(&json!({"typ": "JWT"}))),
        ] {
            assert_eq!(check(&plugin, token).err(), Some(Reject::Malformed), "{token:?}");
        }
        // Claims that are not an object, properly signed.
        let array = hs256(&json!([1, 2]), SECRET);
        assert_eq!(check(&plugin, &array).err(), Some(Reject::Malformed));
        // Critical extensions, which this plugin does not understand (RFC 7515 4.1.11).
        let crit = token(&json!({"alg": "HS256", "crit": ["b64"], "b64": false}), &json!({}), |message| {
            hmac_sha256(SECRET.as_bytes(), message)
        });
        assert_eq!(check(&plugin, &crit).err(), Some(Reject::Malformed));
        // Padding is not base64url as JWTs use it.
        assert_eq!(check(&plugin, &format!("{good}=")).err(), Some(Reject::Malformed));
        // A date that is not a number.
        let text_exp = hs256(&json!({"exp": "tomorrow"}), SECRET);
        assert_eq!(check(&plugin, &text_exp).err(), Some(Reject::Malformed));
    }

    #[test]
    fn checks_exp_and_nbf_with_leeway() {
        let plugin = plugin(true, false);
        let at = |claims: Value| check(&plugin, &hs256(&claims, SECRET)).err();
        assert_eq!(at(json!({"exp": NOW_S - 31})), Some(Reject::Expired));
        assert_eq!(at(json!({"exp": NOW_S - 30})), Some(Reject::Expired));
        assert_eq!(at(json!({"exp": NOW_S - 29})), None);
        assert_eq!(at(json!({"exp": NOW_S as f64 - 29.5})), None);
        assert_eq!(at(json!({"nbf": NOW_S + 31})), Some(Reject::NotYetValid));
        assert_eq!(at(json!({"nbf": NOW_S + 30})), None);
        assert_eq!(at(json!({})), None);

        let strict = JwtAuth::new(Config { hs256_secret: Some(SECRET.to_owned()), leeway_s: 0, ..config() })
            .expect("valid config");
        let token = hs256(&json!({"exp": NOW_S}), SECRET);
        assert_eq!(check(&strict, &token).err(), Some(Reject::Expired));
        assert_eq!(verify(&token, &strict.keys, &strict.policy, NOW_MS - 1).err(), None);
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let plugin = JwtAuth::new(Config {
            hs256_secret: Some(SECRET.to_owned()),
            issuer: Some("https://idp.example".to_owned()),
            audience: Some("api".to_owned()),
            ..config()
        })
        .expect("valid config");
        let at = |claims: Value| check(&plugin, &hs256(&claims, SECRET)).err();
        assert_eq!(at(json!({"iss": "https://idp.example", "aud": "api"})), None);
        assert_eq!(at(json!({"iss": "https://idp.example", "aud": ["web", "api"]})), None);
        assert_eq!(at(json!({"iss": "https://idp.example", "aud": "web"})), Some(Reject::WrongAudience));
        assert_eq!(at(json!({"iss": "https://idp.example", "aud": ["web"]})), Some(Reject::WrongAudience));
        assert_eq!(at(json!({"iss": "https://idp.example"})), Some(Reject::WrongAudience));
        assert_eq!(at(json!({"iss": "https://evil.example", "aud": "api"})), Some(Reject::WrongIssuer));
        assert_eq!(at(json!({"aud": "api"})), Some(Reject::WrongIssuer));
        // Unconfigured, they are not checked.
        let lax = self::plugin(true, false);
        assert!(check(&lax, &hs256(&json!({"iss": "anyone", "aud": "anything"}), SECRET)).is_ok());
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(Some("bearer   abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER abc ")), Ok("abc"));
        for bad in [None, Some(""), Some("Bearer"), Some("Bearer "), Some("Basic dXNlcjpwYXNz"), Some("abc")]
        {
            assert_eq!(bearer_token(bad), Err(Reject::MissingToken), "{bad:?}");
        }
    }

    #[test]
    fn maps_claims_to_header_values() {
        let claims = json!({"sub": "alice", "uid": 42, "admin": true, "roles": ["a", "b"], "org": {"id": 7}});
        let Value::Object(claims) = claims else { unreachable!() };
        let mapping: Vec<(String, String)> = [
            ("sub", "x-user"),
            ("uid", "x-uid"),
            ("admin", "x-admin"),
            ("roles", "x-roles"),
            ("org", "x-org"),
            ("email", "x-email"),
        ]
        .iter()
        .map(|(c, h)| (c.to_string(), h.to_string()))
        .collect();
        assert_eq!(
            claim_headers(&claims, &mapping),
            [
                ("x-user", Some("alice".to_owned())),
                ("x-uid", Some("42".to_owned())),
                ("x-admin", Some("true".to_owned())),
                ("x-roles", Some(r#"["a","b"]"#.to_owned())),
                ("x-org", Some(r#"{"id":7}"#.to_owned())),
                ("x-email", None),
            ]
        );
    }

    #[test]
    fn answers_401_with_the_reason() {
        assert_eq!(
            unauthorized(Reject::Expired),
            LocalResponse::new(401)
                .header(
                    "www-authenticate",
                    r#"Bearer error="invalid_token", error_description="token expired""#
                )
                .header("content-type", "text/plain; charset=utf-8")
                .body("token expired")
        );
    }

    #[test]
    fn refuses_configs_without_a_usable_key() {
        let error = JwtAuth::new(config()).err().expect("no key");
        assert_eq!(error, "no key: set `hs256_secret` or `rs256_public_key` (or both)");
        let error =
            JwtAuth::new(Config { hs256_secret: Some(String::new()), ..config() }).err().expect("empty");
        assert_eq!(error, "`hs256_secret` must not be empty");
        let error = JwtAuth::new(Config { rs256_public_key: Some("not a pem".to_owned()), ..config() })
            .err()
            .expect("garbage");
        assert_eq!(error, "`rs256_public_key` is not a PEM `PUBLIC KEY` or `RSA PUBLIC KEY`");
        let error =
            JwtAuth::new(Config { rs256_public_key: Some(rsa_key().private_pem.clone()), ..config() })
                .err()
                .expect("private key");
        assert_eq!(error, "`rs256_public_key` holds a private key: give the public key only");
        // A well-formed PEM whose content is not an RSA key.
        // (DER `SEQUENCE { INTEGER 1 }`.)
        let bogus = "-----BEGIN RSA PUBLIC KEY-----\nMAMCAQE=\n-----END RSA PUBLIC KEY-----\n";
        let error = JwtAuth::new(Config { rs256_public_key: Some(bogus.to_owned()), ..config() })
            .err()
            .expect("bogus key");
        assert!(error.starts_with("`rs256_public_key` is not a usable RSA public key"), "{error}");
        let short = rsa::PrivateKey::new(&mut getrandom::SysRng, 1024).expect("RSA key generation");
        let short = short.to_public_key().to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
        let error =
            JwtAuth::new(Config { rs256_public_key: Some(short), ..config() }).err().expect("short key");
        assert_eq!(error, "`rs256_public_key` is a 1024-bit key: at least 2048 bits are required");
        let mut bad_header = Config { hs256_secret: Some(SECRET.to_owned()), ..config() };
        bad_header.claims_to_headers.insert("sub".to_owned(), "x user".to_owned());
        let error = JwtAuth::new(bad_header).err().expect("bad header");
        assert!(error.starts_with(r#"`claims_to_headers`: "x user" (for claim "sub")"#), "{error}");
    }
}
