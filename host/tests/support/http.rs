//! A small real HTTP client (hyper, keep-alive pool) for tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// Reads `response` whole.
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The `x-baton-version` header, or "".
    pub fn version(&self) -> &str {
        self.header("x-baton-version")
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts that the reply has `status` and a JSON body whose `error` message contains
    /// `part`.
    pub fn assert_error(&self, status: u16, part: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let json = self.json();
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(part), "{part:?} not in {}", self.body);
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// An HTTP/1.1 keep-alive client (or h2c with [`Http::h2c`]).
#[derive(Clone, Debug)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// HTTP/1.1 with a keep-alive pool.
    pub fn new() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 over cleartext with prior knowledge.
    pub fn h2c() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends a request.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        Reply::read(response).await
    }

    /// GET, panicking on a transport error.
    pub async fn get(&self, url: &str) -> Reply {
        self.get_with(url, &[]).await
    }

    /// GET with `headers`, panicking on a transport error.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", url, headers, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}
