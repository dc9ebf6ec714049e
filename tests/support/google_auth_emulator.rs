//! Loopback stand-ins for Google's OAuth 2.0 token endpoint and for a GKE cluster's API
//! server as far as authentication goes. Include with
//! `#[path = "support/google_auth_emulator.rs"] mod google_auth_emulator;`.
//!
//! The token endpoint (`POST /token`, form-encoded) answers the two grants a client of
//! Application Default Credentials uses
//! (https://developers.google.com/identity/protocols/oauth2/service-account#httprest and
//! https://developers.google.com/identity/protocols/oauth2/web-server#offline):
//! - `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`: the JWT must be
//!   RS256-signed by a registered service-account key, with `iss` its e-mail, `aud` this
//!   endpoint's URL, a `scope`, and `iat`/`exp` at most an hour apart around now; else
//!   400 `{"error":"invalid_grant","error_description":…}`;
//! - `grant_type=refresh_token` with a registered client id, secret and refresh token.
//!
//! It answers `{"access_token","expires_in":3599,"token_type":"Bearer","scope"}`; the token
//! is an opaque `ya29.`-style string, never a JWT.
//!
//! The API server (`GET /version`) accepts only a bearer token the token endpoint issued or
//! one registered with `allow_token` (as a cluster accepts Google OAuth access tokens, and not
//! the self-signed JWTs that googleapis.com front ends take); anything else is 401 with a
//! Kubernetes `Status`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::http_emulator::{self, Reply, Request, Server};
use base64::Engine;
use hyper::StatusCode;
use serde_json::{Value, json};

/// One token request, as the endpoint understood it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: String,
    /// The scopes asked for (the JWT's `scope` claim, or the refresh request's `scope`).
    pub scope: String,
    /// The JWT's claims (jwt-bearer only).
    pub claims: Value,
    /// The HTTP status of the answer.
    pub status: u16,
}

#[derive(Default)]
struct State {
    /// client e-mail → PKCS#1 RSA public key (DER)
    keys: BTreeMap<String, Vec<u8>>,
    /// refresh token → (client id, client secret)
    refresh_tokens: BTreeMap<String, (String, String)>,
    issued: BTreeSet<String>,
    allowed: BTreeSet<String>,
    token_requests: Vec<TokenRequest>,
    /// Authorization headers the API server saw.
    api_authorizations: Vec<String>,
    next: u64,
    base: String,
}

pub struct GoogleAuthEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
}

/// A service-account key file's JSON, for a key made here, whose `token_uri` is the
/// emulator's.
pub struct ServiceAccountKey {
    pub json: Value,
    pub email: String,
}

impl GoogleAuthEmulator {
    pub fn start() -> GoogleAuthEmulator {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = Server::start(move |req| handle(&shared, &req));
        // Set before anyone knows the address, so before any request.
        state.lock().unwrap().base = server.url();
        GoogleAuthEmulator { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The token endpoint (a key's or a user's `token_uri`).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url())
    }

    /// Makes an RSA key for `email`, registers its public half, and returns the key file
    /// `gcloud iam service-accounts keys create` would write, pointing at this endpoint.
    pub fn service_account_key(&self, email: &str) -> ServiceAccountKey {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        self.state
            .lock()
            .unwrap()
            .keys
            .insert(email.to_string(), pair.public_key().as_ref().to_vec());
        ServiceAccountKey {
            json: json!({
                "type": "service_account",
                "project_id": "bench-proj",
                "private_key_id": "0123456789abcdef0123456789abcdef01234567",
                "private_key": pem,
                "client_email": email,
                "client_id": "100000000000000000001",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri(),
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "universe_domain": "googleapis.com",
            }),
            email: email.to_string(),
        }
    }

    /// The `authorized_user` file `gcloud auth application-default login` writes, pointing
    /// at this endpoint.
    pub fn authorized_user(&self) -> Value {
        self.state.lock().unwrap().refresh_tokens.insert(
            "1//refresh-token".into(),
            (
                "client-id.apps.googleusercontent.com".into(),
                "client-secret".into(),
            ),
        );
        json!({
            "type": "authorized_user",
            "client_id": "client-id.apps.googleusercontent.com",
            "client_secret": "client-secret",
            "refresh_token": "1//refresh-token",
            "token_uri": self.token_uri(),
        })
    }

    /// The API server also accepts this bearer token (e.g. what a fake credential plugin
    /// prints).
    pub fn allow_token(&self, token: &str) {
        self.state.lock().unwrap().allowed.insert(token.to_string());
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().token_requests.clone()
    }

