//! SigV4 signatures for Bedrock requests. The signer derives nothing from
//! the network: the same URL, body, credentials and time always give the
//! same headers, which is what makes it testable against fixed vectors.

use std::time::SystemTime;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Uri;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use crate::config::AwsCredentials;
use crate::error::GatewayError;
use crate::topology::DeploymentTarget;

/// Bedrock runtime's signing name (not `bedrock-runtime`, its host's).
const SERVICE: &str = "bedrock";

/// The headers that authenticate one Bedrock call: `authorization`,
/// `x-amz-date`, and `x-amz-security-token` for temporary credentials.
/// `url` is sent as given (its path already escaped once); the signer
/// escapes the path again for the canonical request, as AWS does for
/// every service but S3.
pub fn sign(
    target: &DeploymentTarget,
    url: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let aws = target.aws.as_ref().ok_or_else(|| {
        GatewayError::Internal(format!(
            "deployment `{}` has no AWS credentials to sign with",
            target.id
        ))
    })?;
    sign_for(SERVICE, aws, url, body, now)
}

/// [`sign`] for any service name: the AWS test-suite vectors sign for
/// `service`, not `bedrock`.
pub(super) fn sign_for(
    service: &str,
    aws: &AwsCredentials,
    url: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    // Signer errors name what was wrong (a URL, a header), never a key.
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        GatewayError::Internal(format!("could not sign the Bedrock request ({what}): {e}"))
    };
    let host = host_header(url).ok_or_else(|| fail("URL", &"no host in it"))?;
    let identity = Credentials::new(
        aws.access_key_id.clone(),
        aws.secret_access_key.expose().to_string(),
        aws.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "tollgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&aws.region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail("parameters", &e))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| fail("request", &e))?;
    let (instructions, _signature) = http_request::sign(request, &params)
        .map_err(|e| fail("signature", &e))?
        .into_parts();
    instructions
        .headers()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail("header", &e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| fail("header", &e))?;
            // Whoever logs request headers must not see these.
            if name == "authorization" || name == "x-amz-security-token" {
                value.set_sensitive(true);
            }
            Ok((name, value))
        })
        .collect()
}

/// The `host` header exactly as awc will send it (no port when it is
/// absent, 80 or 443): AWS checks the signature against the header it
/// receives, so both must agree.
fn host_header(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?;
    Some(match uri.port_u16() {
        None | Some(80) | Some(443) => host.to_string(),
        Some(port) => format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests;
