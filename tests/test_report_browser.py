"""The study report in a real browser: images decode and patient cards open (headless Chromium).

A copy of report.html gets a small probe script appended; Chromium loads it with the URL fragment of one
patient card, runs the page for a few seconds of virtual time and prints the DOM (``--dump-dom``). The probe
writes what it found into the DOM: how many images decoded (naturalWidth > 0), whether the targeted card is
displayed, whether the other cards are hidden, and whether the card's images decoded.
Skipped when no Chromium is installed (CI installs Debian's `chromium` in .ci/run).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None, reason="no headless browser (install Debian's chromium) to render the report"
    ),
]

PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var card = document.querySelector(':target');
  var cards = document.querySelectorAll('section.card');
  var shown = Array.prototype.filter.call(cards, function (c) { return getComputedStyle(c).display !== 'none'; });
  var cardImgs = card ? Array.prototype.slice.call(card.querySelectorAll('img')) : [];
  var r = {
    images: imgs.length,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    target: card ? card.id : null,
    target_shown: card ? getComputedStyle(card).display !== 'none' : false,
    cards: cards.length,
    cards_shown: shown.length,
    card_images: cardImgs.length,
    card_images_decoded: cardImgs.filter(function (i) { return i.naturalWidth > 0; }).length,
    upscaled: imgs.filter(function (i) {
      // 2% slack: a border or sub-pixel layout is not a blown-up figure.
      return i.getBoundingClientRect().width > 0 && 1.02 * i.naturalWidth < i.getBoundingClientRect().width;
    }).map(function (i) { return i.alt + ': ' + i.naturalWidth + ' < ' + i.getBoundingClientRect().width; }),
    external_refs: document.querySelectorAll('link[href], script[src], img[src^="http"]').length
  };
  var pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>
"""


def _render(html_file: Path, fragment: str) -> dict:
    profile = tempfile.mkdtemp(prefix="cdeg_chromium_")
    try:
        cmd = [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{html_file.as_uri()}#{fragment}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe result; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, tiny_run: dict) -> tuple[dict, str]:
    import pandas as pd

    report = tiny_run["out"] / "report" / "report.html"
    ids = pd.read_csv(tiny_run["out"] / "cohorts" / "development" / "clinical.csv", dtype={"patient_id": str})
    pid = ids["patient_id"].iloc[2]
    copy = tmp_path_factory.mktemp("browser") / "report_probe.html"
    copy.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    return _render(copy, f"patient-{pid}"), pid


def test_every_image_renders(probed: tuple[dict, str]) -> None:
    r, _ = probed
    assert r["images"] >= 10
    assert r["decoded"] == r["images"], r["broken"]
    assert r["external_refs"] == 0


def test_figures_are_not_enlarged_beyond_their_pixels(probed: tuple[dict, str]) -> None:
    # An image shown wider than its natural width is blown up, and its text blurred.
    r, _ = probed
    assert r["upscaled"] == []


def test_patient_card_opens_from_its_link(probed: tuple[dict, str]) -> None:
    r, pid = probed
    assert r["target"] == f"patient-{pid}" and r["target_shown"]
    assert r["cards"] >= 20 and r["cards_shown"] == 1  # the other cards stay closed
    # the card shows a waterfall per question and the patient's segmentation overlay
    assert r["card_images"] >= 3 and r["card_images_decoded"] == r["card_images"]


def test_report_is_self_contained(tiny_run: dict) -> None:
    text = (tiny_run["out"] / "report" / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert 'src="data:image/png;base64,' in text
    for words in (
        "How to read this",
        "accelerated degeneration",
        "Dice",
        "HD95",
        "calibration",
        "Provenance",
    ):
        assert words in text, words
