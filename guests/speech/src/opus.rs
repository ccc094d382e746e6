//! Ogg Opus (RFC 7845) for `response_format: "opus"`: the voice's samples are
//! resampled to a rate Opus codes at ([`crate::resample`]), coded in 20 ms
//! frames by `opus-pure` (a pure-Rust Opus encoder, BSD-3-Clause), and framed
//! into Ogg pages here, so that every sentence's packets leave on pages of
//! their own as soon as it is spoken.
//!
//! The stream is gapless: `OpusHead`'s pre-skip is the encoder's delay, and
//! the last page's granule position trims the padding off the end (RFC 7845
//! §4.4), so players decode exactly the samples that went in.

use crate::resample::Resampler;
use opus_pure::{Application, OpusEncoder, OpusHead, MAX_PACKET_BYTES};

/// Rates Opus codes at. Other voice rates are resampled to the next one up.
const OPUS_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];
/// Plenty for speech in one channel.
const BITRATE: i32 = 32_000;
/// 0–10 (the crate's default is 9). Measured in the guest on the 2-core
/// machine: 9 spends ~0.055 s per second of audio, 5 ~0.03 s, against the
/// voice's ~0.11 s of synthesis, and it delays each sentence's audio.
const COMPLEXITY: i32 = 5;
/// Ogg granule positions count 48 kHz samples, whatever the coding rate.
const GRANULE_RATE: u64 = 48_000;
const SERIAL: u32 = 0x5350_4450; // "SPDP"
const VENDOR: &str = "sandpiper (opus-pure)";

/// Page header flags.
const BOS: u8 = 0x02;
const EOS: u8 = 0x04;

pub struct OggOpusEncoder {
    resampler: Option<Resampler>,
    encoder: OpusEncoder,
    /// The coding rate, and 20 ms of it.
    rate: u32,
    frame: usize,
    input_rate: u32,
    pre_skip: u16,
    /// Coding-rate samples not yet coded (less than a frame between calls).
    pending: Vec<f32>,
    /// Coding-rate samples of real audio, and of everything coded.
    audio: u64,
    coded: u64,
    pages: OggPages,
    header_sent: bool,
    packet: Vec<u8>,
}

/// The coding rate for a voice's rate.
pub fn coding_rate(voice_rate: u32) -> u32 {
    OPUS_RATES
        .into_iter()
        .find(|r| *r >= voice_rate)
        .unwrap_or(48_000)
}

impl OggOpusEncoder {
    pub fn new(sample_rate: u32) -> OggOpusEncoder {
        let rate = coding_rate(sample_rate);
        let mut encoder =
            OpusEncoder::new(rate as i32, 1, Application::Audio).expect("a valid Opus rate");
        encoder.bitrate_bps = BITRATE;
        encoder.complexity = COMPLEXITY;
        // The voice's samples reach us as 16-bit.
        encoder.lsb_depth = 16;
        let pre_skip = OpusHead::for_encoder(&encoder, sample_rate).pre_skip;
        OggOpusEncoder {
            resampler: (rate != sample_rate).then(|| Resampler::new(sample_rate, rate)),
            encoder,
            rate,
            frame: rate as usize / 50,
            input_rate: sample_rate,
            pre_skip,
            pending: Vec::new(),
            audio: 0,
            coded: 0,
            pages: OggPages::new(SERIAL),
            header_sent: false,
            packet: vec![0; MAX_PACKET_BYTES],
        }
    }

    /// The headers first, then pages for every whole frame these samples
    /// complete.
    pub fn push(&mut self, samples: &[i16]) -> Vec<u8> {
        let mut out = self.headers();
        let input: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let resampled = match &mut self.resampler {
            Some(r) => r.push(&input),
            None => input,
        };
        self.audio += resampled.len() as u64;
        self.pending.extend(resampled);
        let before = self.granule(self.coded);
        let packets = self.code_frames();
        let after = self.granule(self.coded);
        self.pages.write(&mut out, &packets, before, after, false);
        out
    }

