//! CPU kernels for the native forward pass, with SIMD picked at run time.
//!
//! Candle selects its quantized SIMD code at compile time, so a portable
//! release build runs its scalar kernels. Here every kernel exists in a
//! scalar version (the reference, and the fallback everywhere) and in
//! versions for AVX2 (+FMA, F16C; with AVX-VNNI), AVX-512 (F, BW, VL + VNNI)
//! and NEON; the
//! best one the CPU supports is chosen once, at first use
//! ([`level`]), and `SANDPIPER_KERNELS=scalar|avx2|avxvnni|avx512|neon` can lower it.
//!
//! Formats follow ggml so results match candle's quantized matmul:
//! - weights ([`QMatrix`]) are Q4_1 or Q8_0 rows, repacked at load time into a
//!   SIMD-friendly layout (for the x86 kernels, groups of 16 rows
//!   interleaved block by block; elsewhere, quants of a row first, then its
//!   f16 scales: [`Layout`]);
//! - activations ([`QActs`]) are quantized once per matmul to 8-bit blocks of
//!   32 exactly as ggml's `quantize_row_q8_1` does (the same quants and scale
//!   serve Q8_0 weights; Q4_1 also uses the block sum `s`).
//!
//! Matmuls compute `out[t][r] = Σ_k w[r][k] · x[t][k]` for every token `t` of
//! the activations: with one token this is the decode matvec; with several,
//! each weight row is read once per group of tokens (prefill).

// Tiles index several per-token arrays with one loop variable.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod f16buf;
pub mod pool;
mod scalar;
mod weights;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Result};

pub use f16buf::F16Buf;

use weights::WeightBytes;

/// Values per quantization block (Q4_1, Q8_0, Q8_1).
pub const QK: usize = 32;
/// Rows and activations are padded to a multiple of this many values (two
/// blocks: the Q4_1 layout packs block pairs).
pub const KPAD: usize = 64;

/// A SIMD level; each is a complete set of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// The AVX2 set + AVX-VNNI (256-bit `vpdpbusd`: Intel since Alder Lake,
    /// mostly without AVX-512).
    AvxVnni,
    /// AVX-512 F/BW/VL + AVX512-VNNI (+ the AVX2 set).
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avxvnni",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }
}

/// Every level this CPU can run, scalar first.
pub fn supported_levels() -> Vec<Level> {
    #[allow(unused_mut)]
    let mut levels = vec![Level::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx2() {
            levels.push(Level::Avx2);
        }
        if x86::has_avxvnni() {
            levels.push(Level::AvxVnni);
        }
        if x86::has_avx512() {
            levels.push(Level::Avx512);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            levels.push(Level::Neon);
        }
    }
    levels
}

/// The level the kernels run at: the best supported one, or the one named by
/// `SANDPIPER_KERNELS` if the CPU supports it.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let levels = supported_levels();
        let best = *levels.last().expect("scalar is always supported");
        match std::env::var("SANDPIPER_KERNELS") {
            Ok(want) => levels
                .iter()
                .copied()
                .find(|l| l.name() == want.trim())
                .unwrap_or_else(|| {
                    tracing::warn!(
                        "SANDPIPER_KERNELS={want:?} is not supported here; using {}",
                        best.name()
                    );
                    best
                }),
            Err(_) => best,
        }
    })
}

/// ggml weight types the native kernels handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    Q4_1,
    Q8_0,
}