    /// The Authorization headers the API server saw, in order.
    pub fn api_authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().api_authorizations.clone()
    }
}

fn reply(status: StatusCode, body: Value) -> Reply {
    http_emulator::reply(status, "application/json; charset=utf-8", body.to_string())
}

/// `application/x-www-form-urlencoded` → pairs.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| -> String {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) =
                    u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn invalid_grant(description: &str) -> Reply {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": description}),
    )
}

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Reply {
    let path = req.path();
    let authorization = req.header("authorization").to_string();
    let body = &req.body[..];
    let mut st = state.lock().unwrap();
    match path {
        "/token" => {
            // Google's endpoint takes form-encoded bodies (RFC 6749) and JSON ones
            // (google-cloud-auth sends its refresh request as JSON, with the scopes in
            // `scopes`).
            let f = match serde_json::from_slice::<BTreeMap<String, Value>>(body) {
                Ok(map) => map
                    .into_iter()
                    .map(|(k, v)| {
                        let k = if k == "scopes" {
                            "scope".to_string()
                        } else {
                            k
                        };
                        (
                            k,
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
                Err(_) => form(body),
            };
            let grant = f.get("grant_type").cloned().unwrap_or_default();
            let (response, scope, claims) = match grant.as_str() {
                "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                    let (r, claims) = jwt_bearer(
                        &mut st,
                        f.get("assertion").map(String::as_str).unwrap_or(""),
                    );
                    let scope = claims["scope"].as_str().unwrap_or_default().to_string();
                    (r, scope, claims)
                }
                "refresh_token" => {
                    let scope = f.get("scope").cloned().unwrap_or_default();
                    let known = f
                        .get("refresh_token")
                        .and_then(|t| st.refresh_tokens.get(t))
                        .cloned();
                    let r = match known {
                        Some((id, secret))
                            if f.get("client_id") == Some(&id)
                                && f.get("client_secret") == Some(&secret) =>
                        {
                            issue(&mut st, &scope)
                        }
                        _ => invalid_grant("Bad Request"),
                    };
                    (r, scope, Value::Null)
                }
                _ => (
                    reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}),
                    ),
                    String::new(),
                    Value::Null,
                ),
            };
            st.token_requests.push(TokenRequest {
                grant_type: grant,
                scope,
                claims,
                status: response.status().as_u16(),
            });
            response
        }
        "/version" => {
            st.api_authorizations.push(authorization.clone());
            let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
            if st.issued.contains(token) || st.allowed.contains(token) {
                reply(
                    StatusCode::OK,
                    json!({
                        "major": "1", "minor": "33", "gitVersion": "v1.33.5-gke.1000000",
                        "gitCommit": "0000000000000000000000000000000000000000",
                        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                        "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"
                    }),
                )
            } else {
                reply(
                    StatusCode::UNAUTHORIZED,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": "Unauthorized",
                           "reason": "Unauthorized", "code": 401}),
                )
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}

fn issue(st: &mut State, scope: &str) -> Reply {
    st.next += 1;
    let token = format!("ya29.emulated-access-token-{}", st.next);
    st.issued.insert(token.clone());
    reply(
        StatusCode::OK,
        json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer", "scope": scope}),
    )
}

/// Checks a JWT-bearer assertion as Google's endpoint does; returns the answer and the claims.
fn jwt_bearer(st: &mut State, assertion: &str) -> (Reply, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return (invalid_grant("Invalid JWT: not a JWT."), Value::Null);
    }
    let decode = |p: &str| -> Value {
        b64.decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let header = decode(parts[0]);
    let claims = decode(parts[1]);
    let Some(key) = claims["iss"]
        .as_str()
        .and_then(|iss| st.keys.get(iss))
        .cloned()
    else {
        return (invalid_grant("Invalid grant: account not found"), claims);
    };
    let signature = b64.decode(parts[2]).unwrap_or_default();
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = header["alg"] == "RS256"
        && aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &key,
        )
        .verify(signed.as_bytes(), &signature)
        .is_ok();
    if !verified {
        return (invalid_grant("Invalid JWT Signature."), claims);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let iat = claims["iat"].as_i64().unwrap_or(0);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp <= iat || exp - iat > 3600 || (iat - now).abs() > 300 {
        return (
            invalid_grant(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            ),
            claims,
        );
    }
    let audience = format!("{}/token", st.base);
    if claims["aud"].as_str() != Some(audience.as_str()) {
        return (invalid_grant("Invalid JWT: Failed audience check."), claims);
    }
    let Some(scope) = claims["scope"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return (
            reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."}),
            ),
            claims,
        );
    };
    (issue(st, &scope), claims)
}
