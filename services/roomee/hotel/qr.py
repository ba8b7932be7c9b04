"""The hotel's QR code: a PNG (``qrcode``) of the link staff scan to join the hotel."""

from __future__ import annotations

import io

import qrcode
from qrcode.constants import ERROR_CORRECT_M


def join_link(base: str, hotel_id: str) -> str:
    return f"{base.rstrip('/')}/{hotel_id}"


def qr_png(data: str) -> bytes:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=10, border=4)
    code.add_data(data)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer)
    return buffer.getvalue()