/// A quantized weight matrix, `rows × cols`, repacked for the kernels.
///
/// Row layout (`row_bytes` each, `nb = kpad / 32` blocks):
/// - Q4_1: `kpad / 2` bytes of quants, blocks in pairs: byte `j` of pair `p`
///   holds value `j` of block `2p` in its low nibble and value `j` of block
///   `2p + 1` in its high nibble; then `nb` f16 scales `d`, then `nb` f16
///   mins `m` (value = q·d + m).
/// - Q8_0: `kpad` i8 quants, then `nb` f16 scales (value = q·d).
///
/// Padding blocks have zero quants and scales, so they add nothing.
///
/// With [`Layout::Rows16`] (chosen where the x86 kernels run) rows are
/// stored in groups of 16, interleaved block by block: for each block `b` of
/// the group, the 16 rows' quants so that 32-bit lane `l` of one 64-byte
/// vector holds 4 values of row `l`, then the 16 rows' scales (and mins).
/// One `vpdpbusd` against 4 activation bytes broadcast to every lane then
/// advances 16 rows at once and leaves each row's sum in its own lane: no
/// horizontal reduction per row, no tail for rows of 18 blocks, and a whole
/// group's results leave in one store per token. AVX2 reads each 64-byte
/// vector as two registers of 8 rows.
pub struct QMatrix {
    pub ty: WeightType,
    pub layout: Layout,
    pub rows: usize,
    pub cols: usize,
    pub kpad: usize,
    pub row_bytes: usize,
    data: WeightBytes,
}

/// How a [`QMatrix`] orders its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row after row (Q4_1: blocks in nibble pairs).
    Blocks,
    /// Groups of 16 rows interleaved block by block, for the x86 levels
    /// (rows padded with zeros to a multiple of 16). Per block of a group:
    /// - Q4_1: 4 vectors of 64 bytes, lane `l` of vector `p` holding row
    ///   `l`'s ggml bytes `4p..4p + 4` (values `4p..4p + 4` in the low
    ///   nibbles, `16 + 4p..` in the high ones); 16 f16 scales; 16 f16 mins.
    /// - Q8_0: 8 vectors, lane `l` of vector `v` holding row `l`'s values
    ///   `4v..4v + 4` plus 128 (unsigned, as `vpdpbusd` wants them); 16 f16
    ///   scales.
    Rows16,
}

impl Layout {
    /// The layout the kernels of `level` read.
    pub fn for_level(level: Level) -> Layout {
        match level {
            Level::Avx512 | Level::AvxVnni | Level::Avx2 => Layout::Rows16,
            _ => Layout::Blocks,
        }
    }
}

/// Rows per interleaved group ([`Layout::Rows16`]).
pub const GROUP: usize = 16;

impl QMatrix {
    /// Repacks `rows` rows of `cols` values from ggml's block format, in the
    /// layout of the kernels this CPU runs.
    pub fn from_ggml(ty: WeightType, rows: usize, cols: usize, raw: &[u8]) -> Result<Self> {
        Self::from_ggml_for(level(), ty, rows, cols, raw)
    }

