//! Response compression: gzip or brotli, as the request's `Accept-Encoding` allows and
//! `[compression]` says, applied to apps' responses as their bodies pass.
//!
//! [`Accepts::of`] reads what the request accepts before it is served; [`compress`] decides
//! per response and wraps its body in a [`CompressedBody`], which compresses each frame as it
//! passes and flushes the encoder at its end, so a streamed response (one frame per event)
//! reaches the client without waiting for more data.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::rejection::BoxError;
use crate::config::CompressionConfig;

/// The body of an app's response as the connection sends it: compressed or as it was.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// `body` as a [`ResponseBody`], unchanged.
pub(crate) fn boxed<B>(body: B) -> ResponseBody
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A content coding the host compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `br` (RFC 7932).
    Brotli,
}

impl Coding {
    /// Its `Content-Encoding` token.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
        }
    }
}

/// What a request lets its response be compressed with, read before the request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepts {
    coding: Option<Coding>,
    head: bool,
}

impl Accepts {
    /// What `req` accepts: its `Accept-Encoding` (every such header), and whether it is a HEAD.
    pub(crate) fn of<B>(req: &Request<B>) -> Accepts {
        Accepts {
            coding: negotiate(req.headers()),
            head: req.method() == Method::HEAD,
        }
    }
}

/// The coding to use for a request with `headers`: the acceptable one (q > 0, by name or `*`)
/// with the highest q, `br` on a tie; none without `Accept-Encoding`.
fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let (mut br, mut gzip, mut any) = (None, None, None);
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim();
            let mut q = Some(1000);
            for param in params {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q = quality(value.trim());
                }
            }
            // A q that does not parse makes the coding unacceptable.
            let q = q.unwrap_or(0);
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut any
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
        }
    }
    let br = br.or(any).unwrap_or(0);
    let gzip = gzip.or(any).unwrap_or(0);
    match (br, gzip) {
        (0, 0) => None,
        (br, gzip) if br >= gzip => Some(Coding::Brotli),
        _ => Some(Coding::Gzip),
    }
}

/// A q-value in thousandths: `0` to `1`, at most three decimals.
fn quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Leave it as it is.
    Skip,
    /// Leave its body, but say it could differ by `Accept-Encoding` (`Vary`).
    VaryOnly,
    /// Compress it.
    Compress(Coding),
}

/// Whether and how to compress a response with `status`, `headers` and a body of `size`.
fn decide(
    config: &CompressionConfig,
    accepts: Accepts,
    status: StatusCode,
    headers: &HeaderMap,
    size: &SizeHint,
) -> Decision {
    if !config.enabled {
        return Decision::Skip;
    }
    // One pass over the response's few headers instead of a lookup for each name.
    let (mut content_type, mut ranged) = (None, false);
    for (name, value) in headers {
        if *name == CONTENT_ENCODING {
            return Decision::Skip;
        } else if *name == CACHE_CONTROL {
            let no_transform = value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            });
            if no_transform {
                return Decision::Skip;
            }
        } else if *name == CONTENT_TYPE {
            // The first `Content-Type` counts, as `HeaderMap::get` has it.
            content_type.get_or_insert(value);
        } else if *name == CONTENT_RANGE {
            ranged = true;
        }
    }
    let compressible = content_type
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| config.compresses(t));
    if !compressible {
        return Decision::Skip;
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let partial = status == StatusCode::PARTIAL_CONTENT || ranged;
    let small = size
        .exact()
        .is_some_and(|len| len == 0 || len < config.min_bytes);
    match accepts.coding {
        Some(coding) if !(accepts.head || bodiless || partial || small) => {
            Decision::Compress(coding)
        }
        _ => Decision::VaryOnly,
    }
}

