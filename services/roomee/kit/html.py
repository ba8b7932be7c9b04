"""The few HTML pages the platform serves itself (a hotel's join page, the built-in sign-up form):
one self-contained shell, no external JavaScript, CSS, fonts or images."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

__all__ = ["escape", "html_page", "html_responses"]

_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:32rem;margin:3rem auto;"
    "padding:0 1rem;color:#1d2330;line-height:1.5}h1{font-size:1.5rem}label{display:block;margin:.75rem 0 .25rem}"
    "input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}button,.button{display:inline-block;"
    "margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem;background:#1d4ed8;color:#fff;border:0;border-radius:.3rem;"
    "text-decoration:none}.note{color:#555;font-size:.9rem}.error{color:#b91c1c}.ok{color:#15803d}"
)


def html_page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    """A page with ``body`` (HTML the caller escaped). Never cached, never sent as a referrer: its URL may
    carry a token."""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def html_responses(descriptions: dict[int, str]) -> dict[int | str, dict]:
    """OpenAPI entries of HTML answers, by status code."""
    return {status: {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}
            for status, description in descriptions.items()}
