//! aarch64 Advanced SIMD (NEON) kernels: integer block dot products with
//! `smull` + pairwise adds (baseline NEON, no `dotprod` needed), f32 scaling
//! per block in the same order as the scalar kernels.

use std::arch::aarch64::*;
use std::ops::Range;

use super::{f16_to_f32, read_u16, Out, QActs, QMatrix, WeightType, QK};

/// # Safety
/// The CPU supports NEON; `out` as [`super::matmul_rows`].
#[target_feature(enable = "neon")]
pub unsafe fn matmul_neon(w: &QMatrix, rows: Range<usize>, acts: &QActs, out: Out) {
    for r in rows {
        let row = w.row(r);
        for t in 0..acts.t {
            let v = match w.ty {
                WeightType::Q4_1 => dot_q4_1(w, row, acts, t),
                WeightType::Q8_0 => dot_q8_0(w, row, acts, t),
            };
            *out.ptr.add(t * out.stride + r) = v;
        }
    }
}

/// Σ w[i]·a[i] over 16 signed bytes.
#[inline]
#[target_feature(enable = "neon")]
fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
    let hi = vmull_high_s8(w, a);
    vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_q4_1(w: &QMatrix, row: &[u8], acts: &QActs, t: usize) -> f32 {
    let nb = w.nb();
    let (qs, scales) = row.split_at(w.kpad / 2);
    let a = acts.token_qs(t).as_ptr();
    let ad = acts.token_d(t);
    let a_s = acts.token_s(t);
    let m4 = vdupq_n_u8(0x0F);
    let mut sumf = 0f32;
    for p in 0..nb / 2 {
        let q = qs.as_ptr().add(32 * p);
        let x0 = vld1q_u8(q);
        let x1 = vld1q_u8(q.add(16));
        let ap = a.add(64 * p);
        let wa0 = vreinterpretq_s8_u8(vandq_u8(x0, m4));
        let wa1 = vreinterpretq_s8_u8(vandq_u8(x1, m4));
        let wb0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(x0));
        let wb1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(x1));
        let ia = vaddvq_s32(vaddq_s32(
            dot16(wa0, vld1q_s8(ap)),
            dot16(wa1, vld1q_s8(ap.add(16))),
        ));
        let ib = vaddvq_s32(vaddq_s32(
            dot16(wb0, vld1q_s8(ap.add(32))),
            dot16(wb1, vld1q_s8(ap.add(48))),
        ));
        for (b, sumi) in [(2 * p, ia), (2 * p + 1, ib)] {
            let d = f16_to_f32(read_u16(scales, b));
            let m = f16_to_f32(read_u16(scales, nb + b));
            sumf += sumi as f32 * d * ad[b] + m * a_s[b];
        }
    }
    sumf
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_q8_0(w: &QMatrix, row: &[u8], acts: &QActs, t: usize) -> f32 {
    let nb = w.nb();
    let (qs, scales) = row.split_at(w.kpad);
    let a = acts.token_qs(t).as_ptr();
    let ad = acts.token_d(t);
    let mut sumf = 0f32;
    for b in 0..nb {
        let q = qs.as_ptr().add(QK * b) as *const i8;
        let ab = a.add(QK * b);
        let sumi = vaddvq_s32(vaddq_s32(
            dot16(vld1q_s8(q), vld1q_s8(ab)),
            dot16(vld1q_s8(q.add(16)), vld1q_s8(ab.add(16))),
        ));
        sumf += sumi as f32 * f16_to_f32(read_u16(scales, b)) * ad[b];
    }
    sumf
}
