//! Memory for quantized weight matrices, in regions the OS may back with
//! huge pages.
//!
//! A decode step reads every weight of the model once (~100 MB for a 135M
//! model). In 4 KiB pages that is some 25,000 pages, each a TLB miss and a
//! page walk, every token. Asked for transparent huge pages on the weights,
//! this project's x86 VM decoded 10–25% faster (bench_native, alternated
//! with and without, glibc's `malloc.hugetlb` tunable standing in for this
//! module). But a small model's matrices are each well under 2 MiB, and a
//! huge page only backs a 2 MiB-aligned range that lies wholly inside one
//! mapping and is first touched after the advice. So matrices are carved one
//! after another out of shared chunks (32 MiB, or one matrix if larger),
//! 2 MiB-aligned and advised `MADV_HUGEPAGE` before anything touches them —
//! Linux's common THP setting, "madvise", backs exactly such regions. Where
//! THP is off, or on other systems, the chunks are ordinary memory.
//!
//! Untouched parts of a chunk cost address space, not memory. A chunk is
//! freed when the last matrix in it is dropped.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};

/// The huge page size chunks are aligned to (x86-64 and arm64 with 4 KiB
/// base pages).
const HUGE_PAGE: usize = 2 << 20;
/// Matrices share chunks of this size; a larger one gets a chunk of its own.
const CHUNK: usize = 32 << 20;
/// Each matrix starts on a cache line.
const ALIGN: usize = 64;

/// One region of zeroed memory, freed when dropped.
struct Chunk {
    ptr: *mut u8,
    size: usize,
    #[cfg(target_os = "linux")]
    mapping: (*mut libc::c_void, usize),
    #[cfg(not(target_os = "linux"))]
    layout: std::alloc::Layout,
}

// SAFETY: a chunk is plain memory; who may write where is [`WeightBytes`]'
// business (each owns a disjoint range).
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    /// At least `size` zeroed bytes, 2 MiB-aligned, advised for huge pages.
    #[cfg(target_os = "linux")]
    fn new(size: usize) -> Chunk {
        let size = size.max(1).next_multiple_of(HUGE_PAGE);
        // One huge page more than asked, to align the start.
        let len = size + HUGE_PAGE;
        // SAFETY: an anonymous private mapping, no address hint; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let layout = std::alloc::Layout::from_size_align(size, HUGE_PAGE)
                .expect("a chunk's size fits a layout");
            std::alloc::handle_alloc_error(layout);
        }
        let offset = (base as usize).next_multiple_of(HUGE_PAGE) - base as usize;
        // SAFETY: `offset + size <= len`: still inside the mapping.
        let ptr = unsafe { base.cast::<u8>().add(offset) };
        // Advice only: where THP is disabled this fails and the chunk is
        // ordinary memory, which is fine.
        // SAFETY: the range lies inside the mapping just made.
        unsafe { libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE) };
        Chunk {
            ptr,
            size,
            mapping: (base, len),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn new(size: usize) -> Chunk {
        let size = size.max(1).next_multiple_of(ALIGN);
        let layout =
            std::alloc::Layout::from_size_align(size, ALIGN).expect("a chunk's size fits a layout");
        // SAFETY: `size` is not zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Chunk { ptr, size, layout }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the mapping (allocation) made in `new`, dropped once.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::munmap(self.mapping.0, self.mapping.1);
        }
        #[cfg(not(target_os = "linux"))]
        unsafe {
            std::alloc::dealloc(self.ptr, self.layout);
        }
    }
}

/// The chunk matrices are being carved from, and how much of it is taken.
/// Held weakly: a chunk whose matrices are all gone is freed, not kept for
/// the next model.
static CURRENT: Mutex<(Weak<Chunk>, usize)> = Mutex::new((Weak::new(), 0));

/// The bytes of one weight matrix: a range of a shared [`Chunk`] that only
/// this value reads and writes.
pub(crate) struct WeightBytes {
    /// Held, not read: keeps the memory at `ptr` alive (`None` for an empty
    /// range, which takes no chunk).
    #[allow(dead_code)]
    chunk: Option<Arc<Chunk>>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the range is this value's alone; `&self` only reads it.
unsafe impl Send for WeightBytes {}
unsafe impl Sync for WeightBytes {}

impl WeightBytes {
    /// `len` zeroed bytes, placed after the previous matrix's when its chunk
    /// has room.
    pub(crate) fn zeroed(len: usize) -> WeightBytes {
        if len == 0 {
            return WeightBytes {
                chunk: None,
                // Never read or written; aligned like every other range.
                ptr: std::ptr::without_provenance_mut(ALIGN),
                len,
            };
        }
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let at = current.1.next_multiple_of(ALIGN);
        let (chunk, at) = match current.0.upgrade() {
            Some(chunk) if at + len <= chunk.size => (chunk, at),
            _ => (Arc::new(Chunk::new(len.max(CHUNK))), 0),
        };
        *current = (Arc::downgrade(&chunk), at + len);
        drop(current);
        // SAFETY: `at + len <= chunk.size`, and no other `WeightBytes` was
        // given any of `at..at + len` (each takes the range past the last).
        // Fresh chunk memory is zero, but a range is zeroed anyway rather
        // than trust that of every allocator.
        let ptr = unsafe { chunk.ptr.add(at) };
        unsafe { ptr.write_bytes(0, len) };
        WeightBytes {
            chunk: Some(chunk),
            ptr,
            len,
        }
    }
}

impl Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr`, alive while `chunk` is (or none).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for WeightBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `deref`, and the range is this value's alone.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_zeroed_aligned_and_disjoint() {
        let mut all: Vec<WeightBytes> = [100, 4096, 1, 0, 70_000, CHUNK + 5, 3]
            .iter()
            .map(|&n| WeightBytes::zeroed(n))
            .collect();
        for (i, w) in all.iter_mut().enumerate() {
            assert!(w.iter().all(|&b| b == 0));
            assert_eq!(w.as_ptr() as usize % ALIGN, 0);
            w.fill(i as u8 + 1);
        }
        for (i, w) in all.iter().enumerate() {
            assert!(
                w.iter().all(|&b| b == i as u8 + 1),
                "range {i} was overwritten"
            );
        }
    }

    #[test]
    fn a_chunk_is_freed_with_its_last_matrix() {
        // A whole number of huge pages over the chunk size: a chunk of its
        // own, with no room left for another test's matrix (empty ones take
        // no chunk).
        let w = WeightBytes::zeroed(CHUNK + HUGE_PAGE);
        let chunk = Arc::downgrade(w.chunk.as_ref().unwrap());
        drop(w);
        assert!(chunk.upgrade().is_none());
    }

    /// The advice is given to the whole chunk before it is touched, so Linux
    /// backs it with huge pages wherever THP is not disabled outright.
    #[cfg(target_os = "linux")]
    #[test]
    fn chunks_are_advised_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("this kernel has no transparent huge pages: nothing to check");
            return;
        }
        let w = WeightBytes::zeroed(3 << 20);
        assert_eq!(w.chunk.as_ref().unwrap().ptr as usize % HUGE_PAGE, 0);
        let at = w.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = lo <= at && at < hi;
                        continue;
                    }
                }
            }
            if inside && line.starts_with("VmFlags:") {
                assert!(
                    line.split_whitespace().any(|f| f == "hg"),
                    "the chunk's mapping lacks MADV_HUGEPAGE: {line}"
                );
                return;
            }
        }
        panic!("no mapping in /proc/self/smaps holds the chunk");
    }
}
