//! The hostile input corpus: a misbehaving HTTP server, hostile image files, and the cases that
//! `tests/hostile_inputs.rs` sends through the pipeline, each with the outcome it must have.
//!
//! The server listens on 127.0.0.2 and the pipeline under test allows only `127.0.0.2/32`, so
//! every other loopback spelling (127.0.0.1, `localhost`, `[::1]`, decimal and octal forms) is
//! a real forbidden destination with a real server behind it.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::{ImageBuffer, ImageFormat, Luma, Rgb};
use listing_guard::fixtures::{self, Fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Address the hostile server binds (the only network the pipeline under test allows).
pub const SERVER_IP: &str = "127.0.0.2";

/// What a case must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A dead letter with this class.
    DeadLetter(&'static str),
    /// A `review` decision whose (first) image failed with this class; the failure message
    /// contains the given text.
    ImageFailed(&'static str, &'static str),
    /// A decision whose image decoded to these dimensions and was scored by the model.
    Scored([u32; 2]),
    /// A decision whose image decoded to these dimensions (too small for the model's crops).
    Decoded([u32; 2]),
    /// A decision (several records share the event id; all decisions carry the same id).
    DecidedSameId,
}

/// One hostile input.
#[derive(Debug, Clone)]
pub struct Case {
    /// Name, also the record key and (where the event parses) the event id suffix.
    pub name: String,
    /// The record payloads (two for the duplicate cases).
    pub payloads: Vec<Vec<u8>>,
    /// The outcome.
    pub expect: Expect,
}

/// Requests the hostile server received, by path.
pub type Hits = Arc<Mutex<HashMap<String, u64>>>;

/// The misbehaving server: raw HTTP/1.1 over TCP so it can lie, stall and never end.
pub struct HostileServer {
    /// `http://127.0.0.2:PORT`.
    pub base: String,
    /// Port.
    pub port: u16,
    /// Requests by path.
    pub hits: Hits,
    /// Open connections right now.
    pub open: Arc<AtomicU64>,
}

impl HostileServer {
    /// Starts the server with `images` served at `/img/{name}`.
    pub async fn start(images: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind((SERVER_IP, 0))
            .await
            .expect("bind 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback)");
        let port = listener.local_addr().unwrap().port();
        let hits: Hits = Arc::default();
        let open = Arc::new(AtomicU64::new(0));
        let images = Arc::new(images);
        let (h, o) = (Arc::clone(&hits), Arc::clone(&open));
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (images, hits, open) = (Arc::clone(&images), Arc::clone(&h), Arc::clone(&o));
                tokio::spawn(async move {
                    open.fetch_add(1, Ordering::Relaxed);
                    let _ = serve(sock, &images, &hits, port).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Self {
            base: format!("http://{SERVER_IP}:{port}"),
            port,
            hits,
            open,
        }
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn serve(
    mut sock: TcpStream,
    images: &HashMap<String, Vec<u8>>,
    hits: &Hits,
    port: u16,
) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || req.len() > 16 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    let reply = |status: &str, ctype: &str, body: &[u8]| {
        let mut r = head(
            status,
            &format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                body.len()
            ),
        );
        r.extend_from_slice(body);
        r
    };
    let out = match path.as_str() {
        p if p.starts_with("/img/") => match images.get(&p[5..]) {
            Some(b) => reply("200 OK", "image/jpeg", b),
            None => reply("404 Not Found", "text/plain", b"no such image"),
        },
        "/status/404" => reply("404 Not Found", "text/plain", b"gone"),
        "/status/500" => reply("500 Internal Server Error", "text/plain", b"oops"),
        "/status/429" => head(
            "429 Too Many Requests",
            "Retry-After: 1\r\nContent-Length: 0\r\n",
        ),
        "/drip" => {
            // Slowloris: a promising header, then one byte every 400 ms, forever.
            sock.write_all(&head(
                "200 OK",
                "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n",
            ))
            .await?;
            loop {
                sock.write_all(b"\xff").await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        }
        "/hang" => {
            // Accepts the request and never answers.
            tokio::time::sleep(Duration::from_secs(600)).await;
            return Ok(());
        }
        "/lying-length-short" => {
            let mut r = head(
                "200 OK",
                "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n",
            );
            r.extend_from_slice(&Fixture::CleanJpeg.bytes(1)[..1000]);
            r
        }
        "/lying-length-huge" => head(
            "200 OK",
            "Content-Type: image/jpeg\r\nContent-Length: 1000000000000\r\n",
        ),
        "/lying-type" => reply(
            "200 OK",
            "image/jpeg",
            b"<!doctype html><html><body>not an image</body></html>",
        ),
        "/endless-chunked" => {
            sock.write_all(&head(
                "200 OK",
                "Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n",
            ))
            .await?;
            let chunk = vec![0u8; 64 * 1024];
            loop {
                sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                sock.write_all(&chunk).await?;
                sock.write_all(b"\r\n").await?;
            }
        }
        "/redirect-loop" => head(
            "302 Found",
            "Location: /redirect-loop\r\nContent-Length: 0\r\n",
        ),
        "/redirect-loopback" => head(
            "302 Found",
            &format!("Location: http://127.0.0.1:{port}/img/clean.jpg\r\nContent-Length: 0\r\n"),
        ),
        "/redirect-metadata" => head(
            "302 Found",
            "Location: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n",
        ),
        "/redirect-file" => head(
            "302 Found",
            "Location: file:///etc/passwd\r\nContent-Length: 0\r\n",
        ),
        _ => reply("404 Not Found", "text/plain", b"unknown path"),
    };
    sock.write_all(&out).await?;
    sock.shutdown().await
}

/// Hostile and unusual image files by name, for `/img/{name}`. `corpus` adds WebP, AVIF and
/// HEIC files from the shared corpus.
pub fn images(corpus: Option<&std::path::Path>) -> HashMap<String, Vec<u8>> {
    let photo = fixtures::photo(96, 64, 7);
    let mut m = HashMap::new();
    m.insert("clean.jpg".into(), fixtures::jpeg(&photo));
    m.insert("truncated.jpg".into(), Fixture::BrokenJpeg.bytes(3));
    let png = fixtures::png(&photo);
    m.insert("truncated.png".into(), png[..png.len() / 2].to_vec());
    m.insert("zero-bytes.jpg".into(), Vec::new());
    m.insert(
        "not-an-image.jpg".into(),
        b"%PDF-1.7 this is a document".to_vec(),
    );
    m.insert("png-bomb.png".into(), png_header_only(50_000, 50_000));
    m.insert("gif-huge-screen.gif".into(), gif_huge_screen());
    m.insert("gif-many-frames.gif".into(), gif_frames(2_000));
    m.insert("tiny.png".into(), fixtures::png(&fixtures::photo(1, 1, 1)));
    m.insert("cmyk.jpg".into(), cmyk_jpeg(256, 240));
    m.insert("rgb16.png".into(), rgb16_png(256, 240));
    m.insert("palette.png".into(), palette_png(256, 240));
    let gray =
        ImageBuffer::<Luma<u8>, _>::from_fn(256, 240, |x, y| Luma([((x * 3 + y) % 256) as u8]));
    let mut gray_jpeg = Vec::new();
    gray.write_to(&mut Cursor::new(&mut gray_jpeg), ImageFormat::Jpeg)
        .unwrap();
    m.insert("gray.jpg".into(), gray_jpeg);
    m.insert(
        "rotated.jpg".into(),
        fixtures::with_jpeg_exif_orientation(&fixtures::jpeg(&fixtures::photo(288, 240, 2)), 6),
    );
    if let Some(dir) = corpus {
        for (name, file) in [
            ("mars.webp", "c2pa-rs/mars.webp"),
            ("sample1.avif", "c2pa-rs/sample1.avif"),
            ("sample1.heic", "c2pa-rs/sample1.heic"),
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            m.insert(name.into(), bytes);
        }
    }
    m
}

/// A PNG whose header claims `w`×`h` RGBA pixels (10 GB for 50,000²) over a tiny IDAT: a
/// decompression bomb as far as any decoder that trusts the header is concerned.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A GIF whose logical screen is 60,000×60,000 with one 1×1 frame.
fn gif_huge_screen() -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&60_000u16.to_le_bytes());
    g.extend_from_slice(&60_000u16.to_le_bytes());
    g.extend_from_slice(&[0x80, 0, 0]); // global colour table of 2 entries
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    g.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // image descriptor 1×1
    g.extend_from_slice(&[2, 2, 0x44, 0x01, 0]); // LZW data
    g.push(0x3B);
    g
}

/// An animated GIF of `n` 32×32 frames (the decoder must not hold them all).
fn gif_frames(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        let frames = (0..n).map(|i| {
            let buf = image::RgbaImage::from_fn(32, 32, |x, y| {
                image::Rgba([(x * 8) as u8, (y * 8) as u8, (i % 256) as u8, 255])
            });
            image::Frame::new(buf)
        });
        enc.encode_frames(frames).expect("GIF encodes");
    }
    out
}

fn cmyk_jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut data = Vec::with_capacity(usize::from(w) * usize::from(h) * 4);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 3) as u8, (y * 5) as u8, 40, 10]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 85)
        .encode(&data, w, h, jpeg_encoder::ColorType::Cmyk)
        .expect("CMYK JPEG encodes");
    out
}

