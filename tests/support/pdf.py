"""Small PDFs built by hand (no PDF-writing dependency): a valid one-page PDF, and hostile ones.

Each hostile builder makes one member of a class the upload extraction must survive:
many pages sharing one compressed content stream, a zlib bomb, a filter no parser
supports, a page tree nested deeper than any parser's recursion.
"""

from __future__ import annotations

import functools
import zlib

FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def build_pdf(objects: list[bytes]) -> bytes:
    """A PDF file of `objects` (object 1 is the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _text_ops(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1", "replace")


def _one_page(content: bytes) -> bytes:
    """A one-page PDF whose page's /Contents is the stream object `content`."""
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            content,
            FONT,
        ]
    )


def pdf_with_text(text: str) -> bytes:
    return _one_page(stream(_text_ops(text)))


def pdf_pages_sharing_one_stream(*, pages: int = 2000, operations: int = 20000) -> bytes:
    """`pages` pages that are one page object listed again and again, with one Flate content
    stream of `operations` text-showing operators: about 12 KB that costs minutes to extract."""
    content = b"BT /F1 1 Tf " + b"(hostile) Tj 0 1 Td " * operations + b"ET"
    kids = b" ".join([b"3 0 R"] * pages)
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            stream(zlib.compress(content, 9), b"/Filter /FlateDecode "),
            FONT,
        ]
    )


@functools.lru_cache(maxsize=8)
def zlib_bomb(decompressed_mib: int) -> bytes:
    """zlib data that inflates to `decompressed_mib` MiB of spaces (about 1,000 : 1).

    Built without compressing it all: after a full flush the deflate output for the same
    1 MiB is the same bytes, so one segment is repeated and the checksum computed.
    """
    chunk = b" " * (1 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(decompressed_mib):
        checksum = zlib.adler32(chunk, checksum)
    final_empty_block = b"\x03\x00"
    return first + segment * (decompressed_mib - 1) + final_empty_block + checksum.to_bytes(4, "big")


def pdf_zlib_bomb(*, decompressed_mib: int = 512) -> bytes:
    """A page whose Flate content stream inflates to `decompressed_mib` MiB (512 MiB from ~0.5 MB)."""
    return _one_page(stream(zlib_bomb(decompressed_mib), b"/Filter /FlateDecode "))


def pdf_with_filter(filter_name: str, data: bytes = b"\x00\x01\x02 not decodable") -> bytes:
    """A page whose content stream claims `filter_name` (e.g. an unsupported or made-up filter)."""
    return _one_page(stream(data, b"/Filter /%s " % filter_name.encode("ascii")))


def pdf_deep_page_tree(depth: int) -> bytes:
    """A page tree of `depth` nested /Pages nodes above the one page."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    # Objects 2 .. depth+1 are /Pages nodes, each the only kid of the one before.
    for level in range(depth):
        number = 2 + level
        parent = b"/Parent %d 0 R " % (number - 1) if level else b""
        objects.append(b"<< /Type /Pages %s/Kids [%d 0 R] /Count 1 >>" % (parent, number + 1))
    page, content, font = depth + 2, depth + 3, depth + 4
    objects.append(
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (page - 1, content, font)
    )
    objects.append(stream(_text_ops("deep")))
    objects.append(FONT)
    return build_pdf(objects)


def pdf_cyclic_page_tree() -> bytes:
    """A /Pages node whose kids include itself."""
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            stream(_text_ops("cycle")),
            FONT,
        ]
    )
