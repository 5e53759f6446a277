"""The browser playground: a static page and its routes."""

from __future__ import annotations

from playground._page import page_html, routes

__all__ = ["page_html", "routes"]