fn rgb16_png(w: u32, h: u32) -> Vec<u8> {
    let img = ImageBuffer::<Rgb<u16>, _>::from_fn(w, h, |x, y| {
        Rgb([(x * 800) as u16, (y * 1300) as u16, 30_000])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn palette_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]); // 8-bit indexed
    png_chunk(&mut out, b"IHDR", &ihdr);
    let plte: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect();
    png_chunk(&mut out, b"PLTE", &plte);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        raw.extend((0..w).map(|x| ((x * 3 + y * 7) % 256) as u8));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &raw).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A name other than `localhost` that `/etc/hosts` maps to 127.0.0.1 (e.g. the machine's own
/// name), if there is one.
fn loopback_host_name() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let mut f = l.split('#').next()?.split_whitespace();
        (f.next()? == "127.0.0.1")
            .then(|| f.find(|n| !n.contains("localhost")).map(str::to_owned))
            .flatten()
    })
}

fn event(name: &str, images: &[String]) -> Vec<u8> {
    crate::listing(&format!("hostile-{name}"), "taobao", "apparel", images)
}

fn json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// A valid listing event as a JSON value, to be broken by the event cases.
fn valid_value(name: &str, server: &str) -> serde_json::Value {
    serde_json::from_slice(&event(name, &[format!("{server}/img/clean.jpg")])).unwrap()
}

