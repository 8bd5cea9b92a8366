//! The replay buffer: a request body small enough to keep is read once and can be sent on
//! every attempt; a larger one is streamed on the first attempt only (never retried), with
//! the bytes already read put back in front so nothing is lost.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};

/// A request body prepared for one or more attempts.
pub enum RequestBody {
    /// Complete and small: cheap to clone for each attempt.
    Buffered(Bytes),
    /// Too large to keep (or unknown and longer than the buffer): one attempt only.
    Streaming(Option<Body>),
}

impl RequestBody {
    /// Reads up to `cap` bytes of `incoming` to decide which kind it is.
    pub async fn prepare(mut incoming: Body, cap: u64) -> Result<Self, BoxError> {
        if incoming.is_end_stream() {
            return Ok(Self::Buffered(Bytes::new()));
        }
        if incoming.size_hint().lower() > cap {
            return Ok(Self::Streaming(Some(incoming)));
        }
        let mut buf = BytesMut::new();
        let mut prefix = VecDeque::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
            }
            // Request trailers are rare; dropping them silently would lose data, so such a
            // body is streamed as it came (the trailers cannot be replayed).
            let streamed = frame.is_trailers() || buf.len() as u64 > cap;
            prefix.push_back(frame);
            if streamed {
                return Ok(Self::Streaming(Some(body::boxed(Prefixed {
                    prefix,
                    rest: incoming,
                }))));
            }
        }
        Ok(Self::Buffered(buf.freeze()))
    }

    /// The whole body, when it was small enough to keep.
    pub fn buffered(&self) -> Option<&[u8]> {
        match self {
            Self::Buffered(b) => Some(b),
            Self::Streaming(_) => None,
        }
    }

    /// The declared length of a streamed body (`Content-Length`), if known.
    pub fn declared_len(&self) -> Option<u64> {
        match self {
            Self::Buffered(b) => Some(b.len() as u64),
            Self::Streaming(b) => b.as_ref().and_then(|b| b.size_hint().exact()),
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Self::Buffered(_))
    }

    /// The body for the next attempt; `None` if a streamed body was already used.
    pub fn for_attempt(&mut self) -> Option<Body> {
        match self {
            Self::Buffered(b) if b.is_empty() => Some(body::empty()),
            Self::Buffered(b) => Some(body::full(b.clone())),
            Self::Streaming(b) => b.take(),
        }
    }
}

/// Frames already read (data, and trailers if any), then the rest of the stream.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body that arrives in the given chunks, with no declared length (like chunked
    /// transfer encoding).
    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        body::boxed(Prefixed {
            prefix: chunks
                .into_iter()
                .map(|c| Frame::data(Bytes::from_static(c)))
                .collect(),
            rest: body::empty(),
        })
    }

    #[tokio::test]
    async fn small_bodies_are_buffered_and_replayable() {
        let mut b = RequestBody::prepare(chunked(vec![b"ab", b"cd"]), 10)
            .await
            .unwrap();
        assert!(b.replayable());
        for _ in 0..3 {
            let got = b.for_attempt().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], b"abcd");
        }
    }

    #[tokio::test]
    async fn large_bodies_stream_once_without_losing_bytes() {
        let mut b = RequestBody::prepare(chunked(vec![b"0123", b"4567", b"89"]), 5)
            .await
            .unwrap();
        assert!(!b.replayable());
        let got = b.for_attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"0123456789");
        assert!(b.for_attempt().is_none(), "a stream is sent once");
    }

    #[tokio::test]
    async fn declared_length_over_the_cap_is_not_read_ahead() {
        let big = body::full(Bytes::from(vec![7u8; 100]));
        let b = RequestBody::prepare(big, 10).await.unwrap();
        assert!(!b.replayable());
    }

    #[tokio::test]
    async fn trailers_are_streamed_in_order_not_dropped() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let with_trailers = body::boxed(Prefixed {
            prefix: VecDeque::from([
                Frame::data(Bytes::from_static(b"ab")),
                Frame::trailers(trailers.clone()),
            ]),
            rest: body::empty(),
        });
        let mut b = RequestBody::prepare(with_trailers, 1024).await.unwrap();
        assert!(!b.replayable(), "trailers cannot be replayed");
        let got = b.for_attempt().unwrap().collect().await.unwrap();
        assert_eq!(got.trailers(), Some(&trailers));
        assert_eq!(&got.to_bytes()[..], b"ab");
    }
}
