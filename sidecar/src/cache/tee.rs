//! An upstream answer on its way to the app, copied as it goes so that it can be stored once
//! it has arrived whole. Nothing waits for the copy: the app gets each chunk at once, and an
//! answer that grows past the entry bound, fails or is abandoned is simply not stored.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{size, HttpCache, Storable};
use crate::body::{Body, BoxError, EndWatch};

/// What is stored when the body ends.
pub struct Pending {
    pub cache: Arc<HttpCache>,
    pub key: String,
    pub storable: Storable,
    pub status: StatusCode,
}

pub struct Tee {
    inner: Body,
    copy: Vec<u8>,
    pending: Option<Pending>,
    end: EndWatch,
}

impl Tee {
    pub fn new(inner: Body, pending: Pending) -> Self {
        let expected = inner.size_hint().exact();
        let end = EndWatch::new(&inner);
        // Room for the declared length at once (it was checked against the entry bound).
        let room = expected.map_or(0, |n| n.min(pending.cache.max_entry()) as usize);
        Self {
            inner,
            copy: Vec::with_capacity(room),
            pending: Some(pending),
            end,
        }
    }
}

impl Tee {
    /// The whole body arrived: store it (once).
    fn store(&mut self) {
        if let Some(p) = self.pending.take() {
            let body = size::owned_body(std::mem::take(&mut self.copy));
            p.cache
                .store(p.key, p.storable, p.status, body, SystemTime::now());
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match &frame {
            Some(Ok(f)) => {
                if let (Some(p), Some(data)) = (&this.pending, f.data_ref()) {
                    if (this.copy.len() + data.len()) as u64 > p.cache.max_entry() {
                        this.pending = None;
                        this.copy = Vec::new();
                    } else {
                        this.copy.extend_from_slice(data);
                    }
                }
                if f.is_trailers() {
                    // Trailers cannot be replayed from the cache.
                    this.pending = None;
                }
            }
            Some(Err(_)) => this.pending = None,
            None => {}
        }
        if this.end.ended_after(&frame, this.inner.is_end_stream()) {
            this.store();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
