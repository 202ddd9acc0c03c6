//! Client mode: the images go to a running scorecam (one server, or a Kubernetes Service in
//! front of many) as `POST /explain` requests; the same outputs come back. Busy answers
//! (429, 502, 503, 504) and connection failures are retried after the server's
//! `Retry-After`, or a capped exponential backoff, up to a number of attempts.

use std::time::Duration;

use serde::Deserialize;

use super::outputs::Explained;
use crate::cli::CliError;
use crate::service::Map;
use crate::service::Prediction;

/// Longest wait between attempts, whatever the server asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// One request's limit (an exact explanation of a large model on a CPU takes minutes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub struct Client {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    attempts: u32,
}

/// The parts of the server's JSON document a run uses.
#[derive(Deserialize)]
struct Document {
    model: String,
    method: String,
    #[serde(default)]
    preset: String,
    predictions: Vec<Prediction>,
    explanations: Vec<TargetMap>,
    stats: Stats,
}

#[derive(Deserialize)]
struct TargetMap {
    target: Prediction,
    saliency: Map,
}

#[derive(Deserialize)]
struct Stats {
    forward_passes: usize,
}

/// `method:preset`, as the index names a method in both modes.
pub fn method_name(method: &str, preset: &str) -> String {
    if preset.is_empty() { method.to_string() } else { format!("{method}:{preset}") }
}

impl Client {
    /// `query`: the request's parameters, URL-encoded.
    pub fn new(server: &str, query: &str, api_key: Option<String>, attempts: u32) -> Result<Self, CliError> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Invalid(format!("--server {server:?}: expected an http:// URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CliError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self { http, url: format!("{base}/explain?{query}"), api_key, attempts: attempts.max(1) })
    }

    /// Explains one image; `Err` carries what the index records.
    pub async fn explain(&self, bytes: Vec<u8>, want_json: bool) -> Result<Explained, String> {
        let body = self.send(bytes).await?;
        let doc: Document =
            serde_json::from_slice(&body).map_err(|e| format!("the server's answer is not an explanation: {e}"))?;
        let mut maps = Vec::with_capacity(doc.explanations.len());
        for t in doc.explanations {
            if t.saliency.data.len() != t.saliency.width * t.saliency.height {
                return Err("the server's map does not match its size".into());
            }
            maps.push((t.target, t.saliency));
        }
        Ok(Explained {
            model: doc.model,
            method: method_name(&doc.method, &doc.preset),
            predictions: doc.predictions,
            maps,
            passes: doc.stats.forward_passes,
            json: want_json.then_some(body),
        })
    }

    async fn send(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone());
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let last = attempt >= self.attempts;
            let wait = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    return r.bytes().await.map(|b| b.to_vec()).map_err(|e| format!("reading the answer: {e}"));
                }
                Ok(r) if !last && matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    retry_after(r.headers()).unwrap_or_else(|| backoff(attempt))
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("{status}: {}", error_message(&text)));
                }
                Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => backoff(attempt),
                Err(e) => return Err(format!("{e} (after {attempt} attempt(s))")),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The server's `Retry-After` in seconds (the form scorecam sends), capped.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_WAIT))
}

/// 0.5 s, 1 s, 2 s … capped at 10 s, with up to 25 % jitter so many clients that failed
/// together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos.unwrap_or(0) % 1000) / 4000.0)
}

/// The `error` of the service's JSON error body, else the start of the body.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Error {
        error: String,
    }
    serde_json::from_str::<Error>(body).map(|e| e.error).unwrap_or_else(|_| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b1 = backoff(1);
        assert!(b1 >= Duration::from_millis(500) && b1 <= Duration::from_millis(625), "{b1:?}");
        let b3 = backoff(3);
        assert!(b3 >= Duration::from_secs(2) && b3 <= Duration::from_millis(2500), "{b3:?}");
        assert!(backoff(30) <= Duration::from_millis(12_500));
    }

    #[test]
    fn retry_after_is_read_and_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, "100000".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_WAIT));
    }
}