    /// [`QMatrix::from_ggml`] for the kernels of `level`.
    pub fn from_ggml_for(
        level: Level,
        ty: WeightType,
        rows: usize,
        cols: usize,
        raw: &[u8],
    ) -> Result<Self> {
        if !cols.is_multiple_of(QK) {
            bail!("row length {cols} is not a multiple of {QK}");
        }
        let nb_in = cols / QK;
        let kpad = cols.next_multiple_of(KPAD);
        let nb = kpad / QK;
        let (in_block, row_bytes) = match ty {
            WeightType::Q4_1 => (20, kpad / 2 + 4 * nb),
            WeightType::Q8_0 => (34, kpad + 2 * nb),
        };
        if raw.len() != rows * nb_in * in_block {
            bail!(
                "{ty:?} tensor of {rows}x{cols} has {} bytes, expected {}",
                raw.len(),
                rows * nb_in * in_block
            );
        }
        let layout = Layout::for_level(level);
        // Each unit (a row, or a group of 16 rows) repacks on its own.
        let unit_rows = match layout {
            Layout::Blocks => 1,
            Layout::Rows16 => GROUP,
        };
        let repack = |first: usize, dst: &mut [u8]| {
            let n = unit_rows.min(rows - first);
            for l in 0..n {
                let r = first + l;
                let src = &raw[r * nb_in * in_block..(r + 1) * nb_in * in_block];
                for (b, blk) in src.chunks_exact(in_block).enumerate() {
                    let (at, scale) = block_at(layout, ty, nb, l, b);
                    let (d, rest) = blk.split_at(2);
                    dst[scale..scale + 2].copy_from_slice(d);
                    match (ty, layout) {
                        (WeightType::Q4_1, Layout::Blocks) => {
                            // Low nibble: block 2p; high nibble: block 2p + 1.
                            // ggml: byte j holds value j (low) and j + 16 (high).
                            dst[kpad / 2 + 2 * nb + 2 * b..][..2].copy_from_slice(&rest[..2]);
                            let q = &rest[2..];
                            let shift = 4 * (b % 2);
                            for j in 0..QK {
                                let v = if j < 16 { q[j] & 0x0F } else { q[j - 16] >> 4 };
                                dst[at + j] |= v << shift;
                            }
                        }
                        (WeightType::Q4_1, Layout::Rows16) => {
                            dst[scale + 2 * GROUP..][..2].copy_from_slice(&rest[..2]);
                            for p in 0..4 {
                                let o = at + p * 64;
                                dst[o..o + 4].copy_from_slice(&rest[2 + 4 * p..6 + 4 * p]);
                            }
                        }
                        (WeightType::Q8_0, Layout::Blocks) => {
                            dst[at..at + QK].copy_from_slice(rest);
                        }
                        (WeightType::Q8_0, Layout::Rows16) => {
                            for v in 0..QK / 4 {
                                for k in 0..4 {
                                    dst[at + v * 64 + k] = rest[4 * v + k] ^ 0x80;
                                }
                            }
                        }
                    }
                }
            }
        };
        // Units are independent: large matrices repack on every CPU (this is
        // most of a model's load time).
        let unit_bytes = unit_rows * row_bytes;
        let units = rows.div_ceil(unit_rows);
        let mut data = WeightBytes::zeroed(units * unit_bytes);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = units.div_ceil(threads.min(rows.div_ceil(256)).max(1));
        std::thread::scope(|scope| {
            for (i, part) in data.chunks_mut(per * unit_bytes).enumerate() {
                let repack = &repack;
                scope.spawn(move || {
                    for (k, dst) in part.chunks_exact_mut(unit_bytes).enumerate() {
                        repack((i * per + k) * unit_rows, dst);
                    }
                });
            }
        });
        Ok(Self {
            ty,
            layout,
            rows,
            cols,
            kpad,
            row_bytes,
            data,
        })
    }

    /// Row `r`'s bytes ([`Layout::Blocks`] only).
    pub fn row(&self, r: usize) -> &[u8] {
        assert_eq!(self.layout, Layout::Blocks, "rows are interleaved");
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Group `g`'s bytes ([`Layout::Rows16`] only): rows `16g..16g + 16`.
    pub fn group(&self, g: usize) -> &[u8] {
        assert_eq!(self.layout, Layout::Rows16, "rows are not interleaved");
        let bytes = GROUP * self.row_bytes;
        &self.data[g * bytes..(g + 1) * bytes]
    }

    /// Blocks per (padded) row.
    pub fn nb(&self) -> usize {
        self.kpad / QK
    }

    /// Row `r` as f32 (`cols` values), as ggml's `dequantize_row_*` computes it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.nb();
        let (unit, l) = match self.layout {
            Layout::Blocks => (self.row(r), 0),
            Layout::Rows16 => (self.group(r / GROUP), r % GROUP),
        };
        for (b, out) in out[..self.cols].chunks_exact_mut(QK).enumerate() {
            let (at, scale) = block_at(self.layout, self.ty, nb, l, b);
            let d = f16_to_f32(read_u16(&unit[scale..], 0));
            for (j, o) in out.iter_mut().enumerate() {
                *o = match (self.ty, self.layout) {
                    (WeightType::Q4_1, layout) => {
                        let (byte, shift) = match layout {
                            Layout::Blocks => (at + j, 4 * (b % 2)),
                            Layout::Rows16 => (at + (j % 16 / 4) * 64 + j % 4, 4 * (j / 16)),
                        };
                        let m = match layout {
                            Layout::Blocks => read_u16(&unit[self.kpad / 2 + 2 * nb..], b),
                            Layout::Rows16 => read_u16(&unit[scale + 2 * GROUP..], 0),
                        };
                        ((unit[byte] >> shift) & 0x0F) as f32 * d + f16_to_f32(m)
                    }
                    (WeightType::Q8_0, Layout::Blocks) => unit[at + j] as i8 as f32 * d,
                    (WeightType::Q8_0, Layout::Rows16) => {
                        (unit[at + (j / 4) * 64 + j % 4] ^ 0x80) as i8 as f32 * d
                    }
                };
            }
        }
    }
}

