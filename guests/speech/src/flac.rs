//! A small streaming FLAC encoder for 16-bit mono: fixed blocks of 4096
//! samples, each channel coded with the best FLAC fixed predictor (order
//! 0–4) and one Rice partition, or verbatim when that is smaller. It compresses
//! speech to roughly half of PCM, needs no C library, and emits each block as
//! soon as it is full, so FLAC streams like PCM does.
//!
//! Streamed, the total sample count and MD5 in STREAMINFO are 0, which the
//! format defines as "unknown".

const BLOCK: usize = 4096;

pub struct FlacEncoder {
    sample_rate: u32,
    pending: Vec<i16>,
    frame: u64,
    header_sent: bool,
}

impl FlacEncoder {
    pub fn new(sample_rate: u32) -> Self {
        FlacEncoder {
            sample_rate,
            pending: Vec::new(),
            frame: 0,
            header_sent: false,
        }
    }

    /// Bytes for every full block now available (and the stream header first).
    pub fn push(&mut self, samples: &[i16]) -> Vec<u8> {
        let mut out = self.header();
        self.pending.extend_from_slice(samples);
        let full = self.pending.len() / BLOCK * BLOCK;
        let blocks: Vec<i16> = self.pending.drain(..full).collect();
        for block in blocks.chunks(BLOCK) {
            self.frame_into(block, &mut out);
        }
        out
    }

    /// The last, partial block.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.header();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.frame_into(&rest, &mut out);
        }
        out
    }

    fn header(&mut self) -> Vec<u8> {
        if self.header_sent {
            return Vec::new();
        }
        self.header_sent = true;
        let mut w = BitWriter::default();
        w.bytes(b"fLaC");
        w.bits(1, 1); // last metadata block
        w.bits(0, 7); // STREAMINFO
        w.bits(34, 24);
        w.bits(BLOCK as u64, 16); // min block size
        w.bits(BLOCK as u64, 16); // max block size
        w.bits(0, 24); // min frame size: unknown
        w.bits(0, 24); // max frame size: unknown
        w.bits(u64::from(self.sample_rate), 20);
        w.bits(0, 3); // channels - 1
        w.bits(15, 5); // bits per sample - 1
        w.bits(0, 36); // total samples: unknown
        for _ in 0..16 {
            w.bits(0, 8); // MD5: unknown
        }
        w.into_bytes()
    }

    fn frame_into(&mut self, block: &[i16], out: &mut Vec<u8>) {
        let mut w = BitWriter::default();
        w.bits(0b11_1111_1111_1110, 14); // sync
        w.bits(0, 1); // reserved
        w.bits(0, 1); // fixed block size
        let short = block.len() != BLOCK;
        w.bits(if short { 0b0111 } else { 0b1100 }, 4); // 16-bit size at end / 4096
        w.bits(0, 4); // sample rate: from STREAMINFO
        w.bits(0, 4); // mono
        w.bits(0b100, 3); // 16 bits per sample
        w.bits(0, 1); // reserved
        utf8_number(&mut w, self.frame);
        if short {
            w.bits(block.len() as u64 - 1, 16);
        }
        let crc = crc8(&w.buf);
        w.bits(u64::from(crc), 8);
        subframe(&mut w, block);
        w.align();
        let crc = crc16(&w.buf);
        w.bits(u64::from(crc), 16);
        out.extend(w.into_bytes());
        self.frame += 1;
    }
}

/// Frame numbers are coded like UTF-8 code points (up to 36 bits).
fn utf8_number(w: &mut BitWriter, n: u64) {
    if n < 0x80 {
        w.bits(n, 8);
        return;
    }
    let mut len = 2;
    while n >= 1u64 << (5 * len + 1) {
        len += 1;
    }
    let lead_bits = 7 - len;
    let lead = (0xffu64 << (8 - len)) & 0xff;
    w.bits(lead | (n >> (6 * (len - 1))) & ((1 << lead_bits) - 1), 8);
    for i in (0..len - 1).rev() {
        w.bits(0x80 | ((n >> (6 * i)) & 0x3f), 8);
    }
}

/// Residuals of the fixed predictor of `order` (from sample `order` on).
fn residuals(x: &[i32], order: usize) -> Vec<i32> {
    (order..x.len())
        .map(|i| match order {
            0 => x[i],
            1 => x[i] - x[i - 1],
            2 => x[i] - 2 * x[i - 1] + x[i - 2],
            3 => x[i] - 3 * x[i - 1] + 3 * x[i - 2] - x[i - 3],
            _ => x[i] - 4 * x[i - 1] + 6 * x[i - 2] - 4 * x[i - 3] + x[i - 4],
        })
        .collect()
}

