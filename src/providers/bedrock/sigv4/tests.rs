//! SigV4 against the AWS test suite's `post-vanilla` vector and against
//! signatures computed independently for Bedrock calls.

use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderName, HeaderValue};

use super::super::tests::{target_for, ACCESS_KEY, MODEL, SECRET_KEY};
use super::*;
use crate::config::Secret;
use crate::providers::Endpoint;

fn creds(session_token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::new(SECRET_KEY),
        session_token: session_token.map(Secret::new),
    }
}

fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

/// AWS's SigV4 test suite, `post-vanilla`: `POST /` to
/// example.amazonaws.com for service `service`, 20150830T123600Z.
#[test]
fn the_signer_reproduces_the_sigv4_suite_vector() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    let headers = sign_for(
        "service",
        &creds(None),
        "https://example.amazonaws.com/",
        b"",
        at,
    )
    .unwrap();
    assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
    assert_eq!(
        header(&headers, "authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        )
    );
}

/// The expected signatures were computed independently, by hand, with a
/// one-off Python script (hashlib + hmac, following AWS's "create a
/// signed request" steps) that also reproduces the suite's `post-vanilla`
/// signature above. Its canonical request for the call below:
///
/// ```text
/// POST
/// /model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse
///
/// host:bedrock-runtime.us-east-1.amazonaws.com
/// x-amz-date:20240501T120000Z
///
/// host;x-amz-date
/// <sha256 hex of the body>
/// ```
///
/// The path is escaped twice (`:` → `%3A` in the URL, `%3A` → `%253A`
/// when signing), as AWS does for every service but S3; signing the
/// once-escaped path would give 73c2b61b…, which Bedrock refuses.
#[test]
fn bedrock_calls_are_signed_with_the_path_escaped_twice() {
    let target = target_for(MODEL, false);
    let url = target.url(Endpoint::ChatCompletions, false);
    assert_eq!(
        url,
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    let body = br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let headers = sign(&target, url, body, at).unwrap();
    assert_eq!(header(&headers, "x-amz-date"), Some("20240501T120000Z"));
    let auth = header(&headers, "authorization").unwrap();
    assert_eq!(
        auth,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=08c138c61400021efa4a30195272039b7b0b88db902602af9156d3adefbb3f83"
    );
    let (_, value) = headers.iter().find(|(n, _)| n == "authorization").unwrap();
    assert!(value.is_sensitive());
    assert!(header(&headers, "x-amz-security-token").is_none());
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names
            .iter()
            .all(|n| ["authorization", "x-amz-date", "x-amz-content-sha256"].contains(n)),
        "{names:?}"
    );
    // The same inputs always sign the same; another body does not.
    assert_eq!(sign(&target, url, body, at).unwrap(), headers);
    assert_ne!(sign(&target, url, b"{}", at).unwrap(), headers);
}

#[test]
fn temporary_credentials_sign_and_send_their_session_token() {
    let token = "FQoGZXIvYXdzEXAMPLETOKEN";
    let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    let body = br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let headers = sign_for("bedrock", &creds(Some(token)), url, body, at).unwrap();
    assert_eq!(header(&headers, "x-amz-security-token"), Some(token));
    // Same Python script, with `x-amz-security-token` in the canonical headers.
    assert_eq!(
        header(&headers, "authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=2db12800e1cfb0a4fdefcecf7980541cfae8282d506b7fc4972022b5e6607dd1"
        )
    );
    let debug = format!("{headers:?}");
    assert!(
        !debug.contains(SECRET_KEY) && !debug.contains(token),
        "{debug}"
    );
    assert!(!format!("{:?}", creds(Some(token))).contains(SECRET_KEY));
}

#[test]
fn a_port_in_the_url_is_signed_as_the_host_header_carries_it() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let sig = |url: &str| {
        let h = sign_for("bedrock", &creds(None), url, b"{}", at).unwrap();
        header(&h, "authorization").unwrap().to_string()
    };
    // awc sends no port for 443, so neither may the signature.
    assert_eq!(
        sig("https://bedrock-runtime.us-east-1.amazonaws.com:443/model/m/converse"),
        sig("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse")
    );
    assert_ne!(
        sig("http://127.0.0.1:8080/model/m/converse"),
        sig("http://127.0.0.1/model/m/converse")
    );
    let err = sign_for("bedrock", &creds(None), "not a url", b"", at).unwrap_err();
    assert!(!err.to_string().contains(SECRET_KEY));
}