/// Where block `b` of row `l` of a unit (a row in [`Layout::Blocks`], a
/// group of 16 rows in [`Layout::Rows16`], whose rows have `nb` blocks)
/// starts: its first quant byte (Q4_1 blocks: the byte of the pair; Rows16:
/// row `l`'s bytes in the block's first vector) and its f16 scale.
fn block_at(layout: Layout, ty: WeightType, nb: usize, l: usize, b: usize) -> (usize, usize) {
    let kpad = nb * QK;
    match (ty, layout) {
        (WeightType::Q4_1, Layout::Blocks) => ((b / 2) * 32, kpad / 2 + 2 * b),
        (WeightType::Q8_0, Layout::Blocks) => (b * QK, kpad + 2 * b),
        // Per block: 256 bytes of quants, 16 scales, 16 mins.
        (WeightType::Q4_1, Layout::Rows16) => (b * 320 + 4 * l, b * 320 + 256 + 2 * l),
        // Per block: 512 bytes of quants, 16 scales.
        (WeightType::Q8_0, Layout::Rows16) => (b * 544 + 4 * l, b * 544 + 512 + 2 * l),
    }
}

#[inline(always)]
pub(crate) fn read_u16(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// Activations of `t` tokens quantized to 8-bit blocks (ggml's Q8_1; Q8_0 is
/// the same without `s`). `d` and `s` hold the f16-rounded values as f32.
#[derive(Default)]
pub struct QActs {
    pub t: usize,
    pub kpad: usize,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// Each block's sum of quants (what `s` is before scaling and rounding):
    /// the [`Layout::Rows16`] Q8_0 kernel stores weights plus 128 and
    /// subtracts `128 · sum`.
    pub sums: Vec<i32>,
}

impl QActs {
    pub fn nb(&self) -> usize {
        self.kpad / QK
    }

    /// Quantizes `t` rows of `k` values (`x` is `t × k`, row-major).
    pub fn quantize(&mut self, x: &[f32], t: usize, k: usize) {
        self.quantize_at(level(), x, t, k)
    }

    /// [`QActs::quantize`] with the kernels of `level` (tests run every level
    /// the CPU supports).
    pub(crate) fn quantize_at(&mut self, level: Level, x: &[f32], t: usize, k: usize) {
        assert_eq!(x.len(), t * k);
        assert!(k.is_multiple_of(QK));
        let kpad = k.next_multiple_of(KPAD);
        let nb = kpad / QK;
        self.t = t;
        self.kpad = kpad;
        self.qs.clear();
        self.qs.resize(t * kpad, 0);
        self.d.clear();
        self.d.resize(t * nb, 0.0);
        self.s.clear();
        self.s.resize(t * nb, 0.0);
        self.sums.clear();
        self.sums.resize(t * nb, 0);
        let dst = QDst {
            qs: self.qs.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            s: self.s.as_mut_ptr(),
            sums: self.sums.as_mut_ptr(),
            kpad,
        };
        // A prompt's tokens quantize on every thread.
        par_for(t, 8, &|tokens: Range<usize>| {
            // SAFETY: the buffers were sized for t tokens above; each call of
            // this closure writes only its own tokens.
            unsafe {
                match level {
                    #[cfg(target_arch = "x86_64")]
                    // The level was detected on this CPU.
                    Level::Avx512 => x86::quantize_avx512(dst, x, tokens, k),
                    #[cfg(target_arch = "x86_64")]
                    // The level was detected on this CPU.
                    Level::AvxVnni | Level::Avx2 => x86::quantize_avx2(dst, x, tokens, k),
                    _ => quantize_rows(dst, x, tokens, k),
                }
            }
        });
    }

    pub fn token_qs(&self, t: usize) -> &[i8] {
        &self.qs[t * self.kpad..(t + 1) * self.kpad]
    }
    pub fn token_d(&self, t: usize) -> &[f32] {
        let nb = self.nb();
        &self.d[t * nb..(t + 1) * nb]
    }
    pub fn token_s(&self, t: usize) -> &[f32] {
        let nb = self.nb();
        &self.s[t * nb..(t + 1) * nb]
    }
}

/// Where [`QActs::quantize`] writes: its buffers, shared by the threads of a
/// parallel quantize, each writing the rows of its own tokens.
#[derive(Clone, Copy)]
pub(crate) struct QDst {
    pub qs: *mut i8,
    pub d: *mut f32,
    pub s: *mut f32,
    pub sums: *mut i32,
    pub kpad: usize,
}
// SAFETY: threads write disjoint tokens' rows (see `QActs::quantize`).
unsafe impl Send for QDst {}
unsafe impl Sync for QDst {}

/// Quantizes the rows `tokens` of `x` (`k` values each) into `dst`.
///
/// # Safety
/// `dst` is valid for those tokens' rows and nothing else accesses them.
#[inline(always)]
pub(crate) unsafe fn quantize_rows(dst: QDst, x: &[f32], tokens: Range<usize>, k: usize) {
    let (kpad, nb) = (dst.kpad, dst.kpad / QK);
    for ti in tokens {
        let row = &x[ti * k..(ti + 1) * k];
        for b in 0..k / QK {
            let xs = &row[b * QK..(b + 1) * QK];
            let q = std::slice::from_raw_parts_mut(dst.qs.add(ti * kpad + b * QK), QK);
            let (d, s, sum) = quantize_block_q8_1(xs, q);
            *dst.d.add(ti * nb + b) = d;
            *dst.s.add(ti * nb + b) = s;
            *dst.sums.add(ti * nb + b) = sum;
        }
    }
}

/// Runs `f` over `0..n` split into one contiguous range per pool thread,
/// when there are at least `min` items per thread (else on the caller).
pub fn par_for(n: usize, min: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let pool = pool::global();
    if n < 2 * min.max(1) || pool.threads() == 1 {
        f(0..n);
        return;
    }
    pool.run(&|part, parts| {
        let (lo, hi) = (n * part / parts, n * (part + 1) / parts);
        if lo < hi {
            f(lo..hi);
        }
    });
}

/// One block as ggml's (and candle's) `quantize_row_q8_1`; returns `(d, s)`
/// rounded through f16, and the sum of the quants.
#[inline(always)]
fn quantize_block_q8_1(xs: &[f32], q: &mut [i8]) -> (f32, f32, i32) {
    let mut amax = 0f32;
    for &x in xs {
        amax = amax.max(x.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &x) in q.iter_mut().zip(xs) {
        *q = (x * id).round() as i8;
        sum += *q as i32;
    }
    let d16 = f32_to_f16(d);
    let s16 = f32_to_f16(f16_to_f32(f32_to_f16(sum as f32)) * f16_to_f32(d16));
    (f16_to_f32(d16), f16_to_f32(s16), sum)
}

/// IEEE half → single, without branches (so loops of it vectorise: the KV
/// cache is read through it where there is no F16C).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let em = h & 0x7fff;
    // Normal numbers: rebias the exponent (15 → 127); infinities and NaNs
    // (exponent 31) rebias once more, to 255.
    let mut bits = (em << 13) + (112 << 23);
    if em >= 0x7c00 {
        bits += 112 << 23;
    }
    // Zeros and subnormals: the mantissa times 2^-24, exactly.
    let f = if em < 0x0400 {
        em as f32 * (1.0 / 16_777_216.0)
    } else {
        f32::from_bits(bits)
    };
    f32::from_bits(f.to_bits() | (h & 0x8000) << 16)
}

/// Single → IEEE half, rounding to nearest even (as the `half` crate does).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 255 {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 112;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let hm = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let hm = if rem > half || (rem == half && hm & 1 == 1) {
            hm + 1
        } else {
            hm
        };
        return sign | hm as u16;
    }
    let mut h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Where a matmul writes: `out[t * stride + r]` for token `t`, row `r`.