    /// The rest: the resampler's tail, silence to flush the encoder's delay,
    /// and the last page, whose granule position ends the audio exactly.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.headers();
        if let Some(r) = &mut self.resampler {
            let tail = r.finish();
            self.audio += tail.len() as u64;
            self.pending.extend(tail);
        }
        let delay = u64::from(self.pre_skip) * u64::from(self.rate) / GRANULE_RATE;
        let needed = (self.audio + delay).max(self.coded + 1);
        let frame = self.frame as u64;
        let padded = needed.div_ceil(frame) * frame;
        let queued = self.coded + self.pending.len() as u64;
        self.pending
            .resize(self.pending.len() + (padded - queued) as usize, 0.0);
        let before = self.granule(self.coded);
        let packets = self.code_frames();
        let end = u64::from(self.pre_skip) + self.audio * GRANULE_RATE / u64::from(self.rate);
        self.pages.write(&mut out, &packets, before, end, true);
        out
    }

    fn granule(&self, coded: u64) -> u64 {
        coded * GRANULE_RATE / u64::from(self.rate)
    }

    fn code_frames(&mut self) -> Vec<Vec<u8>> {
        let whole = self.pending.len() / self.frame * self.frame;
        let mut packets = Vec::new();
        for frame in self.pending[..whole].chunks(self.frame) {
            let n = self
                .encoder
                .encode(frame, self.frame, &mut self.packet)
                .expect("a whole mono frame at the coding rate");
            packets.push(self.packet[..n].to_vec());
        }
        self.pending.drain(..whole);
        self.coded += whole as u64;
        packets
    }

    fn headers(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.header_sent {
            return out;
        }
        self.header_sent = true;
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&self.input_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family: mono/stereo
        self.pages.page(&mut out, &[&head], 0, BOS);
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
        tags.extend_from_slice(VENDOR.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
        self.pages.page(&mut out, &[&tags], 0, 0);
        out
    }
}

/// Ogg framing (RFC 3533) of whole packets: no packet spans pages.
pub struct OggPages {
    serial: u32,
    sequence: u32,
}

/// A packet's lacing values: 255s, then the remainder (0 if none).
pub fn lacing(len: usize) -> Vec<u8> {
    let mut l = vec![255u8; len / 255];
    l.push((len % 255) as u8);
    l
}

/// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, zero start and end.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in bytes {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl OggPages {
    pub fn new(serial: u32) -> OggPages {
        OggPages {
            serial,
            sequence: 0,
        }
    }

    /// 20 ms packets on as few pages as the 255-entry lacing table allows.
    /// Granule positions count 48 kHz samples from `from` (before these
    /// packets), 960 a packet; the last page gets `end` (and EOS when `last`).
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        packets: &[Vec<u8>],
        from: u64,
        end: u64,
        last: bool,
    ) {
        let mut done = from;
        let mut start = 0;
        let mut lacing_values = 0;
        for (i, p) in packets.iter().enumerate() {
            let n = lacing(p.len()).len();
            if lacing_values + n > 255 {
                let page: Vec<&[u8]> = packets[start..i].iter().map(Vec::as_slice).collect();
                done += 960 * (i - start) as u64;
                self.page(out, &page, done.min(end), 0);
                start = i;
                lacing_values = 0;
            }
            lacing_values += n;
        }
        if start < packets.len() || last {
            let page: Vec<&[u8]> = packets[start..].iter().map(Vec::as_slice).collect();
            self.page(out, &page, end, if last { EOS } else { 0 });
        }
    }

    /// One page of whole packets.
    pub fn page(&mut self, out: &mut Vec<u8>, packets: &[&[u8]], granule: u64, flags: u8) {
        let mut table: Vec<u8> = packets.iter().flat_map(|p| lacing(p.len())).collect();
        if table.is_empty() {
            // An empty page (an EOS with nothing left) still needs one entry.
            table.push(0);
        }
        assert!(table.len() <= 255, "too many packets for one Ogg page");
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0); // version
        out.push(flags);
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled in below
        out.push(table.len() as u8);
        out.extend_from_slice(&table);
        for p in packets {
            out.extend_from_slice(p);
        }
        let crc = crc32(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opus_pure::{OggOpusReader, Trim, MAX_PACKET_SAMPLES};

    /// A page: (flags, granule, sequence, packets), checked as it is parsed.
    fn parse_pages(mut bytes: &[u8]) -> Vec<(u8, u64, u32, Vec<Vec<u8>>)> {
        let mut pages = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(&bytes[..4], b"OggS");
            let segments = bytes[26] as usize;
            let table = &bytes[27..27 + segments];
            let body: usize = table.iter().map(|&l| l as usize).sum();
            let len = 27 + segments + body;
            let mut zeroed = bytes[..len].to_vec();
            zeroed[22..26].fill(0);
            let crc = u32::from_le_bytes(bytes[22..26].try_into().unwrap());
            assert_eq!(crc32(&zeroed), crc, "page CRC");
            let mut packets = Vec::new();
            let (mut at, mut current) = (27 + segments, Vec::new());
            for &l in table {
                current.extend_from_slice(&bytes[at..at + l as usize]);
                at += l as usize;
                if l < 255 {
                    packets.push(std::mem::take(&mut current));
                }
            }
            assert!(current.is_empty(), "packets never span pages here");
            pages.push((
                bytes[5],
                u64::from_le_bytes(bytes[6..14].try_into().unwrap()),
                u32::from_le_bytes(bytes[18..22].try_into().unwrap()),
                packets,
            ));
            bytes = &bytes[len..];
        }
        pages
    }

    #[test]
    fn lacing_and_crc() {
        assert_eq!(lacing(0), vec![0]);
        assert_eq!(lacing(80), vec![80]);
        assert_eq!(lacing(255), vec![255, 0]);
        assert_eq!(lacing(600), vec![255, 255, 90]);
        // The check value of CRC-32/CKSUM (0x765e7680) without its final
        // inversion, which Ogg leaves out.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn large_batches_split_into_pages_with_running_granules() {
        let mut pages = OggPages::new(7);
        let packets: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 300]).collect();
        let mut out = Vec::new();
        pages.write(&mut out, &packets, 0, 300 * 960, true);
        let parsed = parse_pages(&out);
        // 300-byte packets take two lacing values: 127 fit on a page.
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed.iter().map(|p| p.3.len()).collect::<Vec<_>>(),
            [127, 127, 46]
        );
        assert_eq!(
            parsed.iter().map(|p| p.1).collect::<Vec<_>>(),
            [127 * 960, 254 * 960, 300 * 960]
        );
        assert_eq!(parsed.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 0, EOS]);
        assert_eq!(parsed.iter().map(|p| p.2).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(parsed[1].3[0], vec![127u8; 300]);
    }

    fn sentence(seconds: f64, freq: f64) -> Vec<i16> {
        (0..(22050.0 * seconds) as usize)
            .map(|i| {
                (12000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 22050.0).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn sentences_stream_as_whole_pages_and_decode_to_the_same_length() {
        let mut enc = OggOpusEncoder::new(22050);
        let mut stream = Vec::new();
        let (mut input, mut sent) = (0, 0);
        for (seconds, freq) in [(1.3, 300.0), (0.7, 800.0), (2.1, 440.0)] {
            let s = sentence(seconds, freq);
            input += s.len();
            let chunk = enc.push(&s);
            // Each sentence's audio leaves at once, as whole pages: less than
            // a frame (480 samples at 24 kHz) and the filter's reach wait.
            sent += parse_pages(&chunk)
                .iter()
                .filter(|p| p.1 > 0)
                .map(|p| p.3.len())
                .sum::<usize>();
            let at_24k = input * 160 / 147;
            assert!(
                sent * 480 + 480 + 30 > at_24k,
                "{sent} packets for {at_24k} samples"
            );
            stream.extend(chunk);
        }
        stream.extend(enc.finish());
        let pages = parse_pages(&stream);
        assert_eq!(pages[0].0, BOS);
        assert_eq!(pages.last().unwrap().0, EOS);
        assert!(pages
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[0].2 + 1 == w[1].2));

        // Decoded (by the crate's own demuxer and decoder), with pre-skip and
        // end trim applied, it is exactly as long as the input at 48 kHz.
        let mut reader = OggOpusReader::new(std::io::Cursor::new(&stream)).unwrap();
        let head = reader.head().clone();
        assert_eq!((head.channel_count, head.input_sample_rate), (1, 22050));
        let mut decoder = head.decoder(48_000).unwrap();
        let mut trim = Trim::new(&head, 48_000, 1).unwrap();
        let mut block = vec![0.0f32; MAX_PACKET_SAMPLES];
        let mut decoded = Vec::new();
        for packet in reader.packets() {
            let packet = packet.unwrap();
            let n = decoder
                .decode(&packet.data, MAX_PACKET_SAMPLES, &mut block)
                .unwrap();
            decoded.extend_from_slice(trim.keep(&packet, &block[..n]));
        }
        let at_24k = (input as u64 * 160).div_ceil(147);
        assert_eq!(decoded.len() as u64, at_24k * 2);
        // Loud where the input was (12000 / 32768 amplitude → rms ≈ 0.26).
        let rms = (decoded.iter().map(|s| s * s).sum::<f32>() / decoded.len() as f32).sqrt();
        assert!((0.2..0.32).contains(&rms), "rms {rms}");
    }

    #[test]
    fn no_audio_is_still_a_valid_stream() {
        let enc = OggOpusEncoder::new(16000);
        let pages = parse_pages(&enc.finish());
        assert_eq!(pages.len(), 3);
        assert_eq!((pages[0].0, pages[2].0), (BOS, EOS));
        assert_eq!(coding_rate(22050), 24000);
        assert_eq!(coding_rate(16000), 16000);
        assert_eq!(coding_rate(96000), 48000);
    }
}
