"""End to end, issue 14 (remaining parts): the one B-scan viewer on the scan page, the
grading pages and the volume viewer; heatmap opacity, keyboard shortcuts and the
side-by-side comparison; a blinded tier 2 grader's page never asks for a heatmap; a
multi-slice volume scrolled by wheel, keys and slider, its localizer line and slice strip
following, and the jump to its most suspicious and key B-scans."""
from __future__ import annotations

import pytest

from inference.selectors import volume_reading
from tests import browser
from tests.browser import requires_chromium
from tests.e2e import clinic_data

pytestmark = [pytest.mark.e2e, requires_chromium]


@pytest.fixture
def clinic(live_url, tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VERIFICATION_READING_CENTRE_MODE = True
    return clinic_data.build()


def wait_viewer(page):
    page.wait_for_function("() => document.querySelector('[data-viewer-image]').naturalWidth > 0")
    page.wait_for_function("() => document.querySelector('[data-viewer]').dataset.zoom !== undefined")


def test_clinician_viewer_heatmap_opacity_shortcuts_and_comparison(live_url, browser_page, clinic):
    page, base = browser_page, live_url
    browser.sign_in(page, base, "clinician")
    scan = clinic.scans["urgent"]
    page.goto(base + scan.get_absolute_url())
    wait_viewer(page)
    viewer = page.locator("[data-viewer]").first
    assert page.locator("[data-viewer-legend]").is_visible()
    # H toggles the heatmap; ] and [ change its opacity.
    page.focus("[data-viewer-stage]")
    page.keyboard.press("h")
    overlay = page.locator("[data-viewer-overlay-image]")
    assert overlay.is_visible()
    page.wait_for_function("() => document.querySelector('[data-viewer-overlay-image]').naturalWidth > 0")
    page.keyboard.press("]")
    assert overlay.evaluate("img => img.style.opacity") == "0.65"
    page.locator("[data-viewer-opacity]").fill("20")
    assert overlay.evaluate("img => img.style.opacity") == "0.2"
    page.focus("[data-viewer-stage]")
    page.keyboard.press("h")
    assert not overlay.is_visible()
    # B brightens, F fits, ? opens the shortcuts.
    page.focus("[data-viewer-stage]")
    page.keyboard.press("b")
    assert "brightness(110%)" in page.locator("[data-viewer-image]").evaluate("img => img.style.filter")
    fit = float(viewer.get_attribute("data-zoom"))
    page.keyboard.press("+")
    page.keyboard.press("f")
    assert float(viewer.get_attribute("data-zoom")) == pytest.approx(fit, rel=1e-3)
    page.keyboard.press("?")
    assert page.locator("[data-viewer-help]").evaluate("d => d.open")
    # Side by side with a verified example.
    page.click("[data-viewer-refs] summary")
    example = clinic.scans["verified-CNV"]
    page.click(f'[data-compare-src$="/scans/{example.pk}/image/"]')
    compare = page.locator("[data-viewer-compare-image]")
    page.wait_for_function("() => document.querySelector('[data-viewer-compare-image]').naturalWidth > 0")
    assert compare.is_visible()
    stage_box = page.locator("[data-viewer-stage]").bounding_box()
    compare_box = compare.bounding_box()
    assert compare_box["x"] > stage_box["x"] + stage_box["width"] / 2  # beside it, not below
    assert "Verified" in page.locator("[data-viewer-compare-caption]").inner_text()
    page.click("[data-viewer-compare-close]")
    assert not compare.is_visible()


def test_volume_viewer_shows_each_slice_in_the_viewer_with_its_heatmap(live_url, browser_page, clinic):
    page, base = browser_page, live_url
    browser.sign_in(page, base, "clinician")
    page.goto(base + clinic.cases["second"].get_absolute_url())
    volume = page.locator("[data-volume-viewer]")
    viewer = volume.locator("[data-viewer]")
    page.wait_for_function("() => document.querySelector('[data-volume-viewer] [data-viewer-image]').naturalWidth > 0")
    first = viewer.get_attribute("data-src")
    slider = volume.locator("[data-slice-slider]")
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-src") != first
    assert volume.locator("[data-viewer-overlay-control]").is_visible()
    volume.locator("[data-viewer-overlay-toggle]").check()
    src = volume.locator("[data-viewer-overlay-image]").get_attribute("src")
    assert src.endswith(f"/analysis/scans/{clinic.volume.scans.get(slice_index=1).pk}/heatmap.png")


VOLUME_LABELS = ("NORMAL", "NORMAL", "DRUSEN", "CNV", "NORMAL", "DME", "NORMAL")


def test_volume_scrolls_by_wheel_keys_and_slider_and_jumps_to_the_most_suspicious_slice(live_url, browser_page,
                                                                                       clinic):
    page, base = browser_page, live_url
    page.set_default_timeout(60_000)  # seven B-scans read by the real model first, on a shared machine
    volume = clinic_data.volume_with_localizer(clinic, VOLUME_LABELS)
    scans = list(volume.scans.order_by("slice_index"))
    analysis = volume_reading(volume=volume)
    browser.sign_in(page, base, "clinician")
    page.goto(base + clinic.cases["volume"].get_absolute_url())
    root = page.locator("[data-volume-viewer]")
    page.wait_for_function("() => document.querySelector('[data-volume-viewer] [data-viewer-image]').naturalWidth > 0")
    page.wait_for_function("() => document.querySelector('[data-localizer] img').naturalWidth > 0")
    slider = root.locator("[data-slice-slider]")
    line = root.locator("[data-localizer-line]")
    viewer = root.locator("[data-viewer]")

    def at(index: int) -> None:
        """The slider, the strip's mark, the B-scan shown and the localizer line all say ``index``."""
        page.wait_for_function(
            "i => document.querySelector('[data-volume-viewer] [data-slice-slider]').value === String(i)", arg=index
        )
        marked = root.locator(".slice-strip li[aria-current=true]")
        assert marked.count() == 1 and marked.get_attribute("data-index") == str(index)
        assert "current" in (marked.get_attribute("class") or "")
        assert viewer.get_attribute("data-src").endswith(f"/scans/{scans[index].pk}/image/")
        assert float(line.get_attribute("data-position")) == pytest.approx(index / (len(scans) - 1), abs=1e-3)
        assert root.locator("[data-slice-label]").inner_text() == f"B-scan {index + 1} of {len(scans)}"

    def line_y() -> float:
        """The line's height on the localizer, 0 (top) to 1 (bottom), as drawn."""
        return line.evaluate("l => l.offsetTop / l.parentElement.clientHeight")

    at(0)
    top = line_y()
    # The wheel over the localizer steps down and up; over the strip too.
    root.locator("[data-localizer]").hover()
    page.mouse.wheel(0, 120)
    at(1)
    assert line_y() > top
    page.mouse.wheel(0, 120)
    at(2)
    page.mouse.wheel(0, -120)
    at(1)
    root.locator(".slice-strip").hover()
    page.mouse.wheel(0, 120)
    at(2)
    # The arrow keys step while the slider has focus.
    slider.focus()
    page.keyboard.press("ArrowRight")
    at(3)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    at(1)
    # The slider itself.
    slider.fill("5")
    at(5)
    assert line_y() == pytest.approx(5 / (len(scans) - 1), abs=0.02) and top == pytest.approx(0, abs=0.02)
    # Jump to the most suspicious B-scan: the highest urgent probability.
    suspicious = analysis.most_suspicious
    assert suspicious is not None
    expected = max(analysis.slices, key=lambda s: s["p_urgent"])["slice_index"]
    assert suspicious == expected
    slider.fill("0")
    at(0)
    root.locator("[data-goto-suspicious]").click()
    at(suspicious)
    # A key B-scan of the per-eye reading, then open it on its own page.
    assert analysis.reading is not None and analysis.reading.key_slices
    key = analysis.reading.key_slices[-1]
    slider.fill("0")
    root.locator(f'.eye-reading a[data-goto="{key}"]').click()
    at(key)
    root.locator("[data-slice-link]").click()
    page.wait_for_url(f"**{scans[key].get_absolute_url()}")
    assert page.locator("[data-viewer-image]").first.get_attribute("src").endswith(f"/scans/{scans[key].pk}/image/")


def test_grading_pages_use_the_viewer_and_blinded_tier2_never_loads_a_heatmap(live_url, browser_page, clinic):
    page, base = browser_page, live_url
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    browser.sign_in(page, base, "grader2a")
    scan = clinic.scans["tier2"]
    page.goto(base + f"/verification/scans/{scan.pk}/tier/2/")
    wait_viewer(page)
    assert page.locator("[data-viewer-overlay-control]").count() == 0
    page.focus("[data-viewer-stage]")
    page.keyboard.press("h")
    page.keyboard.press("+")  # the viewer's keys still work beside the grading keys
    assert page.locator("[data-viewer-overlay-image]").count() == 0
    assert "heatmap.png" not in page.content()
    assert not [u for u in requested if "heatmap" in u]
    # The grading keys still work: 1 chooses CNV.
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("1")
    assert page.locator('input[name=label][value="CNV"]').is_checked()

    page.context.clear_cookies()
    browser.sign_in(page, base, "grader3")
    page.goto(base + f"/verification/scans/{clinic.scans['tier3'].pk}/tier/3/")
    wait_viewer(page)
    assert page.locator("[data-viewer-overlay-control]").is_visible()


def test_viewer_pages_fit_phones_tablets_and_desktops(live_url, browser_page, clinic):
    from tests.e2e.test_clinic_day import check_fits

    page, base = browser_page, live_url
    browser.sign_in(page, base, "clinician")
    for name, url in (
        ("viewer-scan", clinic.scans["urgent"].get_absolute_url()),
        ("viewer-volume", clinic.cases["second"].get_absolute_url()),
        ("followup", f"/patients/{clinic.patient.pk}/eyes/OD/"),
        ("learn-gallery", "/learn/cnv/"),
    ):
        page.goto(base + url)
        if name == "viewer-scan":
            page.click("[data-viewer-refs] summary")
            page.locator("[data-compare-src]").first.click()
        check_fits(page, name)
    page.context.clear_cookies()
    browser.sign_in(page, base, "grader3")
    page.goto(base + f"/verification/scans/{clinic.scans['tier3'].pk}/tier/3/")
    check_fits(page, "viewer-grade-3")
