//! Every buffer of a program in one 64-byte aligned allocation, at offsets planned once per
//! batch size.
//!
//! Buffers that do not depend on the batch (parameters, running statistics, optimizer state)
//! come first, so a new batch size keeps their offsets and only the rest of the arena is laid
//! out again. Each buffer starts on a 64-byte boundary (a cache line, and the alignment the
//! widest vector loads want), and a step's kernel gets plain slices into the arena: shared
//! ones for what it reads and disjoint mutable ones for what it writes.

use crate::program::BufferDesc;
use std::alloc::{self, Layout};
use std::ops::{Index, IndexMut};
use std::ptr::NonNull;

/// Bytes each buffer is aligned to.
pub const ALIGN: usize = 64;
const FLOATS_PER_LINE: usize = ALIGN / std::mem::size_of::<f32>();

/// A step's views into the arena: what it reads, updates in place and writes.
pub type StepViews<'a> = (Vec<&'a [f32]>, Vec<&'a mut [f32]>, Vec<&'a mut [f32]>);

pub struct Arena {
    /// The first line-aligned float of the allocation at `base`.
    ptr: NonNull<f32>,
    base: NonNull<u8>,
    /// Floats usable from `ptr` (a multiple of [`FLOATS_PER_LINE`]).
    cap: usize,
    /// Each buffer's offset (in floats) and length.
    spans: Vec<(usize, usize)>,
}

// SAFETY: the arena owns its allocation outright, like a `Vec<f32>`; shared access hands out
// only `&[f32]`, and mutable slices need `&mut self`.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// Zeroed buffers of `descs` for `batch` images.
    pub fn new(descs: &[BufferDesc], batch: usize) -> Arena {
        let spans = plan(descs, batch);
        let cap = spans.iter().map(|&(at, len)| at + len).max().unwrap_or(0);
        let cap = cap.next_multiple_of(FLOATS_PER_LINE);
        if cap == 0 {
            return Arena {
                ptr: NonNull::dangling(),
                base: NonNull::dangling(),
                cap,
                spans,
            };
        }
        // A zeroed allocation at the allocator's natural alignment comes from calloc, which
        // hands out fresh (already zero) pages for large sizes; one aligned to 64 bytes would
        // be written with zeros up front, touching every page of a 2 GB training arena. So
        // allocate a line more and align inside it.
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout(cap)) };
        let base = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout(cap)));
        let skip = raw.align_offset(ALIGN);
        // SAFETY: `skip < ALIGN`, and the allocation has `ALIGN` spare bytes.
        let ptr = unsafe { NonNull::new_unchecked(raw.add(skip) as *mut f32) };
        Arena {
            ptr,
            base,
            cap,
            spans,
        }
    }

    /// The arena for `batch` images, keeping the contents of the buffers that do not depend on
    /// the batch; batched buffers start zeroed.
    pub fn resized(&self, descs: &[BufferDesc], batch: usize) -> Arena {
        let mut next = Arena::new(descs, batch);
        for (id, desc) in descs.iter().enumerate() {
            if !desc.batched {
                next[id].copy_from_slice(&self[id]);
            }
        }
        next
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.cap * std::mem::size_of::<f32>()
    }

    /// The views one step runs on: `ins` shared, `inouts` and `outs` mutable.
    ///
    /// Panics if a buffer is written twice, or both read and written, by the step: the
    /// compiler never plans that, and the mutable slices must not alias.
    pub fn step_views(&mut self, ins: &[usize], inouts: &[usize], outs: &[usize]) -> StepViews<'_> {
        for (i, b) in inouts.iter().chain(outs).enumerate() {
            let distinct =
                !ins.contains(b) && !inouts.iter().chain(outs).skip(i + 1).any(|c| c == b);
            assert!(
                distinct,
                "buffer {b} is written by a step that also reads or writes it elsewhere"
            );
        }
        let base = self.ptr.as_ptr();
        let spans = &self.spans;
        // SAFETY: every span lies inside the allocation (see `plan`), distinct buffers have
        // disjoint spans, and the check above makes each mutable view's buffer appear once
        // and in no shared view. All borrow `self` mutably, so nothing else aliases them.
        let view =
            |b: usize| unsafe { std::slice::from_raw_parts(base.add(spans[b].0), spans[b].1) };
        let view_mut =
            |b: usize| unsafe { std::slice::from_raw_parts_mut(base.add(spans[b].0), spans[b].1) };
        (
            ins.iter().map(|&b| view(b)).collect(),
            inouts.iter().map(|&b| view_mut(b)).collect(),
            outs.iter().map(|&b| view_mut(b)).collect(),
        )
    }
}