/// `response`, compressed when `config` and what the request `accepts` allow: then with
/// `Content-Encoding`, without `Content-Length` and `Accept-Ranges`, with a weak `ETag`. A
/// response of a compressible type also gets `Vary: Accept-Encoding` when it is not.
pub(crate) fn compress<B>(
    config: &CompressionConfig,
    accepts: Accepts,
    response: Response<B>,
) -> Response<ResponseBody>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let decision = decide(
        config,
        accepts,
        parts.status,
        &parts.headers,
        &body.size_hint(),
    );
    let body = match decision {
        Decision::Skip => boxed(body),
        Decision::VaryOnly => {
            vary_on_accept_encoding(&mut parts.headers);
            boxed(body)
        }
        Decision::Compress(coding) => {
            let headers = &mut parts.headers;
            vary_on_accept_encoding(headers);
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
            headers.remove(CONTENT_LENGTH);
            headers.remove(ACCEPT_RANGES);
            if let Some(etag) = headers.get(ETAG)
                && etag.as_bytes().starts_with(b"\"")
            {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                    headers.insert(ETAG, weak);
                }
            }
            CompressedBody::new(body, coding, config).boxed_unsync()
        }
    };
    Response::from_parts(parts, body)
}

/// Adds `Accept-Encoding` to `Vary`, unless it (or `*`) is there already.
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    if !headers.contains_key(VARY) {
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    let mut existing = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
            return;
        };
        existing.extend(value.split(',').map(str::trim).filter(|v| !v.is_empty()));
    }
    if existing
        .iter()
        .any(|v| *v == "*" || v.eq_ignore_ascii_case("accept-encoding"))
    {
        return;
    }
    existing.push("Accept-Encoding");
    if let Ok(value) = HeaderValue::from_str(&existing.join(", ")) {
        headers.insert(VARY, value);
    }
}

/// `bytes` compressed whole with the coding whose `Content-Encoding` token is `token` (`br` or
/// `gzip`), as `config` sets its level: for files compressed once, when they are loaded.
/// `None` for another token or a failed encoder.
pub(crate) fn encode_whole(token: &str, config: &CompressionConfig, bytes: &[u8]) -> Option<Bytes> {
    let coding = [Coding::Brotli, Coding::Gzip]
        .into_iter()
        .find(|c| c.as_str() == token)?;
    let mut encoder = Encoder::new(coding, config, Some(bytes.len() as u64));
    encoder.write(bytes).ok()?;
    encoder.finish().ok()
}

/// A compressor writing into memory, from which each flush takes what it wrote.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // Boxed: brotli's state is large.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

/// brotli's window (log2 of its size) for a body of `size` bytes: no larger than the body
/// (an encoder's memory grows with it), 512 KiB for a stream of unknown size (as nginx's brotli
/// module), at most the format's default of 4 MiB.
fn brotli_window(size: Option<u64>) -> i32 {
    match size {
        Some(size) => (u64::BITS - size.saturating_sub(1).leading_zeros()).clamp(10, 22) as i32,
        None => 19,
    }
}

impl Encoder {
    /// An encoder for a body of `size` bytes, if known.
    fn new(coding: Coding, config: &CompressionConfig, size: Option<u64>) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(config.gzip_level),
            )),
            Coding::Brotli => {
                let mut params = brotli::enc::BrotliEncoderParams {
                    quality: i32::try_from(config.brotli_quality).unwrap_or(11),
                    lgwin: brotli_window(size),
                    ..Default::default()
                };
                if let Some(size) = size {
                    params.size_hint = usize::try_from(size).unwrap_or(usize::MAX);
                }
                Encoder::Brotli(Box::new(brotli::CompressorWriter::with_params(
                    Vec::new(),
                    4096,
                    &params,
                )))
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
        }
    }

    /// Flushes what was written so far (decodable by the client as it is) and takes it.
    fn flush(&mut self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.flush()?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream and takes the rest of it.
    fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
        };
        Ok(Bytes::from(out))
    }
}

/// A response body compressed frame by frame: each data frame's bytes are compressed and
/// flushed as they pass; trailers follow the end of the compressed stream.
pub(crate) struct CompressedBody<B> {
    inner: B,
    /// `None` once the compressed stream has ended.
    encoder: Option<Encoder>,
    /// The inner body's trailers, sent after the end of the compressed stream.
    trailers: Option<HeaderMap>,
}