#[derive(Clone, Copy)]
pub struct Out {
    pub ptr: *mut f32,
    pub stride: usize,
}
// SAFETY: parts of a parallel matmul write disjoint rows.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Computes rows `rows` of `w · acts` for every token of `acts`.
///
/// # Safety
/// `out` must be valid for writes at `t * stride + r` for every token `t` and
/// row `r` in `rows`, and nothing else may access those elements meanwhile.
pub unsafe fn matmul_rows(level: Level, w: &QMatrix, rows: Range<usize>, acts: &QActs, out: Out) {
    assert!(rows.end <= w.rows);
    assert_eq!(
        w.kpad, acts.kpad,
        "activation length does not match the weights"
    );
    // Interleaved rows are read by the x86 kernels alone; rows in the block
    // layout by the others (on x86, the scalar ones).
    assert!(
        w.layout == Layout::Blocks || matches!(level, Level::Avx512 | Level::AvxVnni | Level::Avx2),
        "{level:?} kernels cannot read {:?} weights",
        w.layout
    );
    assert_eq!(acts.sums.len(), acts.t * acts.nb(), "activations lack sums");
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if w.layout == Layout::Rows16 => x86::matmul_avx512(w, rows, acts, out),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni if w.layout == Layout::Rows16 => x86::matmul_avxvnni(w, rows, acts, out),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if w.layout == Layout::Rows16 => x86::matmul_avx2(w, rows, acts, out),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => aarch64::matmul_neon(w, rows, acts, out),
        _ => scalar::matmul(w, rows, acts, out),
    }
}

