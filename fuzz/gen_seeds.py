#!/usr/bin/env python3
"""Writes the committed seed inputs under fuzz/seeds/<target>/.

Small, valid (or nearly valid) files built from scratch with the standard library only, so the
seeds carry no third-party content: PNGs with text/XMP/eXIf/caBX chunks and alpha "stealth"
parameters, a baseline JPEG with EXIF and XMP APP1 segments and a JUMBF APP11 box, a GIF, a TIFF
with EXIF, listing events, XMP packets and TC260:AIGC label values.

Run from anywhere: `python3 fuzz/gen_seeds.py`. Output is deterministic.
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

IPTC = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
TC260 = "http://www.tc260.org.cn/ns/AIGC/1.0/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
AIGC_VALUE = '{"Label":"1","ContentProducer":"001191110108MA01KP2T5U00000","ProduceID":"p-42"}'
A1111 = "a cat on a sofa\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5"


def xmp_packet(body):
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="{RDF}">{body}</rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    )


XMP_IPTC_ATTR = xmp_packet(
    f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC}" '
    'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
)
XMP_IPTC_RESOURCE = xmp_packet(
    f'<rdf:Description rdf:about="" xmlns:ie="{IPTC}">'
    '<ie:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"/>'
    "</rdf:Description>"
)
XMP_TC260_ELEMENT = xmp_packet(
    f'<rdf:Description rdf:about="" xmlns:TC260="{TC260}">'
    f"<TC260:AIGC>{AIGC_VALUE}</TC260:AIGC></rdf:Description>"
)
XMP_TC260_ATTR = xmp_packet(
    f'<rdf:Description rdf:about="" xmlns:TC260="{TC260}" '
    f'xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="https://example.com/manifest.c2pa" '
    f'TC260:AIGC="{AIGC_VALUE.replace(chr(34), "&quot;")}"/>'
)
XMP_REMOTE = xmp_packet(
    '<rdf:Description rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/" '
    'dcterms:provenance="https://example.com/manifest.c2pa"/>'
)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- PNG ------------------------------------------------------------------------------------


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, color_type, rows, chunks=()):
    """color_type 2 = RGB, 6 = RGBA; rows are raw pixel bytes per row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for kind, data in chunks:
        out += png_chunk(kind, data)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9))
    return out + png_chunk(b"IEND", b"")


def rgb_rows(w, h):
    return [bytes(v for x in range(w) for v in ((x * 16) % 256, (y * 16) % 256, 128)) for y in range(h)]


def itxt(keyword, text, compressed=False):
    body = zlib.compress(text.encode()) if compressed else text.encode()
    return keyword.encode() + b"\0" + bytes([1 if compressed else 0, 0]) + b"\0\0" + body


def stealth_rgba(w, h, text):
    data = b"stealth_pnginfo" + struct.pack(">I", len(text) * 8) + text.encode()
    bits = [(b >> i) & 1 for b in data for i in range(7, -1, -1)]
    assert len(bits) <= w * h
    px = [[[90, 140, 200, 254] for _ in range(w)] for _ in range(h)]
    for i, bit in enumerate(bits):
        x, y = i // h, i % h  # column by column
        px[y][x][3] = 254 | bit
    return [bytes(v for p in row for v in p) for row in px]


# --- EXIF / TIFF ----------------------------------------------------------------------------


def tiff_exif(software, user_comment):
    """Big-endian TIFF: IFD0 {Software, ExifIFDPointer}, Exif IFD {UserComment}."""
    sw = software.encode() + b"\0"
    uc = b"ASCII\0\0\0" + user_comment.encode()
    ifd0_off = 8
    ifd0_size = 2 + 2 * 12 + 4
    exif_off = ifd0_off + ifd0_size
    exif_size = 2 + 1 * 12 + 4
    sw_off = exif_off + exif_size
    uc_off = sw_off + len(sw)
    out = b"MM\0\x2a" + struct.pack(">I", ifd0_off)
    out += struct.pack(">H", 2)
    out += struct.pack(">HHII", 0x0131, 2, len(sw), sw_off)  # Software, ASCII
    out += struct.pack(">HHII", 0x8769, 4, 1, exif_off)  # ExifIFDPointer, LONG
    out += struct.pack(">I", 0)
    out += struct.pack(">H", 1)
    out += struct.pack(">HHII", 0x9286, 7, len(uc), uc_off)  # UserComment, UNDEFINED
    out += struct.pack(">I", 0)
    return out + sw + uc


