//! f16 values on cache-line boundaries, for the KV cache.
//!
//! A cached position holds every KV head's vector, `kvdim` values; a unit of
//! attention reads one head's vector per position (128 bytes at head dim 64).
//! From a `Vec<u16>` (16-byte aligned, as the allocator gives it) that vector
//! straddles three cache lines three times out of four instead of lying in
//! two, so attention, bound by memory bandwidth once several sequences'
//! caches outgrow the caches, reads up to half as much again. With the base
//! on a 64-byte boundary and `kvdim` a multiple of 32 values (any head dim
//! that is a multiple of 32), every head vector starts on a line. Zen 4
//! EPYC, 2 threads: attention over 130 positions of 120 caches (4 sequences
//! × 30 layers) 10–20% faster per position; `bench_native --streams 4
//! --decode-context 600`, where attention is a third of a step, its time
//! relative to the matmuls' ~13% lower (two alternated rounds each).

use super::{f32_to_f16, level, Level};

/// One cache line of f16 values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

const LINE: usize = 32;

/// A growable run of f16 values (bits) starting on a 64-byte boundary.
#[derive(Clone, Default)]
pub struct F16Buf {
    lines: Vec<Line>,
    len: usize,
}

impl F16Buf {
    /// `n` zeros.
    pub fn zeros(n: usize) -> F16Buf {
        F16Buf {
            lines: vec![Line([0; LINE]); n.div_ceil(LINE)],
            len: n,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u16] {
        // SAFETY: `lines` holds at least `len` initialised u16s, contiguous
        // (`Line` is a plain array with no padding: 64 bytes, align 64).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u16, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        // SAFETY: as `as_slice`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u16, self.len) }
    }

    /// Appends `src` as f16 bits (rounded to nearest, ties to even).
    pub fn extend_f32(&mut self, src: &[f32]) {
        let at = self.len;
        self.len += src.len();
        self.lines.resize(self.len.div_ceil(LINE), Line([0; LINE]));
        let out = &mut self.as_mut_slice()[at..];
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level was detected on this CPU.
            Level::Avx512 | Level::AvxVnni | Level::Avx2 => unsafe {
                super::x86::to_f16_f16c(src, out)
            },
            _ => {
                for (o, &x) in out.iter_mut().zip(src) {
                    *o = f32_to_f16(x);
                }
            }
        }
    }

    /// The first `n` values (a copy).
    pub fn prefix(&self, n: usize) -> F16Buf {
        assert!(n <= self.len, "a prefix of {n} from {} values", self.len);
        F16Buf {
            lines: self.lines[..n.div_ceil(LINE)].to_vec(),
            len: n,
        }
    }

    /// Keeps the first `n` values.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.len = n;
            self.lines.truncate(n.div_ceil(LINE));
        }
    }

    /// Gives back the room reserved for values to come.
    pub fn shrink_to_fit(&mut self) {
        self.lines.shrink_to_fit();
    }

    /// Bytes allocated.
    pub fn capacity_bytes(&self) -> usize {
        self.lines.capacity() * std::mem::size_of::<Line>()
    }
}
