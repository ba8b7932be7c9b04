"""What a stored file really is, and its thumbnail (Pillow).

The type is sniffed from the bytes (magic numbers), never taken from the client. Thumbnails are
decoded in draft mode (a JPEG is decoded at 1/2, 1/4 or 1/8 scale, never in full), turned upright
from the EXIF orientation, fitted in a square box and saved without any metadata.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import filetype
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Types Pillow thumbnails; other allowed types (video, PDF) are stored without a thumbnail.
THUMBNAILED_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
# Orientations that swap width and height (rotations by 90 or 270 degrees, with or without a mirror).
_QUARTER_TURNS = {5, 6, 7, 8}
# Enough of a file's head for every signature `filetype` knows.
SNIFF_BYTES = 8192
# JPEGs decode at 1/8 scale (draft mode); other formats decode in full, so above this many pixels
# (160 MB as RGBA) they are stored without a thumbnail rather than held in memory.
MAX_FULL_DECODE_PIXELS = 40_000_000


class ImageRejected(ValueError):
    """The bytes claim to be an image Pillow can read, but are not (or are a decompression bomb)."""


class TooLargeToThumbnail(Exception):
    """A valid image whose format has no reduced decoding and that is too large to decode in full."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width}x{height} is too large to decode for a thumbnail")
        self.width, self.height = width, height


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int
    # The source image's displayed size (after its EXIF orientation).
    source_width: int
    source_height: int


def normalize_type(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def sniff(head: bytes) -> str | None:
    """The content type the bytes really have, or None when no known signature matches."""
    kind = filetype.guess(head[:SNIFF_BYTES])
    return normalize_type(kind.mime) if kind else None


def make_thumbnail(data: bytes, box: int) -> Thumbnail:
    """Fit the image in ``box`` x ``box``, upright, with no metadata (JPEG, or PNG when transparent)."""
    with warnings.catch_warnings():
        # A DecompressionBombWarning (over Image.MAX_IMAGE_PIXELS) is a refusal, not a warning.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                width, height = image.size
                if orientation in _QUARTER_TURNS:
                    width, height = height, width
                if image.format != "JPEG" and image.width * image.height > MAX_FULL_DECODE_PIXELS:
                    raise TooLargeToThumbnail(width, height)
                image.draft("RGB", (box, box))
                upright = ImageOps.exif_transpose(image)
                has_alpha = upright.mode in ("RGBA", "LA", "PA") or (
                    upright.mode == "P" and "transparency" in upright.info
                )
                upright = upright.convert("RGBA" if has_alpha else "RGB")
                upright.thumbnail((box, box), Image.Resampling.LANCZOS)
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(str(exc)) from exc
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise ImageRejected(f"unreadable image: {exc}") from exc
    out = io.BytesIO()
    if has_alpha:
        upright.save(out, format="PNG", optimize=True)
        content_type = "image/png"
    else:
        upright.save(out, format="JPEG", quality=85, optimize=True)
        content_type = "image/jpeg"
    return Thumbnail(out.getvalue(), content_type, upright.width, upright.height, width, height)