/// One matrix of a (possibly fused) parallel matmul.
pub struct MatJob<'a> {
    pub w: &'a QMatrix,
    pub out: Out,
}

/// Rows are handed out in multiples of this (cache lines of output, whole
/// interleaved groups).
const ROW_GRAIN: usize = GROUP;

/// Pieces of work per pool thread in a parallel matmul, at most. Threads take
/// pieces from a shared counter rather than a fixed share each, so a thread
/// the OS preempts (an HTTP write, the client reading its stream, another
/// process) holds up one small piece while the others take the rest, instead
/// of stalling the whole pass for as long as it is off its CPU. Toward the
/// end pieces shrink ([`next_piece`]), so the threads finish together.
const PIECES_PER_THREAD: usize = 4;

/// Claims the next piece of `grains` from `next` for one of `threads`
/// threads: at most `cap` grains, and no more than a `2 · threads`-th of
/// what is left, so the last pieces are single grains and no thread waits at
/// the end for more than one (guided scheduling). `None` when all are taken.
fn next_piece(
    next: &AtomicUsize,
    grains: usize,
    threads: usize,
    cap: usize,
) -> Option<Range<usize>> {
    let mut at = next.load(Ordering::Relaxed);
    loop {
        if at >= grains {
            return None;
        }
        let size = ((grains - at) / (2 * threads)).clamp(1, cap);
        match next.compare_exchange_weak(at, at + size, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(at..at + size),
            Err(now) => at = now,
        }
    }
}