# --- JPEG -----------------------------------------------------------------------------------


class EntropyWriter:
    """Bits of a JPEG scan: byte stuffing, 1-bit padding and restart markers."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0
        self.rst = 0

    def bits(self, code, length):
        for i in reversed(range(length)):
            self.acc = (self.acc << 1) | ((code >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.n = 0

    def align(self):
        while self.n:
            self.bits(1, 1)

    def restart(self):
        self.align()
        self.out += bytes([0xFF, 0xD0 + self.rst])
        self.rst = (self.rst + 1) % 8


def jpeg_ycbcr420(width, height, app_segments=(), restart=0):
    """A baseline YCbCr 4:2:0 JPEG with varied (deterministic) coefficients: the layout of most
    photos, which the detector decodes crop-first. Huffman tables: DC categories 0 ('0') and 2
    ('10'); AC EOB ('0') and run 0 / size 1 ('10')."""
    out = b"\xff\xd8"
    out += jpeg_segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
    for marker, payload in app_segments:
        out += jpeg_segment(marker, payload)
    out += jpeg_segment(0xDB, b"\x00" + bytes([8] * 64))
    out += jpeg_segment(
        0xC0,
        b"\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x01\x22\x00\x02\x11\x00\x03\x11\x00",
    )
    two_codes = bytes([1, 1] + [0] * 14)
    out += jpeg_segment(0xC4, b"\x00" + two_codes + b"\x00\x02")
    out += jpeg_segment(0xC4, b"\x10" + two_codes + b"\x00\x01")
    if restart:
        out += jpeg_segment(0xDD, struct.pack(">H", restart))
    out += jpeg_segment(0xDA, b"\x03" + b"\x01\x00\x02\x00\x03\x00" + b"\x00\x3f\x00")
    w = EntropyWriter()
    state = 12345
    mcus = ((width + 15) // 16) * ((height + 15) // 16)
    for mcu in range(mcus):
        if restart and mcu and mcu % restart == 0:
            w.restart()
        for _ in range(6):  # 4 Y blocks, Cb, Cr
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            if state & 1:
                w.bits(0b10, 2)
                w.bits((state >> 1) & 3, 2)
            else:
                w.bits(0, 1)
            for _ in range((state >> 3) % 6):
                state = (state * 1103515245 + 12345) & 0x7FFFFFFF
                w.bits(0b10, 2)
                w.bits(state & 1, 1)
            w.bits(0, 1)  # EOB
    w.align()
    return out + bytes(w.out) + b"\xff\xd9"


def jpeg_segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jumbf_c2pa_box():
    """A JUMBF superbox labelled `c2pa` (a manifest store with nothing inside)."""
    uuid = bytes.fromhex("6332706100110010800000AA00389B71")
    jumd = uuid + b"\x03" + b"c2pa\0"
    jumd_box = struct.pack(">I", 8 + len(jumd)) + b"jumd" + jumd
    return struct.pack(">I", 8 + len(jumd_box)) + b"jumb" + jumd_box


def jpeg_gray16(app_segments=()):
    """A 16x16 baseline greyscale JPEG, every coefficient zero (uniform grey)."""
    out = b"\xff\xd8"
    out += jpeg_segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
    for marker, payload in app_segments:
        out += jpeg_segment(marker, payload)
    out += jpeg_segment(0xDB, b"\x00" + bytes([1] * 64))  # DQT 0, all ones
    out += jpeg_segment(0xC0, b"\x08" + struct.pack(">HH", 16, 16) + b"\x01" + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15)
    out += jpeg_segment(0xC4, b"\x00" + one_code + b"\x00")  # DC table 0: category 0 only
    out += jpeg_segment(0xC4, b"\x10" + one_code + b"\x00")  # AC table 0: EOB only
    out += jpeg_segment(0xDA, b"\x01" + b"\x01\x00" + b"\x00\x3f\x00")
    out += b"\x00"  # 4 blocks x (DC '0' + EOB '0') = 8 zero bits
    return out + b"\xff\xd9"


# --- GIF ------------------------------------------------------------------------------------


def lzw_gif(indices, min_code_size=2):
    clear, eoi = 1 << min_code_size, (1 << min_code_size) + 1
    table = {bytes([i]): i for i in range(clear)}
    next_code, width = eoi + 1, min_code_size + 1
    codes = [(clear, width)]
    w = b""
    for c in indices:
        wc = w + bytes([c])
        if wc in table:
            w = wc
            continue
        codes.append((table[w], width))
        if next_code < 4096:
            table[wc] = next_code
            next_code += 1
            if next_code > (1 << width) and width < 12:
                width += 1
        w = bytes([c])
    codes.append((table[w], width))
    codes.append((eoi, width))
    acc = nbits = 0
    out = bytearray()
    for code, wd in codes:
        acc |= code << nbits
        nbits += wd
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    blocks = b"".join(bytes([len(out[i : i + 255])]) + bytes(out[i : i + 255]) for i in range(0, len(out), 255))
    return bytes([min_code_size]) + blocks + b"\0"


def gif16():
    w = h = 16
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255])
    indices = [((x // 4) + (y // 4)) % 4 for y in range(h) for x in range(w)]
    out = b"GIF89a" + struct.pack("<HH", w, h) + bytes([0x81, 0, 0]) + palette
    out += b"\x21\xfe" + bytes([len(b"made with ComfyUI")]) + b"made with ComfyUI\0"  # comment
    out += b"\x2c" + struct.pack("<HHHH", 0, 0, w, h) + b"\0" + lzw_gif(indices)
    return out + b"\x3b"


def main():
    # Listing events.
    good = {
        "schema_version": 1,
        "event_id": "e1",
        "event_type": "listing.created",
        "occurred_at": "2026-11-20T10:00:00Z",
        "listing_id": "l1",
        "merchant_id": "m1",
        "marketplace": "taobao",
        "category": "apparel",
        "title": "T-shirt",
        "images": [{"image_id": "i1", "url": "https://img.example/1.jpg", "role": "main"}],
    }
    write("event_parse", "valid_minimal.json", json.dumps(good))
    multi = dict(
        good,
        event_id="evt-2026-0001",
        event_type="listing.updated",
        occurred_at="2026-11-20T18:00:00.123456+08:00",
        marketplace="tmall-hk_2.0",
        category="美妆/口红",
        title="口红 \u00e9t\u00e9 \\ \"quoted\"",
        images=[
            {"image_id": "main-1", "url": "https://img.example/a.png", "role": "main"},
            {"image_id": "d-1", "url": "http://img.example/b.webp?x=1&y=2", "role": "detail"},
            {"image_id": "sku-1", "url": "https://img.example/%E4%B8%AD.jpg", "role": "sku"},
        ],
    )
    write("event_parse", "valid_multi.json", json.dumps(multi, ensure_ascii=False, indent=1))
    write("event_parse", "invalid_version.json", json.dumps(dict(good, schema_version=2)))
    write("event_parse", "invalid_marketplace.json", json.dumps(dict(good, marketplace="t\u0430obao")))
    write("event_parse", "invalid_duplicate_image.json", json.dumps(dict(good, images=good["images"] * 2)))

    # XMP packets and label values.
    write("xmp", "iptc_attribute.xmp", XMP_IPTC_ATTR)
    write("xmp", "iptc_resource.xmp", XMP_IPTC_RESOURCE)
    write("xmp", "tc260_element.xmp", XMP_TC260_ELEMENT)
    write("xmp", "tc260_attribute.xmp", XMP_TC260_ATTR)
    write("aigc_label", "label1.json", AIGC_VALUE)
    write("aigc_label", "label_numbers.json", '{"Label":3,"ContentProducer":"","PropagateID":7,"ContentPropagator":"x"}')
    write("aigc_label", "not_json.txt", "Label=1; ContentProducer=acme")

    # Images.
    exif = tiff_exif("Stable Diffusion XL", A1111)
    png_meta = png(
        16,
        16,
        2,
        rgb_rows(16, 16),
        [
            (b"tEXt", b"parameters\0" + A1111.encode()),
            (b"zTXt", b"prompt\0\0" + zlib.compress(b'{"3": {"class_type": "KSampler", "inputs": {}}}')),
            (b"iTXt", itxt("XML:com.adobe.xmp", XMP_IPTC_ATTR)),
            (b"iTXt", itxt("AIGC", AIGC_VALUE, compressed=True)),
            (b"tEXt", b"Software\0NovelAI"),
            (b"eXIf", exif),
        ],
    )
    png_plain = png(16, 16, 2, rgb_rows(16, 16))
    png_stealth = png(32, 32, 6, stealth_rgba(32, 32, "a cat\nSteps: 20, Sampler: Euler a"))
    png_cabx = png(16, 16, 2, rgb_rows(16, 16), [(b"caBX", jumbf_c2pa_box())])
    jpeg_meta = jpeg_gray16(
        [
            (0xE1, b"Exif\0\0" + exif),
            (0xE1, b"http://ns.adobe.com/xap/1.0/\0" + XMP_TC260_ELEMENT.encode()),
        ]
    )
    app11 = b"JP" + struct.pack(">HI", 1, 1) + jumbf_c2pa_box()
    jpeg_jumbf = jpeg_gray16([(0xEB, app11)])
    jpeg_remote = jpeg_gray16([(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + XMP_REMOTE.encode())])
    gif = gif16()
    xmp_in_riff = b"RIFF\x30\0\0\0WEBPXMP " + struct.pack("<I", len(XMP_TC260_ATTR)) + XMP_TC260_ATTR.encode()

    write("container", "png_text_chunks.png", png_meta)
    write("container", "jpeg_xmp_app1.jpg", jpeg_meta)
    write("container", "riff_xmp.webp", xmp_in_riff)
    write("exif", "jpeg_exif_app1.jpg", jpeg_meta)
    write("exif", "png_exif_chunk.png", png_meta)
    write("exif", "exif.tif", exif)
    write("c2pa", "jpeg_jumbf_app11.jpg", jpeg_jumbf)
    write("c2pa", "png_cabx.png", png_cabx)
    write("c2pa", "jpeg_remote_manifest.jpg", jpeg_remote)
    for name, data in [
        ("png_text_chunks.png", png_meta),
        ("jpeg_xmp_exif.jpg", jpeg_meta),
        ("jpeg_jumbf_app11.jpg", jpeg_jumbf),
        ("png_stealth_rgba.png", png_stealth),
        ("gif_comment.gif", gif),
    ]:
        write("provenance", name, data)
    orientation6 = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
    ycbcr = jpeg_ycbcr420(160, 144)
    ycbcr_rst = jpeg_ycbcr420(150, 170, [(0xE1, orientation6)], restart=3)
    for target in ("decode", "analyse"):
        write(target, "jpeg_ycbcr420.jpg", ycbcr)
        write(target, "jpeg_ycbcr420_restart_rotated.jpg", ycbcr_rst)
        write(target, "png_rgb.png", png_plain)
        write(target, "png_stealth_rgba.png", png_stealth)
        write(target, "jpeg_gray.jpg", jpeg_meta)
        write(target, "gif.gif", gif)
    write("analyse", "png_text_chunks.png", png_meta)


if __name__ == "__main__":
    main()
