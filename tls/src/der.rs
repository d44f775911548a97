//! The two things skein reads back out of a certificate: its notAfter and
//! its URI subject alternative names (the node's identity).
//!
//! A small DER walk instead of an X.509 parser crate (x509-parser adds some
//! ten crates to a cold build). It is only ever given certificates that
//! webpki has already parsed and verified, or that we made ourselves; on
//! anything it does not understand it answers `None`, never panics.

/// One TLV: its tag byte and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one TLV off the front of `input` (single-byte tags only: every
/// tag X.509 uses at the levels walked here is one).
fn next<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    *input = rest;
    Some(Tlv { tag, body })
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// The OID of subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
/// `uniformResourceIdentifier [6] IA5String` inside GeneralNames.
const SAN_URI: u8 = 0x86;

/// The fields of a certificate's TBSCertificate that we read.
struct Tbs<'a> {
    validity: &'a [u8],
    extensions: Option<&'a [u8]>,
}

fn tbs(cert: &[u8]) -> Option<Tbs<'_>> {
    let mut input = cert;
    let cert = next(&mut input).filter(|t| t.tag == SEQUENCE)?;
    let mut certificate = cert.body;
    let tbs = next(&mut certificate).filter(|t| t.tag == SEQUENCE)?;
    let mut fields = tbs.body;
    if next(&mut fields)?.tag == 0xa0 {
        // That was the [0] EXPLICIT version; this is the serial number.
        next(&mut fields)?;
    }
    let _signature = next(&mut fields)?;
    let _issuer = next(&mut fields)?;
    let validity = next(&mut fields).filter(|t| t.tag == SEQUENCE)?.body;
    let _subject = next(&mut fields)?;
    let _spki = next(&mut fields)?;
    let mut extensions = None;
    // Then optional [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions.
    while let Some(t) = next(&mut fields) {
        if t.tag == 0xa3 {
            let mut inner = t.body;
            extensions = Some(next(&mut inner).filter(|s| s.tag == SEQUENCE)?.body);
        }
    }
    Some(Tbs { validity, extensions })
}

/// The certificate's notAfter, in seconds since the Unix epoch.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let mut validity = tbs(cert)?.validity;
    let _not_before = next(&mut validity)?;
    let t = next(&mut validity)?;
    parse_time(t.tag, t.body)
}

/// Every URI subject alternative name of the certificate.
pub(crate) fn uri_sans(cert: &[u8]) -> Vec<String> {
    let mut uris = Vec::new();
    let Some(mut exts) = tbs(cert).and_then(|t| t.extensions) else {
        return uris;
    };
    while let Some(ext) = next(&mut exts) {
        let mut fields = ext.body;
        let Some(oid) = next(&mut fields) else { break };
        if oid.body != SAN_OID {
            continue;
        }
        // critical BOOLEAN DEFAULT FALSE, then extnValue OCTET STRING.
        let Some(mut value) = next(&mut fields) else { break };
        if value.tag == 0x01 {
            let Some(v) = next(&mut fields) else { break };
            value = v;
        }
        let mut octets = value.body;
        let Some(names) = next(&mut octets).filter(|t| t.tag == SEQUENCE) else { break };
        let mut names = names.body;
        while let Some(name) = next(&mut names) {
            if name.tag == SAN_URI {
                if let Ok(uri) = std::str::from_utf8(name.body) {
                    uris.push(uri.to_string());
                }
            }
        }
    }
    uris
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (the only
/// forms RFC 5280 allows) as Unix seconds.
fn parse_time(tag: u8, body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2])?;
            // RFC 5280: 50..99 are 19xx, 00..49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[0..2])?, num(&rest[2..4])?);
    let (h, m, s) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_unix_seconds() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(GENERALIZED_TIME, b"20000229120000Z"), Some(951_825_600));
        assert_eq!(parse_time(GENERALIZED_TIME, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(parse_time(UTC_TIME, b"700101000000"), None);
        assert_eq!(parse_time(UTC_TIME, b"20000229120000Z"), None);
        assert_eq!(parse_time(GENERALIZED_TIME, b"20001301000000Z"), None);
    }

    #[test]
    fn garbage_reads_as_nothing() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert!(uri_sans(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_empty());
    }
}