/// `w · acts` for several matrices sharing the same input (q/k/v, gate/up),
/// their rows split across the worker pool in one dispatch.
///
/// # Safety
/// As [`matmul_rows`], for every job's rows `0..w.rows`.
pub unsafe fn par_matmul(jobs: &[MatJob<'_>], acts: &QActs) {
    let level = level();
    let total: usize = jobs.iter().map(|j| j.w.rows).sum();
    let pool = pool::global();
    let (grains, threads) = (total.div_ceil(ROW_GRAIN), pool.threads());
    let cap = (grains / (threads * PIECES_PER_THREAD)).max(1);
    let next = AtomicUsize::new(0);
    let work = |_part: usize, _parts: usize| {
        while let Some(piece) = next_piece(&next, grains, threads, cap) {
            let (lo, hi) = (piece.start * ROW_GRAIN, (piece.end * ROW_GRAIN).min(total));
            let mut base = 0;
            for job in jobs {
                let (a, b) = (lo.max(base), hi.min(base + job.w.rows));
                if a < b {
                    // SAFETY: pieces cover disjoint rows; the caller vouches for `out`.
                    unsafe { matmul_rows(level, job.w, a - base..b - base, acts, job.out) };
                }
                base += job.w.rows;
            }
        }
    };
    // Tiny matmuls are not worth waking the workers.
    if total * acts.t * acts.kpad < 32 * 1024 {
        work(0, 1);
    } else {
        pool.run(&work);
    }
}

/// `Σ a[i]·b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level was detected on this CPU.
        Level::Avx512 | Level::AvxVnni | Level::Avx2 => unsafe { x86::dot_f32_avx2(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// SwiGLU's `g[i] = silu(g[i]) · u[i]`, `silu(x) = x / (1 + e^-x)`.
///
/// A decoding step of 4 sequences takes ~180k exponentials here (ffn width ×
/// tokens × layers); one libm call each cost ~6% of the step.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    silu_mul_at(level(), g, u)
}

/// [`silu_mul`] at a given level (tests run every level the CPU supports).
pub(crate) fn silu_mul_at(level: Level, g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::Avx512 => unsafe { x86::silu_mul_avx512(g, u) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::AvxVnni | Level::Avx2 => unsafe { x86::silu_mul_avx2(g, u) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::Neon => unsafe { aarch64::silu_mul_neon(g, u) },
        _ => scalar::silu_mul(g, u),
    }
}

/// `out[i] = e^((x[i] - shift) · scale)`: a softmax's unnormalised weights
/// (`shift` the largest logit, `scale` 1 / temperature). A logit of −∞ (a
/// token ruled out) weighs exactly 0, never the tiny `e^-87` the vector
/// exponentials clamp to, so it can never be drawn.
///
/// Sampling at a temperature computes one per vocabulary entry per token
/// (49k for the default model): one libm call each cost ~0.2 ms per token.
pub fn exp_shifted(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    exp_shifted_at(level(), x, shift, scale, out)
}

/// [`exp_shifted`] at a given level (tests run every level the CPU supports).
pub(crate) fn exp_shifted_at(level: Level, x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::Avx512 => unsafe { x86::exp_shifted_avx512(x, shift, scale, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::AvxVnni | Level::Avx2 => unsafe { x86::exp_shifted_avx2(x, shift, scale, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller passes a level detected on this CPU.
        Level::Neon => unsafe { aarch64::exp_shifted_neon(x, shift, scale, out) },
        _ => scalar::exp_shifted(x, shift, scale, out),
    }
}

/// `y[i] += a · x[i]`.
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level was detected on this CPU.
        Level::Avx512 | Level::AvxVnni | Level::Avx2 => unsafe { x86::axpy_f32_avx2(y, a, x) },
        _ => scalar::axpy_f32(y, a, x),
    }
}

/// One query's attention for the heads that share one KV head: for each of
/// the `group = q.len() / hd` heads, `out = softmax(q·K · scale) · V` over the
/// first `n = scores.len() / group` cached positions, where position `j`'s key
/// and value start at `j * stride + off` of `keys` and `values` (f16 bits). `q` and `out`
/// hold the heads one after another; `scores` is scratch. Doing a group's
/// heads together reads each cached vector once instead of once per head.
///
/// `lse[h]` gets head `h`'s log-sum-exp of the scaled scores, `ln Σ_j e^s_j`:
/// what [`merge_attention`] weighs the attention of separate stretches of
/// positions by.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    hd: usize,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    off: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    attend_at(
        level(),
        hd,
        q,
        keys,
        values,
        stride,
        off,
        scale,
        scores,
        out,
        lse,
    )
}

/// [`attend`] at a given level (tests run every level the CPU supports).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_at(
    level: Level,
    hd: usize,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    off: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let group = q.len() / hd;
    assert!(group >= 1 && q.len() == group * hd && out.len() == q.len());
    assert_eq!(lse.len(), group);
    assert!(scores.len().is_multiple_of(group));
    let n = scores.len() / group;
    assert!(n == 0 || ((n - 1) * stride + off + hd <= keys.len().min(values.len())));
    macro_rules! grouped {
        ($($f:ident)::+) => {
            match group {
                1 => lse.copy_from_slice(&$($f)::+::<1>(q, keys, values, stride, off, scale, scores, out)),
                2 => lse.copy_from_slice(&$($f)::+::<2>(q, keys, values, stride, off, scale, scores, out)),
                3 => lse.copy_from_slice(&$($f)::+::<3>(q, keys, values, stride, off, scale, scores, out)),
                4 => lse.copy_from_slice(&$($f)::+::<4>(q, keys, values, stride, off, scale, scores, out)),
                _ => {
                    // Larger groups: one head at a time.
                    for (h, (qh, oh)) in
                        q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate()
                    {
                        [lse[h]] = $($f)::+::<1>(
                            qh,
                            keys,
                            values,
                            stride,
                            off,
                            scale,
                            &mut scores[h * n..(h + 1) * n],
                            oh,
                        );
                    }
                }
            }
        };
    }
    match (level, hd) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        (Level::Avx512, 64) => unsafe { grouped!(x86::attend64_avx512) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a level detected on this CPU.
        (Level::AvxVnni | Level::Avx2, 64) => unsafe { grouped!(x86::attend64_avx2) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller passes a level detected on this CPU.
        (Level::Neon, 64) => unsafe { grouped!(aarch64::attend64_neon) },
        (_, 64) => grouped!(scalar::attend64),
        _ => {
            let mut kf = vec![0f32; hd];
            for (h, (qh, oh)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
                let scores = &mut scores[h * n..(h + 1) * n];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    let at = j * stride + off;
                    for (f, &k) in kf.iter_mut().zip(&keys[at..at + hd]) {
                        *f = f16_to_f32(k);
                    }
                    *s = dot_f32(qh, &kf) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                oh.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let at = j * stride + off;
                    for (f, &v) in kf.iter_mut().zip(&values[at..at + hd]) {
                        *f = f16_to_f32(v);
                    }
                    axpy_f32(oh, p / sum, &kf);
                }
                lse[h] = max + sum.ln();
            }
        }
    }
}

/// Merges the attention of one query's heads over separate stretches of
/// positions into the attention over all of them: `parts[p]` holds the
/// heads' outputs (`hd` each) over stretch `p` and `lses[p]` their
/// log-sum-exps ([`attend`]). Each stretch's softmax was normalised by its
/// own sum; weighing its output by its share of the total sum,
/// `e^(lse_p − lse)`, gives the softmax over the union.
pub fn merge_attention(hd: usize, parts: &[&[f32]], lses: &[&[f32]], out: &mut [f32]) {
    assert_eq!(parts.len(), lses.len());
    for (h, o) in out.chunks_exact_mut(hd).enumerate() {
        let max = lses.iter().map(|l| l[h]).fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = lses.iter().map(|l| (l[h] - max).exp()).sum();
        o.fill(0.0);
        for (part, l) in parts.iter().zip(lses) {
            axpy_f32(o, (l[h] - max).exp() / total, &part[h * hd..(h + 1) * hd]);
        }
    }
}

#[cfg(test)]
mod tests;