/// Every case. `server` is the hostile server's base URL; `port` its port.
pub fn cases(server: &str, port: u16, with_corpus: bool) -> Vec<Case> {
    use Expect::*;
    let mut cases = Vec::new();
    let mut add = |name: &str, payloads: Vec<Vec<u8>>, expect: Expect| {
        cases.push(Case {
            name: name.to_owned(),
            payloads,
            expect,
        });
    };
    let with = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = valid_value(name, server);
        edit(&mut v);
        json(v)
    };

    // ---- Events ----
    add(
        "malformed-json",
        vec![b"{\"schema_version\": 1, \"event_id\":".to_vec()],
        DeadLetter("malformed_json"),
    );
    add(
        "binary-garbage",
        vec![vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]],
        DeadLetter("malformed_json"),
    );
    add(
        "nul-bytes-raw",
        vec![b"{\"schema_version\":1}\0\0\0".to_vec()],
        DeadLetter("malformed_json"),
    );
    add(
        "invalid-utf8",
        vec![b"{\"schema_version\":1,\"event_id\":\"\xff\xfe\"}".to_vec()],
        DeadLetter("malformed_json"),
    );
    add(
        "deep-nesting",
        vec![[b"[".repeat(100_000), b"]".repeat(100_000)].concat()],
        DeadLetter("malformed_json"),
    );
    add(
        "json-array",
        vec![b"[1,2,3]".to_vec()],
        DeadLetter("unsupported_schema_version"),
    );
    add(
        "empty-payload",
        vec![Vec::new()],
        DeadLetter("empty_payload"),
    );
    add(
        "wrong-type-images",
        vec![with("wrong-type-images", &|v| {
            v["images"] = "not a list".into()
        })],
        DeadLetter("schema_violation"),
    );
    add(
        "wrong-type-version",
        vec![with("wrong-type-version", &|v| {
            v["schema_version"] = "1".into()
        })],
        DeadLetter("unsupported_schema_version"),
    );
    add(
        "missing-listing-id",
        vec![with("missing-listing-id", &|v| {
            v.as_object_mut().unwrap().remove("listing_id");
        })],
        DeadLetter("schema_violation"),
    );
    add(
        "missing-version",
        vec![with("missing-version", &|v| {
            v.as_object_mut().unwrap().remove("schema_version");
        })],
        DeadLetter("unsupported_schema_version"),
    );
    add(
        "unknown-version",
        vec![with("unknown-version", &|v| v["schema_version"] = 2.into())],
        DeadLetter("unsupported_schema_version"),
    );
    // 4 MiB, over the 1 MiB limit. tansu 0.6.0 accepts but never delivers records of 8 MB and
    // more (README, "Known limits"), so the 10 MiB case is covered below the broker, in the
    // `lg-events` unit tests.
    add(
        "payload-4mib",
        vec![with("payload-4mib", &|v| {
            v["title"] = "x".repeat(4 << 20).into()
        })],
        DeadLetter("payload_too_large"),
    );
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("{server}/img/{i}.jpg"))
        .collect();
    add(
        "10000-images",
        vec![event("10000-images", &many)],
        DeadLetter("invalid_event"),
    );
    add(
        "no-images",
        vec![event("no-images", &[])],
        DeadLetter("invalid_event"),
    );
    add(
        "bidi-override-id",
        vec![with("bidi-override-id", &|v| {
            v["event_id"] = "hostile-\u{202E}gpj.exe".into()
        })],
        DeadLetter("invalid_event"),
    );
    add(
        "zero-width-id",
        vec![with("zero-width-id", &|v| {
            v["listing_id"] = "L-1\u{200B}".into()
        })],
        DeadLetter("invalid_event"),
    );
    add(
        "nul-in-id",
        vec![with("nul-in-id", &|v| v["merchant_id"] = "M\u{0}1".into())],
        DeadLetter("invalid_event"),
    );
    add(
        "homoglyph-marketplace",
        vec![with("homoglyph-marketplace", &|v| {
            v["marketplace"] = "t\u{0430}obao".into()
        })],
        DeadLetter("invalid_event"),
    );
    let same = event(
        "duplicate-same-payload",
        &[format!("{server}/img/clean.jpg")],
    );
    add(
        "duplicate-same-payload",
        vec![same.clone(), same],
        DecidedSameId,
    );

    // ---- URLs (SSRF) ----
    let url_cases: [(&str, String, &str); 20] = [
        (
            "ssrf-loopback",
            format!("http://127.0.0.1:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-localhost",
            format!("http://localhost:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-localhost-dot",
            format!("http://localhost.:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-private-10",
            "http://10.0.0.1/img.jpg".into(),
            "forbidden_address",
        ),
        (
            "ssrf-private-192",
            "http://192.168.1.1/img.jpg".into(),
            "forbidden_address",
        ),
        (
            "ssrf-metadata",
            "http://169.254.169.254/latest/meta-data/".into(),
            "forbidden_address",
        ),
        (
            "ssrf-ipv6-loopback",
            format!("http://[::1]:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-ipv4-mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-decimal",
            format!("http://2130706433:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-octal",
            format!("http://0177.0.0.1:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-hex",
            format!("http://0x7f000001:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "ssrf-unspecified",
            format!("http://0.0.0.0:{port}/img/clean.jpg"),
            "forbidden_address",
        ),
        (
            "scheme-file",
            "file:///etc/passwd".into(),
            "forbidden_scheme",
        ),
        (
            "scheme-gopher",
            format!("gopher://{SERVER_IP}:{port}/_GET"),
            "forbidden_scheme",
        ),
        (
            "scheme-ftp",
            "ftp://example.com/img.jpg".into(),
            "forbidden_scheme",
        ),
        (
            "scheme-data",
            "data:image/png;base64,iVBORw0KGgo=".into(),
            "forbidden_scheme",
        ),
        (
            "credentials",
            format!("http://user:secret@{SERVER_IP}:{port}/img/clean.jpg"),
            "credentials_in_url",
        ),
        (
            "redirect-loopback",
            format!("{server}/redirect-loopback"),
            "redirect_refused",
        ),
        (
            "redirect-metadata",
            format!("{server}/redirect-metadata"),
            "redirect_refused",
        ),
        (
            "redirect-file",
            format!("{server}/redirect-file"),
            "redirect_refused",
        ),
    ];
    for (name, url, class) in url_cases {
        add(name, vec![event(name, &[url])], ImageFailed(class, ""));
    }
    // A host name that the system resolver maps to loopback: refused at resolution.
    if let Some(host) = loopback_host_name() {
        let url = format!("http://{host}:{port}/img/clean.jpg");
        add(
            "ssrf-dns-name",
            vec![event("ssrf-dns-name", &[url])],
            ImageFailed("forbidden_address", String::leak(host)),
        );
    }

    // ---- Servers ----
    let server_cases: [(&str, &str, &str, &str); 9] = [
        ("http-404", "/status/404", "http_404", ""),
        ("http-500", "/status/500", "http_500", ""),
        ("http-429", "/status/429", "http_429", ""),
        ("slow-drip", "/drip", "fetch_timeout", ""),
        ("hang", "/hang", "fetch_timeout", ""),
        (
            "lying-length-short",
            "/lying-length-short",
            "transfer_error",
            "",
        ),
        ("lying-length-huge", "/lying-length-huge", "too_large", ""),
        (
            "lying-content-type",
            "/lying-type",
            "unsupported_format",
            "",
        ),
        ("endless-chunked", "/endless-chunked", "too_large", ""),
    ];
    for (name, path, class, msg) in server_cases {
        add(
            name,
            vec![event(name, &[format!("{server}{path}")])],
            ImageFailed(class, msg),
        );
    }
    add(
        "redirect-loop",
        vec![event("redirect-loop", &[format!("{server}/redirect-loop")])],
        ImageFailed("redirect_refused", "redirects"),
    );

    // ---- Images ----
    let img = |n: &str| vec![format!("{server}/img/{n}")];
    let image_failures: [(&str, &str, &str, &str); 7] = [
        (
            "truncated-jpeg",
            "truncated.jpg",
            "decode_error",
            "truncated",
        ),
        ("truncated-png", "truncated.png", "decode_error", ""),
        ("zero-byte-file", "zero-bytes.jpg", "empty_image", ""),
        (
            "non-image-bytes",
            "not-an-image.jpg",
            "unsupported_format",
            "",
        ),
        (
            "png-bomb-50000",
            "png-bomb.png",
            "image_too_large",
            "50000x50000",
        ),
        (
            "gif-huge-screen",
            "gif-huge-screen.gif",
            "image_too_large",
            "60000x60000",
        ),
        ("tiny-1x1", "tiny.png", "image_too_small", ""),
    ];
    for (name, file, class, msg) in image_failures {
        add(name, vec![event(name, &img(file))], ImageFailed(class, msg));
    }
    let scored: [(&str, &str, [u32; 2]); 5] = [
        ("cmyk-jpeg", "cmyk.jpg", [256, 240]),
        ("rgb16-png", "rgb16.png", [256, 240]),
        ("palette-png", "palette.png", [256, 240]),
        ("grayscale-jpeg", "gray.jpg", [256, 240]),
        ("exif-rotated-jpeg", "rotated.jpg", [240, 288]),
    ];
    for (name, file, dims) in scored {
        add(name, vec![event(name, &img(file))], Scored(dims));
    }
    add(
        "gif-2000-frames",
        vec![event("gif-2000-frames", &img("gif-many-frames.gif"))],
        Decoded([32, 32]),
    );
    if with_corpus {
        add(
            "webp",
            vec![event("webp", &img("mars.webp"))],
            Scored([1053, 600]),
        );
        add(
            "avif",
            vec![event("avif", &img("sample1.avif"))],
            Scored([1204, 800]),
        );
        add(
            "heic",
            vec![event("heic", &img("sample1.heic"))],
            Scored([8736, 5856]),
        );
    }
    cases
}