impl<B> std::fmt::Debug for CompressedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = self.encoder.as_ref().map(|e| match e {
            Encoder::Gzip(_) => Coding::Gzip,
            Encoder::Brotli(_) => Coding::Brotli,
        });
        f.debug_struct("CompressedBody")
            .field("coding", &coding)
            .finish_non_exhaustive()
    }
}

impl<B: HttpBody> CompressedBody<B> {
    /// `inner`, compressed with `coding` at `config`'s level.
    pub(crate) fn new(inner: B, coding: Coding, config: &CompressionConfig) -> CompressedBody<B> {
        let size = inner.size_hint().exact();
        CompressedBody {
            inner,
            encoder: Some(Encoder::new(coding, config, size)),
            trailers: None,
        }
    }
}

/// `Some(data)` unless `out` is empty.
fn data(out: Bytes) -> Option<Result<Frame<Bytes>, BoxError>> {
    (!out.is_empty()).then(|| Ok(Frame::data(out)))
}

impl<B> HttpBody for CompressedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                // The end: as if empty trailers came.
                None => Frame::trailers(HeaderMap::new()),
            };
            let out = match frame.into_data() {
                Ok(bytes) => {
                    if let Err(e) = encoder.write(&bytes) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    if !this.inner.is_end_stream() {
                        if bytes.is_empty() {
                            continue;
                        }
                        match encoder.flush() {
                            Ok(out) => out,
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    } else {
                        match this.encoder.take().map(Encoder::finish) {
                            Some(Ok(out)) => out,
                            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                            None => Bytes::new(),
                        }
                    }
                }
                Err(frame) => {
                    // Trailers (or the end): the compressed stream ends before them.
                    let Ok(trailers) = frame.into_trailers() else {
                        continue;
                    };
                    this.trailers = Some(trailers).filter(|t| !t.is_empty());
                    match this.encoder.take().map(Encoder::finish) {
                        Some(Ok(out)) => out,
                        Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                        None => Bytes::new(),
                    }
                }
            };
            if let Some(frame) = data(out) {
                return Poll::Ready(Some(frame));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::Read;

    use http_body_util::Full;

    use super::*;

    fn accept(value: &str) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for part in value.split('|') {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(part).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn accept_encoding_is_negotiated_with_q_values() {
        use Coding::{Brotli, Gzip};
        assert_eq!(negotiate(&HeaderMap::new()), None);
        for (value, expected) in [
            ("gzip", Some(Gzip)),
            ("br", Some(Brotli)),
            ("gzip, deflate, br", Some(Brotli)),
            ("gzip, deflate, br, zstd", Some(Brotli)),
            ("GZIP", Some(Gzip)),
            ("x-gzip", Some(Gzip)),
            ("br;q=0.5, gzip", Some(Gzip)),
            ("br;q=0.8, gzip;q=0.8", Some(Brotli)),
            ("br; q=1.0, gzip;q=0.999", Some(Brotli)),
            ("gzip;q=0, br;q=0", None),
            ("br;q=0", None),
            ("*", Some(Brotli)),
            ("*;q=0.5, br;q=0.4", Some(Gzip)),
            ("*;q=0, gzip", Some(Gzip)),
            ("identity", None),
            ("identity;q=0", None),
            ("deflate", None),
            ("", None),
            (",,;", None),
            ("br;q=2", None),
            ("br;q=0.0001, gzip", Some(Gzip)),
            ("br;q=abc, gzip;q=0.1", Some(Gzip)),
            ("br;q=1.001", None),
            ("deflate|gzip", Some(Gzip)),
            ("gzip;q=0.2|br;q=0.1", Some(Gzip)),
        ] {
            assert_eq!(accept(value), expected, "{value:?}");
        }
    }

    fn config() -> CompressionConfig {
        CompressionConfig {
            min_bytes: 100,
            ..CompressionConfig::default()
        }
    }

    fn text_headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        for (k, v) in extra {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    const GZIP: Accepts = Accepts {
        coding: Some(Coding::Gzip),
        head: false,
    };

    #[test]
    fn each_skip_rule_holds() {
        let ok = StatusCode::OK;
        let big = SizeHint::with_exact(1000);
        let stream = SizeHint::default();
        let plain = text_headers(&[]);
        let decide = |accepts, status, headers: &HeaderMap, size: &SizeHint| {
            decide(&config(), accepts, status, headers, size)
        };
        assert_eq!(
            decide(GZIP, ok, &plain, &big),
            Decision::Compress(Coding::Gzip)
        );
        assert_eq!(
            decide(GZIP, ok, &plain, &stream),
            Decision::Compress(Coding::Gzip),
            "a stream of unknown size"
        );
        let off = CompressionConfig {
            enabled: false,
            ..config()
        };
        assert_eq!(super::decide(&off, GZIP, ok, &plain, &big), Decision::Skip);
        let none = Accepts {
            coding: None,
            head: false,
        };
        assert_eq!(decide(none, ok, &plain, &big), Decision::VaryOnly);
        let head = Accepts { head: true, ..GZIP };
        assert_eq!(decide(head, ok, &plain, &big), Decision::VaryOnly);
        for status in [
            StatusCode::CONTINUE,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::PARTIAL_CONTENT,
        ] {
            assert_eq!(
                decide(GZIP, status, &plain, &big),
                Decision::VaryOnly,
                "{status}"
            );
        }
        let ranged = text_headers(&[("content-range", "bytes 0-999/5000")]);
        assert_eq!(decide(GZIP, ok, &ranged, &big), Decision::VaryOnly);
        for small in [0, 99] {
            assert_eq!(
                decide(GZIP, ok, &plain, &SizeHint::with_exact(small)),
                Decision::VaryOnly,
                "{small} bytes"
            );
        }
        assert_eq!(
            decide(GZIP, ok, &plain, &SizeHint::with_exact(100)),
            Decision::Compress(Coding::Gzip)
        );
        for skipped in [
            text_headers(&[("content-encoding", "br")]),
            text_headers(&[("cache-control", "public, No-Transform")]),
            {
                // `no-transform` in a second `Cache-Control` counts too.
                let mut h = text_headers(&[("cache-control", "public")]);
                h.append(CACHE_CONTROL, HeaderValue::from_static("no-transform"));
                h
            },
            {
                let mut h = text_headers(&[]);
                h.insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
                h
            },
            {
                let mut h = text_headers(&[]);
                h.remove(CONTENT_TYPE);
                h
            },
        ] {
            assert_eq!(
                decide(GZIP, ok, &skipped, &big),
                Decision::Skip,
                "{skipped:?}"
            );
        }
    }

    fn text(len: usize) -> String {
        let mut text = String::new();
        let mut i = 0;
        while text.len() < len {
            text.push_str(&format!("line {i}: the quick brown fox\n"));
            i += 1;
        }
        text.truncate(len);
        text
    }

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap(),
            Coding::Brotli => brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap(),
        };
        out
    }

    #[test]
    fn brotlis_window_fits_the_body() {
        assert_eq!(brotli_window(Some(0)), 10);
        assert_eq!(brotli_window(Some(1024)), 10);
        assert_eq!(brotli_window(Some(1025)), 11);
        assert_eq!(brotli_window(Some(65_536)), 16);
        assert_eq!(brotli_window(Some(u64::MAX)), 22);
        assert_eq!(brotli_window(None), 19);
    }

    #[tokio::test]
    async fn a_compressed_response_decodes_to_the_original_and_says_so() {
        for (body, coding) in [
            (text(20_000), Coding::Gzip),
            (text(20_000), Coding::Brotli),
            (text(600_000), Coding::Brotli),
        ] {
            let response = Response::builder()
                .header(CONTENT_TYPE, "text/html; charset=utf-8")
                .header(CONTENT_LENGTH, body.len())
                .header(ACCEPT_RANGES, "bytes")
                .header(ETAG, "\"v1\"")
                .header(VARY, "Cookie")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap();
            let accepts = Accepts {
                coding: Some(coding),
                head: false,
            };
            let response = compress(&config(), accepts, response);
            let headers = response.headers().clone();
            assert_eq!(headers[CONTENT_ENCODING], coding.as_str());
            assert!(!headers.contains_key(CONTENT_LENGTH));
            assert!(!headers.contains_key(ACCEPT_RANGES));
            assert_eq!(headers[ETAG], "W/\"v1\"");
            assert_eq!(headers[VARY], "Cookie, Accept-Encoding");
            let compressed = response.into_body().collect().await.unwrap().to_bytes();
            assert!(
                compressed.len() < body.len() / 4,
                "{coding:?}: {}",
                compressed.len()
            );
            assert_eq!(decode(coding, &compressed), body.as_bytes(), "{coding:?}");
        }
    }

    #[tokio::test]
    async fn a_response_left_alone_keeps_its_body_and_gets_vary_once() {
        let response = Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header(ETAG, "W/\"v1\"")
            .header(VARY, "accept-encoding")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = compress(&config(), GZIP, response);
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(response.headers()[VARY], "accept-encoding");
        assert_eq!(response.headers()[ETAG], "W/\"v1\"");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{}");
        let image = Response::builder()
            .header(CONTENT_TYPE, "image/png")
            .body(Full::new(Bytes::from(vec![0u8; 5000])))
            .unwrap();
        let image = compress(&config(), GZIP, image);
        assert!(
            !image.headers().contains_key(VARY),
            "never compressed, never varies"
        );
    }

    /// A body that hands out its frames one by one, as a streaming response does.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Feeds compressed bytes to a decoder as they arrive; what it has decoded so far.
    enum Decoder {
        Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
        Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    }

    impl Decoder {
        fn new(coding: Coding) -> Decoder {
            match coding {
                Coding::Gzip => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
                Coding::Brotli => {
                    Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)))
                }
            }
        }

        fn feed(&mut self, bytes: &[u8]) -> &[u8] {
            match self {
                Decoder::Gzip(d) => {
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                    d.get_ref()
                }
                Decoder::Brotli(d) => {
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                    d.get_ref()
                }
            }
        }
    }

    #[tokio::test]
    async fn each_streamed_frame_is_decodable_as_it_arrives_and_trailers_pass() {
        for coding in [Coding::Gzip, Coding::Brotli] {
            let events: Vec<String> = (0..5).map(|i| format!("data: event {i}\n\n")).collect();
            let mut frames: VecDeque<Frame<Bytes>> = events
                .iter()
                .map(|e| Frame::data(Bytes::from(e.clone())))
                .collect();
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            frames.push_back(Frame::trailers(trailers.clone()));
            let mut body = CompressedBody::new(Frames(frames), coding, &config());
            let mut decoder = Decoder::new(coding);
            let mut expected = String::new();
            for event in &events {
                let frame = body.frame().await.unwrap().unwrap();
                let bytes = frame.into_data().unwrap();
                expected.push_str(event);
                assert_eq!(
                    String::from_utf8_lossy(decoder.feed(&bytes)),
                    expected,
                    "{coding:?}: the event decodes before the next one is sent"
                );
            }
            let mut last = Vec::new();
            while let Some(frame) = body.frame().await {
                last.push(frame.unwrap());
            }
            let (tail, got_trailers): (Vec<_>, Vec<_>) =
                last.into_iter().partition(|f| f.is_data());
            for frame in tail {
                decoder.feed(&frame.into_data().unwrap());
            }
            assert_eq!(String::from_utf8_lossy(decoder.feed(&[])), expected);
            assert_eq!(got_trailers.len(), 1);
            assert_eq!(
                got_trailers[0].trailers_ref().unwrap(),
                &trailers,
                "{coding:?}"
            );
            assert!(body.is_end_stream());
        }
    }
}
