//! Just enough container walking to find XMP packets and PNG text chunks.
//!
//! PNG chunks and JPEG marker segments are length-prefixed records; walking them is a few lines
//! and keeps chunks that general image crates drop (text after `IDAT`, `caBX`). Every length is
//! bounds-checked, and compressed text is inflated with a hard cap. For other containers (WebP,
//! HEIF, TIFF, GIF) the XMP packet is found by its `<x:xmpmeta` wrapper.

use std::io::Read;

/// Metadata found in a file.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Raw XMP packets (UTF-8 text).
    pub(crate) xmp: Vec<String>,
    /// PNG text chunks as (keyword, text).
    pub(crate) texts: Vec<(String, String)>,
}

impl Extracted {
    /// A PNG text chunk: XMP under its keyword (whichever chunk type the writer chose), any
    /// other keyword as text.
    fn push_text(&mut self, keyword: String, text: String) {
        if keyword == XMP_KEYWORD {
            self.xmp.push(text);
        } else {
            self.texts.push((keyword, text));
        }
    }
}

const PNG_SIG: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
const XMP_KEYWORD: &str = "XML:com.adobe.xmp";
const JPEG_XMP_NS: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
/// Cap on inflated text per chunk: metadata, not payloads.
pub(crate) const MAX_INFLATED: u64 = 4 << 20;

pub(crate) fn extract(bytes: &[u8]) -> Extracted {
    let mut out = Extracted::default();
    if bytes.starts_with(PNG_SIG) {
        png_chunks(bytes, &mut out);
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg_segments(bytes, &mut out);
    }
    if out.xmp.is_empty() {
        if let Some(p) = scan_xmp(bytes) {
            out.xmp.push(p);
        }
    }
    out
}

fn png_chunks(bytes: &[u8], out: &mut Extracted) {
    let mut i = PNG_SIG.len();
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
        let kind = &bytes[i + 4..i + 8];
        let Some(data) = bytes.get(i + 8..(i + 8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"tEXt" => {
                if let Some((k, v)) = split_nul(data) {
                    out.push_text(latin1(k), latin1(v));
                }
            }
            b"zTXt" => {
                if let Some((k, rest)) = split_nul(data) {
                    if let Some(text) = rest.get(1..).and_then(inflate) {
                        out.push_text(latin1(k), latin1(&text));
                    }
                }
            }
            b"iTXt" => {
                if let Some((k, text)) = itxt(data) {
                    out.push_text(k, text);
                }
            }
            b"IEND" => break,
            _ => {}
        }
        i = i + 12 + len;
    }
}

fn itxt(data: &[u8]) -> Option<(String, String)> {
    let (k, rest) = split_nul(data)?;
    let (&compressed, rest) = rest.split_first()?;
    let rest = rest.get(1..)?; // compression method
    let (_lang, rest) = split_nul(rest)?;
    let (_translated, text) = split_nul(rest)?;
    let text = if compressed == 1 {
        inflate(text)?
    } else {
        text.to_vec()
    };
    Some((latin1(k), String::from_utf8_lossy(&text).into_owned()))
}

fn jpeg_segments(bytes: &[u8], out: &mut Extracted) {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            break;
        }
        let marker = bytes[i + 1];
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) || marker == 0xFF {
            i += if marker == 0xFF { 1 } else { 2 };
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan: no more metadata segments before the image data
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let Some(seg) = bytes.get(i + 4..(i + 2).saturating_add(len)) else {
            break;
        };
        if marker == 0xE1 && seg.starts_with(JPEG_XMP_NS) {
            out.xmp
                .push(String::from_utf8_lossy(&seg[JPEG_XMP_NS.len()..]).into_owned());
        }
        i += 2 + len;
    }
}

/// Finds an XMP packet anywhere in the bytes.
fn scan_xmp(bytes: &[u8]) -> Option<String> {
    let start = find(bytes, b"<x:xmpmeta")?;
    let end_tag = b"</x:xmpmeta>";
    let end = find(&bytes[start..], end_tag)? + start + end_tag.len();
    Some(String::from_utf8_lossy(&bytes[start..end]).into_owned())
}

/// The first occurrence of `needle` (SIMD substring search: every file is scanned for several
/// markers, and a byte-by-byte window compare cost ~2% of the pipeline's CPU).
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn split_nul(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let p = data.iter().position(|&b| b == 0)?;
    Some((&data[..p], &data[p + 1..]))
}

fn latin1(b: &[u8]) -> String {
    // PNG tEXt is Latin-1, but generators routinely write UTF-8 there.
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a PNG chunk (CRC left zero: this walker does not check it).
    pub(crate) fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]);
        c
    }

    #[test]
    fn png_text_kinds_and_truncation() {
        let mut png = PNG_SIG.to_vec();
        png.extend(chunk(
            b"tEXt",
            b"parameters\0a cat\nSteps: 20, Sampler: Euler",
        ));
        let z = {
            use std::io::Write;
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b"{\"x\":1}").unwrap();
            e.finish().unwrap()
        };
        let mut ztxt = b"prompt\0\0".to_vec();
        ztxt.extend(z);
        png.extend(chunk(b"zTXt", &ztxt));
        png.extend(chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta/>"));
        png.extend(chunk(b"iTXt", b"AIGC\0\0\0zh\0\0{\"Label\":\"1\"}"));
        // A chunk whose length runs past the end must not panic.
        png.extend_from_slice(&[0, 0, 0xFF, 0xFF, b't', b'E', b'X', b't', b'a']);
        let e = extract(&png);
        assert_eq!(
            e.texts[0],
            (
                "parameters".into(),
                "a cat\nSteps: 20, Sampler: Euler".into()
            )
        );
        assert_eq!(e.texts[1], ("prompt".into(), "{\"x\":1}".into()));
        assert_eq!(e.texts[2], ("AIGC".into(), "{\"Label\":\"1\"}".into()));
        assert_eq!(e.xmp, vec!["<x:xmpmeta/>".to_owned()]);
    }

    #[test]
    fn jpeg_xmp_segment_and_garbage() {
        let xmp = b"<x:xmpmeta>hi</x:xmpmeta>";
        let mut seg = JPEG_XMP_NS.to_vec();
        seg.extend_from_slice(xmp);
        let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpg.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
        jpg.extend(seg);
        jpg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(
            extract(&jpg).xmp,
            vec![String::from_utf8_lossy(xmp).into_owned()]
        );
        // Lengths that overflow the buffer end the walk.
        assert!(extract(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 1, 2])
            .xmp
            .is_empty());
        assert!(extract(b"").xmp.is_empty());
    }
}
