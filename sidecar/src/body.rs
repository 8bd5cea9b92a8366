//! The one body type that flows through the proxy in both directions.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: the app's request, the upstream's response, or one the sidecar made.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

/// Wraps any body whose errors can be boxed.
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// Tells a body wrapper when the body it passes on has ended.
///
/// hyper's HTTP/1.1 server stops polling a body once it wrote the declared `Content-Length`,
/// so a wrapper may never see the `None` that would end it: the end is `None`, the inner
/// body saying it ended, or the declared length reached.
pub struct EndWatch {
    declared: Option<u64>,
    seen: u64,
}

impl EndWatch {
    pub fn new(inner: &impl http_body::Body) -> Self {
        Self {
            declared: inner.size_hint().exact(),
            seen: 0,
        }
    }

    /// Records a frame just polled from the inner body (`inner_ended`: its `is_end_stream`
    /// after the poll); true when the body has ended with it. An error is not an end.
    pub fn ended_after<E>(
        &mut self,
        frame: &Option<Result<http_body::Frame<Bytes>, E>>,
        inner_ended: bool,
    ) -> bool {
        match frame {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    self.seen += data.len() as u64;
                }
                inner_ended || self.declared == Some(self.seen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;

    type Polled = Option<Result<Frame<Bytes>, BoxError>>;

    fn data(s: &'static str) -> Polled {
        Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
    }

    #[test]
    fn the_declared_length_ends_a_body_without_its_none() {
        let mut w = EndWatch::new(&Full::new(Bytes::from_static(b"hello")));
        assert!(!w.ended_after(&data("hel"), false));
        assert!(w.ended_after(&data("lo"), false));
    }

    #[test]
    fn without_a_declared_length_the_none_or_the_inner_body_ends_it() {
        let mut w = EndWatch {
            declared: None,
            seen: 0,
        };
        assert!(!w.ended_after(&data("a"), false));
        let reset: Polled = Some(Err("reset".into()));
        assert!(!w.ended_after(&reset, false));
        assert!(w.ended_after(&data("b"), true));
        assert!(w.ended_after::<BoxError>(&None, false));
    }
}