fn zigzag(r: i32) -> u64 {
    ((r << 1) ^ (r >> 31)) as u32 as u64
}

/// Bits to Rice-code `res` with parameter `k`.
fn rice_bits(res: &[i32], k: u32) -> u64 {
    res.iter()
        .map(|r| (zigzag(*r) >> k) + 1 + u64::from(k))
        .sum()
}

fn best_rice(res: &[i32]) -> (u32, u64) {
    (0..15)
        .map(|k| (k, rice_bits(res, k)))
        .min_by_key(|(_, bits)| *bits)
        .unwrap_or((0, 0))
}

fn subframe(w: &mut BitWriter, block: &[i16]) {
    let x: Vec<i32> = block.iter().map(|s| i32::from(*s)).collect();
    let verbatim_bits = 16 * x.len() as u64;
    let mut best: Option<(usize, u32, u64, Vec<i32>)> = None;
    for order in 0..=4.min(x.len()) {
        let res = residuals(&x, order);
        let (k, bits) = best_rice(&res);
        let total = bits + 16 * order as u64 + 10;
        if best.as_ref().is_none_or(|b| total < b.2) {
            best = Some((order, k, total, res));
        }
    }
    match best {
        Some((order, k, total, res)) if total < verbatim_bits => {
            w.bits(0, 1);
            w.bits(0b001000 | order as u64, 6); // FIXED, order
            w.bits(0, 1); // no wasted bits
            for s in &x[..order] {
                w.bits(*s as u16 as u64, 16);
            }
            w.bits(0, 2); // Rice, 4-bit parameters
            w.bits(0, 4); // partition order 0
            w.bits(u64::from(k), 4);
            for r in res {
                let u = zigzag(r);
                w.unary(u >> k);
                w.bits(u & ((1 << k) - 1), k);
            }
        }
        _ => {
            w.bits(0, 1);
            w.bits(0b000001, 6); // VERBATIM
            w.bits(0, 1);
            for s in &x {
                w.bits(*s as u16 as u64, 16);
            }
        }
    }
}

#[derive(Default)]
struct BitWriter {
    buf: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u64, count: u32) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.buf.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    /// `q` zeros then a one.
    fn unary(&mut self, mut q: u64) {
        while q >= 32 {
            self.bits(0, 32);
            q -= 32;
        }
        self.bits(1, q as u32 + 1);
    }

    fn bytes(&mut self, b: &[u8]) {
        for byte in b {
            self.bits(u64::from(*byte), 8);
        }
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.bits(0, 8 - self.n);
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.align();
        self.buf
    }
}

fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for b in data {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (claxon::metadata::StreamInfo, Vec<i32>) {
        let mut reader = claxon::FlacReader::new(std::io::Cursor::new(bytes)).unwrap();
        let info = reader.streaminfo();
        let samples = reader.samples().collect::<Result<Vec<_>, _>>().unwrap();
        (info, samples)
    }

    #[test]
    fn round_trips_through_a_standard_decoder() {
        // A chirp with noise-like detail, silence, full-scale edges, and a
        // length that ends in a partial block and needs multi-byte frame numbers.
        let n = BLOCK * 130 + 1234;
        let mut samples: Vec<i16> = (0..n)
            .map(|i| {
                let t = i as f32 / 22050.0;
                ((t * t * 3000.0).sin() * 20000.0 + ((i * 7919) % 201) as f32 - 100.0) as i16
            })
            .collect();
        samples[5000..9000].fill(0);
        samples[100] = i16::MAX;
        samples[101] = i16::MIN;
        let mut enc = FlacEncoder::new(22050);
        let mut bytes = Vec::new();
        // Pushed in uneven pieces, as sentences arrive.
        for piece in samples.chunks(10_007) {
            bytes.extend(enc.push(piece));
        }
        bytes.extend(enc.finish());
        let (info, decoded) = decode(&bytes);
        assert_eq!(info.sample_rate, 22050);
        assert_eq!(info.channels, 1);
        assert_eq!(info.bits_per_sample, 16);
        let want: Vec<i32> = samples.iter().map(|s| i32::from(*s)).collect();
        assert_eq!(decoded.len(), want.len());
        assert!(decoded == want, "samples differ");
        assert!(
            bytes.len() < samples.len() * 2,
            "no compression: {}",
            bytes.len()
        );
    }

    #[test]
    fn tiny_and_empty_streams_decode() {
        let mut enc = FlacEncoder::new(16000);
        let mut bytes = enc.push(&[1, 2, 3]);
        bytes.extend(enc.finish());
        assert_eq!(decode(&bytes).1, vec![1, 2, 3]);
        let (info, samples) = decode(&FlacEncoder::new(16000).finish());
        assert_eq!((info.sample_rate, samples.len()), (16000, 0));
    }
}