/// Offsets for `descs` at `batch`: batch-independent buffers first, each buffer on a line.
fn plan(descs: &[BufferDesc], batch: usize) -> Vec<(usize, usize)> {
    let mut spans = vec![(0, 0); descs.len()];
    let mut at = 0;
    for batched in [false, true] {
        for (id, desc) in descs.iter().enumerate() {
            if desc.batched == batched {
                let len = desc.len(batch);
                spans[id] = (at, len);
                at += len.next_multiple_of(FLOATS_PER_LINE);
            }
        }
    }
    spans
}

/// The allocation for `floats` line-aligned floats: one line more, at the alignment of the
/// allocator's zeroing fast path (see [`Arena::new`]).
fn layout(floats: usize) -> Layout {
    Layout::from_size_align(floats * std::mem::size_of::<f32>() + ALIGN, 16)
        .expect("arena size fits")
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated in `new` with this layout.
            unsafe { alloc::dealloc(self.base.as_ptr(), layout(self.cap)) }
        }
    }
}

impl Index<usize> for Arena {
    type Output = [f32];
    fn index(&self, b: usize) -> &[f32] {
        let (at, len) = self.spans[b];
        // SAFETY: the span lies inside the allocation; `&self` forbids mutable views.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) }
    }
}

impl IndexMut<usize> for Arena {
    fn index_mut(&mut self, b: usize) -> &mut [f32] {
        let (at, len) = self.spans[b];
        // SAFETY: as above, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(elems: usize, batched: bool) -> BufferDesc {
        BufferDesc {
            elems,
            batched,
            layout: Default::default(),
        }
    }

    #[test]
    fn buffers_are_aligned_disjoint_and_keep_parameters_across_batches() {
        let descs = [
            desc(5, true),
            desc(3, false),
            desc(17, true),
            desc(1, false),
        ];
        let mut arena = Arena::new(&descs, 3);
        for b in 0..descs.len() {
            assert_eq!(arena[b].len(), descs[b].len(3));
            assert_eq!(arena[b].as_ptr() as usize % ALIGN, 0, "buffer {b}");
            assert!(arena[b].iter().all(|&v| v == 0.0));
        }
        for b in 0..descs.len() {
            arena[b].fill(b as f32 + 1.0);
        }
        for b in 0..descs.len() {
            assert!(
                arena[b].iter().all(|&v| v == b as f32 + 1.0),
                "buffer {b} overwritten"
            );
        }
        let bigger = arena.resized(&descs, 7);
        assert_eq!(bigger[2].len(), 17 * 7);
        assert_eq!(&bigger[1], &[2.0; 3]);
        assert_eq!(&bigger[3], &[4.0]);
        assert!(bigger[0].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn step_views_alias_nothing_they_write() {
        let descs = [desc(4, false), desc(4, false), desc(4, false)];
        let mut arena = Arena::new(&descs, 1);
        arena[0].fill(1.0);
        {
            let (ins, mut inouts, mut outs) = arena.step_views(&[0], &[1], &[2]);
            inouts[0].fill(ins[0][0] + 1.0);
            outs[0].copy_from_slice(ins[0]);
        }
        assert_eq!(&arena[1], &[2.0; 4]);
        assert_eq!(&arena[2], &[1.0; 4]);
        let both = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            arena.step_views(&[0], &[], &[0]).0.len()
        }));
        assert!(
            both.is_err(),
            "a buffer both read and written must be refused"
        );
    }
}
