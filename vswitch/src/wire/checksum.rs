//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624). Hand-written: NAT
//! rewrites addresses and ports of every routed packet, and an incremental update touches only
//! the changed words instead of summing a 64 KiB TSO frame again.

/// One's-complement sum of 16-bit big-endian words, not yet folded or inverted.
///
/// Summed eight bytes at a time into a 64-bit accumulator (RFC 1071 §2: the sum may be taken
/// over wider words and folded afterwards, as 2^32 ≡ 2^16 ≡ 1 mod 0xffff): software
/// segmentation checksums every segment of a TSO frame that leaves by AF_XDP, and this was
/// the dataplane's largest own cost there (measured on the macvlan bench, 8.8% of all samples
/// with the word-at-a-time loop).
#[inline]
pub fn sum16(data: &[u8], acc: u32) -> u32 {
    let mut sum = u64::from(acc);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Two 32-bit halves, each below 2^32: 2^31 of them fit before the sum could wrap,
        // far more than any frame has.
        sum += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > u64::from(u32::MAX) {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    // Keep headroom for the callers' additions (pseudo-header words) before they fold.
    let mut s = sum as u32;
    if s > 0x8000_0000 {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// Folds a 32-bit running sum into 16 bits (end-around carry).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The finished Internet checksum of `data` starting from the running sum `acc`.
#[inline]
pub fn checksum(data: &[u8], acc: u32) -> u16 {
    !fold(sum16(data, acc))
}

/// RFC 1624 eqn. 3: the checksum `hc` of data in which the 16-bit word `old` became `new`:
/// HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// [`update16`] for a 32-bit field (an IPv4 address).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// A checksum-pending (virtio `NEEDS_CSUM`, the kernel's CHECKSUM_PARTIAL) TCP/UDP field holds
/// the pseudo-header sum, not inverted, that the sender's offload completes: a changed
/// pseudo-header word (an address) is added to it as is. Words of the segment itself (ports)
/// are summed by the offload later and must not be applied.
#[inline]
pub fn update32_partial(field: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(field)
        + u32::from(!((old >> 16) as u16))
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(data: &[u8], at: usize, word: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        d[at..at + word.len()].copy_from_slice(word);
        d
    }

    /// The word-at-a-time sum of RFC 1071, for reference.
    fn reference(data: &[u8], acc: u32) -> u16 {
        let mut a = u64::from(acc);
        for (i, b) in data.iter().enumerate() {
            a += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
        while a > 0xffff {
            a = (a & 0xffff) + (a >> 16);
        }
        a as u16
    }

    #[test]
    fn wide_sum_matches_the_word_sum() {
        let mut seed = 0x9e37_79b9u32;
        let mut data = Vec::new();
        for len in (0..300).chain([1499, 1500, 9000, 65_535, 65_536]) {
            data.clear();
            for _ in 0..len {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                data.push((seed >> 24) as u8);
            }
            for acc in [0, 1, 0xffff, 0x1_2345, 0x7fff_ffff] {
                assert_eq!(fold(sum16(&data, acc)), reference(&data, acc), "len {len}");
            }
        }
        // All ones: no carry lost.
        let ones = vec![0xff; 65_536];
        assert_eq!(fold(sum16(&ones, 0)), reference(&ones, 0));
    }

    #[test]
    fn incremental_updates_match_a_full_recomputation() {
        // Pseudo-random data of odd and even lengths, every 16- and 32-bit change position.
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [8usize, 20, 21, 40, 63, 1500] {
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let hc = checksum(&data, 0);
            for at in (0..len - 4).step_by(2).take(40) {
                let new16 = (next() as u16).to_be_bytes();
                let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
                let d = patched(&data, at, &new16);
                let want = checksum(&d, 0);
                let got = update16(hc, old16, u16::from_be_bytes(new16));
                // 0x0000 and 0xffff are the same one's-complement number.
                assert!(
                    got == want || (got, want) == (0, 0xffff) || (got, want) == (0xffff, 0),
                    "16-bit at {at} of {len}"
                );
                let new32 = next();
                let old32 = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
                let d = patched(&data, at, &new32.to_be_bytes());
                let want = checksum(&d, 0);
                let got = update32(hc, old32, new32);
                assert!(
                    got == want || (got, want) == (0, 0xffff) || (got, want) == (0xffff, 0),
                    "32-bit at {at} of {len}"
                );
            }
        }
    }

    #[test]
    fn partial_update_tracks_the_pseudo_header_sum() {
        let src = u32::from_be_bytes([10, 1, 0, 2]);
        let dst = u32::from_be_bytes([192, 0, 2, 9]);
        let nat = u32::from_be_bytes([198, 51, 100, 7]);
        let pseudo = |s: u32| {
            let mut b = Vec::new();
            b.extend_from_slice(&s.to_be_bytes());
            b.extend_from_slice(&dst.to_be_bytes());
            b.extend_from_slice(&[0, 6, 0, 40]);
            fold(sum16(&b, 0))
        };
        assert_eq!(update32_partial(pseudo(src), src, nat), pseudo(nat));
    }
}
