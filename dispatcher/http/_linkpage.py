"""The page of an approval link, for a browser: what it approves, and two buttons.

Plain HTML with one inline script (allowed by its nonce alone) and no outside resources;
every value on it is escaped.
The buttons ``POST`` ``{"approved": true}`` or ``{"approved": false}`` to the page's own URL
and show the answer; without JavaScript the page still says what the link is for.
"""

from __future__ import annotations

from html import escape

from engine import LinkTarget
from storage import iso

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem}dt{color:#666}
dd{margin:0;word-break:break-all}button{font-size:1rem;padding:.5rem 1.4rem;margin-right:.6rem}
#result{margin-top:1.2rem;font-weight:600}
"""
_SCRIPT = """
function decide(approved) {
  var result = document.getElementById("result");
  document.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
  result.textContent = "Sending\\u2026";
  fetch(window.location.pathname, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({approved: approved}),
  }).then(function (reply) {
    if (reply.status === 202) {
      result.textContent = approved ? "Approved. Thank you." : "Rejected. Thank you.";
    } else if (reply.status === 410) {
      result.textContent = "This link has expired; nothing was sent.";
    } else {
      result.textContent = "Not sent (HTTP " + reply.status + "); try again.";
      document.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
    }
  }, function () {
    result.textContent = "Not sent: the server could not be reached; try again.";
    document.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
  });
}
document.getElementById("approve").addEventListener("click", function () { decide(true); });
document.getElementById("reject").addEventListener("click", function () { decide(false); });
"""


def link_page(target: LinkTarget, nonce: str) -> str:
    rows = (
        ("Workflow", target.workflow),
        ("Instance", target.instance_id),
        ("Event", target.event_type),
        ("Uses left", str(target.uses_left)),
        ("Expires", iso(target.expires_at) or ""),
    )
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    body = (
        "<h1>Approval requested</h1>"
        f"<dl>{facts}</dl>"
        '<p><button id="approve" type="button">Approve</button>'
        '<button id="reject" type="button">Reject</button></p>'
        '<p id="result" role="status"></p>'
        f'<script nonce="{escape(nonce)}">{_SCRIPT}</script>'
    )
    return _document("Approval requested", body)


def expired_page() -> str:
    body = (
        "<h1>This link has expired</h1>"
        "<p>It was used, its time ran out, or what it was for has ended. Nothing was sent.</p>"
    )
    return _document("Link expired", body)


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
