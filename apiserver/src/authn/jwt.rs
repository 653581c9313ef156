//! JSON Web Tokens as the service account tokens use them: compact JWS with ES256 (ECDSA P-256,
//! SHA-256, the signature as r||s), the signing key, its key id (upstream's: base64url of the
//! SHA-256 of the public key's PKIX DER) and its JWK, and the claims upstream writes. Only the
//! signature is checked here; what the claims mean is `serviceaccount`'s job.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

/// The PKIX (SubjectPublicKeyInfo) DER prefix of an uncompressed P-256 public key: the algorithm
/// (id-ecPublicKey, prime256v1) and the bit string header; the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("invalid signature")]
    Signature,
    #[error("invalid claims: {0}")]
    Claims(String),
    #[error("signing key: {0}")]
    Key(String),
}

/// The service account signing key (ECDSA P-256).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of a PKCS#8 DER document.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, JwtError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new()).map_err(|e| JwtError::Key(e.to_string()))?;
        let kid = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, kid })
    }

    /// A new random key (PKCS#8 DER and the key).
    pub fn generate() -> Result<(Vec<u8>, Self), JwtError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).map_err(|e| JwtError::Key(e.to_string()))?;
        let key = Self::from_pkcs8(doc.as_ref())?;
        Ok((doc.as_ref().to_vec(), key))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed public point (0x04 || X || Y).
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as a JWK (RFC 7517), as `/openid/v1/jwks` lists it.
    pub fn jwk(&self) -> Value {
        let point = self.public_key();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// `claims` signed: `header.payload.signature`.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let payload = serde_json::to_vec(claims).map_err(|e| JwtError::Claims(e.to_string()))?;
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(payload));
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of `token` when this key signed it.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let parts = Parts::of(token)?;
        let alg = parts.header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != "ES256" {
            return Err(JwtError::Algorithm(alg.to_string()));
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.public_key())
            .verify(parts.signed.as_bytes(), &parts.signature)
            .map_err(|_| JwtError::Signature)?;
        Ok(parts.claims)
    }
}

/// The key id upstream gives a public key: base64url (unpadded) of the SHA-256 of its PKIX DER.
fn key_id(point: &[u8]) -> String {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &der))
}

/// A compact JWS taken apart, nothing verified.
struct Parts {
    header: Value,
    claims: Claims,
    signed: String,
    signature: Vec<u8>,
}

impl Parts {
    fn of(token: &str) -> Result<Self, JwtError> {
        let mut it = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(JwtError::Malformed);
        };
        let b64 = |x: &str| URL_SAFE_NO_PAD.decode(x).map_err(|_| JwtError::Malformed);
        let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|e| JwtError::Claims(e.to_string()))?;
        Ok(Parts { header, claims, signed: format!("{h}.{p}"), signature: b64(s)? })
    }
}

/// The claims of `token` without checking its signature (to see whose it is: the issuer).
pub fn unverified_claims(token: &str) -> Result<Claims, JwtError> {
    Parts::of(token).map(|p| p.claims)
}

/// A name and uid, as the `kubernetes.io` claim refers to objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private claim of a bound token (upstream's `kubernetes.io`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    /// The node of a token bound to a node, or of the pod a token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    pub serviceaccount: Ref,
    /// When a token given a year for a client that asked for 3607 seconds counts as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The claims of a service account token: a bound token (iss, sub, aud, exp, iat, nbf, jti and
/// `kubernetes.io`) or a legacy Secret token (iss `kubernetes/serviceaccount` and the four
/// `kubernetes.io/serviceaccount/...` claims).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default, deserialize_with = "audience", skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io", default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesClaim>,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default, skip_serializing_if = "Option::is_none")]
    pub legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name", default, skip_serializing_if = "Option::is_none")]
    pub legacy_secret_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name", default, skip_serializing_if = "Option::is_none")]
    pub legacy_sa_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid", default, skip_serializing_if = "Option::is_none")]
    pub legacy_sa_uid: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => vec![],
        Some(Aud::One(a)) => vec![a],
        Some(Aud::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            sub: "system:serviceaccount:default:builder".into(),
            aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
            exp: Some(2000),
            iat: Some(1000),
            nbf: Some(1000),
            jti: Some("j".into()),
            kubernetes: Some(KubernetesClaim {
                namespace: "default".into(),
                serviceaccount: Ref { name: "builder".into(), uid: "u1".into() },
                pod: Some(Ref { name: "p".into(), uid: "u2".into() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_signed_token_verifies_and_carries_upstreams_claim_names() {
        let (der, key) = SigningKey::generate().unwrap();
        let token = key.sign(&claims()).unwrap();
        assert_eq!(key.verify(&token).unwrap(), claims());
        let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["name"], "builder");
        assert_eq!(payload["kubernetes.io"]["pod"]["uid"], "u2");
        assert_eq!(payload["aud"], json!(["https://kubernetes.default.svc.cluster.local"]));
        assert!(payload.get("kubernetes.io/serviceaccount/namespace").is_none());
        // the same key read back from its PKCS#8 document verifies it too, with the same key id
        let again = SigningKey::from_pkcs8(&der).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(again.verify(&token).is_ok());
    }

    #[test]
    fn a_changed_payload_or_another_key_fails_the_signature() {
        let (_, key) = SigningKey::generate().unwrap();
        let token = key.sign(&claims()).unwrap();
        let mut forged = claims();
        forged.sub = "system:serviceaccount:kube-system:admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(key.verify(&tampered), Err(JwtError::Signature));
        let (_, other) = SigningKey::generate().unwrap();
        assert_eq!(other.verify(&token), Err(JwtError::Signature));
        assert_eq!(key.verify("a.b"), Err(JwtError::Malformed));
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(key.verify(&none), Err(JwtError::Algorithm("none".into())));
    }

    #[test]
    fn audience_may_be_a_single_string() {
        let c: Claims = serde_json::from_value(json!({"iss": "i", "aud": "api"})).unwrap();
        assert_eq!(c.aud, vec!["api"]);
    }

    #[test]
    fn the_jwk_holds_the_public_point() {
        let (_, key) = SigningKey::generate().unwrap();
        let jwk = key.jwk();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), key.public_key());
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(key.kid().len(), 43);
    }
}
