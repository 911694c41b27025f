"""The playground as a user drives it: key, endpoint picker, generated form, live progress
over the status stream, results, cancel, history, and fal's 422 detail per field."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, Request, expect

from tests.e2e.conftest import Server
from tests.playground.conftest import shot

pytestmark = pytest.mark.slow  # a server process and a browser

STATIC = Path(__file__).resolve().parents[2] / "src" / "openfal" / "http" / "static"


def open_playground(page: Page, server: Server, endpoint: str | None = None, *, key: bool = True) -> None:
    page.goto(f"{server.url}/" + (f"#{endpoint}" if endpoint else ""))
    expect(page.locator("#endpoint option").first).to_be_attached()
    if key:
        page.get_by_label("API key").fill(server.key)
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator("#key-state")).to_have_text("Saved in this browser")
    if endpoint:
        expect(page.get_by_label("Endpoint")).to_have_value(endpoint)


def field(page: Page, label: str):
    return page.get_by_label(re.compile(rf"^{label}\b"))


def raw_json(page: Page) -> dict:
    box = page.locator("#raw-box")
    expect(box).to_be_visible()
    return json.loads(page.locator("#raw-json").text_content() or "null")


# ---- served locally --------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in {"src", "href"} and v]


def test_page_and_assets_are_served_locally_without_a_key(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = _Refs()
    refs.feed(page.text)
    assert refs.refs and all(r.startswith(("/", "#")) for r in refs.refs), refs.refs
    for ref in refs.refs:
        if ref.startswith("/playground/"):
            assert httpx.get(server.url + ref).status_code == 200, ref
    for module in STATIC.glob("*.js"):
        for target in re.findall(r"""from\s+["']([^"']+)["']""", module.read_text()):
            assert target.startswith("./"), (module.name, target)
            assert httpx.get(f"{server.url}/playground/{target[2:]}").headers["content-type"].startswith("text/javascript")
    css = "".join(p.read_text() for p in STATIC.glob("*.css"))
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:)?//", css)
    assert httpx.get(server.url + "/playground/missing.js").status_code == 404
    assert httpx.get(server.url + "/playground/.hidden.js").status_code == 404
    # the queue's routes are untouched
    assert httpx.get(server.url + "/api/endpoints").status_code == 200
    assert httpx.get(server.url + "/openfal/utils/requests/x/status").status_code == 401


# ---- the key ---------------------------------------------------------------------------


def test_a_missing_key_is_asked_for_then_kept_in_local_storage(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "openfal/utils/sleep", key=False)
    expect(page.locator("#key-state")).to_have_text("No key")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Unauthorized")
    expect(page.locator("#banner")).to_contain_text("needs an API key")
    expect(page.locator("#key-form")).to_have_class(re.compile("attention"))
    expect(page.get_by_label("API key")).to_be_focused()
    shot(page, artifacts, "01-key-required")

    page.get_by_label("API key").fill("nope:wrong")
    page.get_by_label("API key").press("Enter")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#banner")).to_contain_text("key was refused")

    page.get_by_label("API key").fill(server.key)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#banner")).to_be_hidden()
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(server.key)
    assert page.evaluate("localStorage.getItem('openfal.playground.key')") == server.key
    expect(page.get_by_label("Endpoint")).to_have_value("openfal/utils/sleep")  # remembered too


# ---- a run, followed over the stream ---------------------------------------------------


def test_sleep_streams_queue_progress_logs_and_result(page: Page, server: Server, artifacts: Path) -> None:
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if "/status/stream" in r.url else None)
    open_playground(page, server, "openfal/utils/sleep")
    expect(field(page, "Seconds")).to_have_value("1")
    expect(field(page, "Steps")).to_have_value("10")
    field(page, "Seconds").fill("2.4")
    field(page, "Steps").fill("6")
    page.get_by_role("button", name="Run", exact=True).click()

    expect(page.locator("#status-pill")).to_have_text("Running")
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"step [2-5] / 6"))
    expect(page.locator("#logs li").first).to_contain_text("step 1/6")
    shot(page, artifacts, "02-sleep-running")

    expect(page.locator("#status-pill")).to_have_text("Completed", timeout=20_000)
    expect(page.locator("#progress-text")).to_have_text("step 6 / 6")
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#logs li")).to_have_count(6)  # incremental logs, none twice
    expect(page.locator("#logs li").last).to_contain_text("step 6/6")
    expect(page.locator("#cancel")).to_be_hidden()
    assert raw_json(page) == {"slept": 2.4, "steps": 6}
    expect(page.locator("#raw-box")).to_have_attribute("open", "")  # a JSON result is shown open
    expect(page.locator("#meta")).to_contain_text("Round trip")
    shot(page, artifacts, "03-sleep-done")

    # followed with the SSE stream, authenticated by header (EventSource could not)
    assert streams and streams[0].url.endswith("/status/stream?logs=1")
    assert streams[0].headers["authorization"] == f"Key {server.key}"


def test_a_422_is_rendered_next_to_each_field(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "openfal/utils/sleep")
    field(page, "Seconds").fill("-1")
    field(page, "Steps").fill("5000")
    page.get_by_role("button", name="Run", exact=True).click()

    expect(page.locator("#status-pill")).to_have_text("Invalid input")
    steps = page.locator('[data-field="steps"]')
    seconds = page.locator('[data-field="seconds"]')
    expect(steps.locator(".field-error")).to_contain_text("less than or equal to 1000")
    expect(seconds.locator(".field-error")).to_contain_text("greater than or equal to 0")
    expect(field(page, "Steps")).to_have_attribute("aria-invalid", "true")
    # the message is tied to its input for screen readers
    described = field(page, "Steps").get_attribute("aria-describedby") or ""
    assert steps.locator(".field-error").get_attribute("id") in described.split()
    expect(page.locator("#error")).to_contain_text("The input was rejected")
    expect(page.locator("#error")).to_contain_text("2 problems")
    expect(page.locator("#error li")).to_have_count(2)
    shot(page, artifacts, "04-invalid-input")

    field(page, "Steps").fill("2")
    field(page, "Seconds").fill("0")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Completed")
    expect(steps.locator(".field-error")).to_be_hidden()


def test_cancel_a_running_and_a_queued_sleep(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "openfal/utils/sleep")
    field(page, "Seconds").fill("60")
    field(page, "Steps").fill("120")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Running")

    # a second tab with the same key: the one builtin slot is busy, so it waits
    second = page.context.new_page()
    open_playground(second, server, "openfal/utils/sleep", key=False)
    page_key = second.get_by_label("API key").input_value()
    assert page_key == server.key
    field(second, "Seconds").fill("1")
    second.get_by_role("button", name="Run", exact=True).click()
    expect(second.locator("#status-pill")).to_have_text("Queued · next")
    expect(second.locator("#progress-text")).to_have_text("waiting")
    shot(second, artifacts, "05-queued")
    second.get_by_role("button", name="Cancel", exact=True).click()
    expect(second.locator("#status-pill")).to_have_text("Cancelled")
    expect(second.locator("#error")).to_contain_text("Cancelled")
    expect(second.locator("#cancel")).to_be_hidden()
    second.close()

    expect(page.locator("#progress-text")).to_have_text(re.compile(r"step \d+ / 120"))
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Cancelled", timeout=10_000)
    expect(page.locator("#error")).to_contain_text("Request cancelled by the client.")
    expect(page.locator("#error")).to_have_attribute("data-tone", "neutral")
    # the bar stays where the run was stopped, not drawn full
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"cancelled at step \d+ / 120"))
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("data-outcome", "cancelled")
    assert int(bar.get_attribute("aria-valuenow") or "100") < 100
    shot(page, artifacts, "06-cancelled")


def test_a_failed_run_leaves_the_bar_at_its_last_step(page: Page, server: Server) -> None:
    """A run that fails (here after its 2nd of 2 steps, an input the endpoint rejects
    while running) is drawn as failed at that step, in the error colour."""
    open_playground(page, server, "openfal/utils/sleep")
    field(page, "Seconds").fill("0")
    field(page, "Steps").fill("2")
    page.locator("#advanced summary").click()
    field(page, "Fail with").fill("boom")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Failed")
    expect(page.locator("#progress-text")).to_have_text("failed at step 2 / 2")
    expect(page.get_by_role("progressbar")).to_have_attribute("data-outcome", "failed")


# ---- history ---------------------------------------------------------------------------


def test_history_lists_the_keys_requests_and_loads_their_results(page: Page, server: Server, artifacts: Path) -> None:
    headers = {"Authorization": f"Key {server.key}"}
    echo = httpx.post(f"{server.url}/openfal/utils/echo", json={"from": "history", "n": 3}, headers=headers).json()
    failed = httpx.post(f"{server.url}/openfal/utils/sleep", json={"seconds": 0, "steps": 1, "fail_with": "boom"}, headers=headers).json()
    for submitted in (echo, failed):
        with httpx.stream("GET", submitted["status_url"] + "/stream", headers=headers, timeout=30) as stream:
            for _ in stream.iter_lines():
                pass

    open_playground(page, server, "openfal/utils/echo")
    echo_item = page.locator(f'.history-item[data-request-id="{echo["request_id"]}"]')
    failed_item = page.locator(f'.history-item[data-request-id="{failed["request_id"]}"]')
    expect(echo_item).to_contain_text("Completed")
    expect(echo_item).to_contain_text("openfal/utils/echo")
    expect(failed_item).to_contain_text("Failed")

    failed_item.click()
    expect(page.locator("#status-pill")).to_have_text("Failed")
    expect(page.locator("#error")).to_contain_text("boom")
    expect(page.locator("#error")).to_contain_text("runner_server_error")
    expect(failed_item).to_have_attribute("aria-current", "true")

    echo_item.click()
    expect(page.locator("#status-pill")).to_have_text("Completed")
    expect(page.locator("#request-line")).to_contain_text("from history")
    assert raw_json(page) == {"echo": {"from": "history", "n": 3}}
    shot(page, artifacts, "07-history")

    # the echo form is a JSON editor; bad JSON stays in the browser
    editor = page.get_by_label("Input JSON")
    editor.fill("{not json")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator('[data-field="body"] .field-error')).to_contain_text("Not valid JSON")
    editor.fill('{"a": [1, 2], "b": "c"}')
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#status-pill")).to_have_text("Completed")
    assert raw_json(page) == {"echo": {"a": [1, 2], "b": "c"}}
    expect(page.locator(".history-item").first).to_contain_text("openfal/utils/echo")


# ---- FLUX on the tiny demo models ------------------------------------------------------


def test_flux_schnell_image_in_the_gallery(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "fal-ai/flux-1/schnell")
    field(page, "Prompt").fill("a lighthouse at dawn, watercolor")
    size = page.get_by_label("Image size")
    expect(size).to_have_value("landscape_4_3")
    # the presets as fal's playground names them
    assert size.locator("option").all_text_contents() == [
        "Square HD · 1024 × 1024", "Square · 512 × 512", "Portrait 3:4 · 768 × 1024",
        "Portrait 9:16 · 576 × 1024", "Landscape 4:3 · 1024 × 768", "Landscape 16:9 · 1024 × 576", "Custom…",
    ]  # fmt: skip
    size.select_option("custom")
    page.get_by_label("Width", exact=True).fill("320")
    page.get_by_label("Height", exact=True).fill("208")
    field(page, "Number of inference steps").fill("3")
    field(page, "Number of images").fill("2")
    page.locator("#advanced summary").click()
    field(page, "Seed").fill("42")
    page.get_by_label("Output format").select_option("png")
    expect(page.get_by_role("switch", name="Enable safety checker")).to_be_checked()
    page.get_by_role("button", name="Run", exact=True).click()

    images = page.locator("#gallery img")
    expect(images).to_have_count(2, timeout=60_000)
    expect(page.locator("#status-pill")).to_have_text("Completed")
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    result = raw_json(page)
    assert result["seed"] == 42 and len(result["images"]) == 2
    for i, produced in enumerate(result["images"]):
        assert (produced["width"], produced["height"]) == (320, 208)
        assert images.nth(i).evaluate("img => [img.naturalWidth, img.naturalHeight]") == [320, 208]
        assert images.nth(i).get_attribute("src") == produced["url"]
        download = page.get_by_role("link", name=f"Download image {i + 1} of 2")
        assert download.get_attribute("href") == produced["url"]
        assert (download.get_attribute("download") or "").endswith(f"-{i + 1}.png")
    expect(page.locator("#meta")).to_contain_text("42")
    expect(page.locator("#meta")).to_contain_text("320 × 208")
    expect(page.locator("#meta")).to_contain_text("Inference")
    expect(page.locator("#gallery figcaption").first).to_contain_text("320 × 208 · PNG")
    expect(page.locator("#progress-text")).to_have_text("step 3 / 3")
    expect(page.locator("#logs li").first).to_contain_text("seed 42")
    expect(page.locator("#raw-box")).not_to_have_attribute("open", "")
    shot(page, artifacts, "08-flux-result", full_page=True)
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(400)  # colour transitions
    shot(page, artifacts, "09-flux-result-dark")


def test_image_inputs_list_and_file_picker(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "fal-ai/flux-pro/kontext/multi")
    urls = page.locator('[data-field="image_urls"] input[type="url"]')
    expect(urls).to_have_count(1)  # minItems
    page.get_by_role("button", name="+ Add URL").click()
    page.get_by_role("button", name="+ Add URL").click()
    expect(urls).to_have_count(3)
    page.get_by_label("Image URLs 2", exact=True).fill("https://example.com/b.png")
    page.get_by_role("button", name="Remove Image URLs 3").click()
    expect(urls).to_have_count(2)
    page.get_by_label("Image URLs 1", exact=True).fill("https://example.com/a.png")
    field(page, "Prompt").fill("put them together")
    expect(page.get_by_label("Aspect ratio")).to_have_value("")  # optional enum: not set
    page.locator(".request-preview summary").click()
    body = json.loads(page.locator("#request-json").text_content() or "{}")
    assert body["image_urls"] == ["https://example.com/a.png", "https://example.com/b.png"]
    assert "aspect_ratio" not in body and body["prompt"] == "put them together"
    assert body["output_format"] == "jpeg" and body["enhance_prompt"] is False

    # image to image with a local file: it goes in as a data: URI and comes back as an image
    page.get_by_label("Endpoint").select_option("fal-ai/flux-1/dev/image-to-image")
    png = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 120, 200)).save(png, "PNG")
    page.get_by_label("Image URL: choose a local file").set_input_files({"name": "blue.png", "mimeType": "image/png", "buffer": png.getvalue()})
    url_input = page.get_by_label("Image URL", exact=True)
    expect(url_input).to_have_value(re.compile(r"^data:image/png;base64,"))
    assert base64.b64decode(url_input.input_value().split(",", 1)[1]) == png.getvalue()
    expect(page.locator('[data-field="image_url"] .file-note')).to_contain_text("blue.png")
    expect(page.locator('[data-field="image_url"] .thumb img')).to_be_visible()
    field(page, "Prompt").fill("make it red")
    field(page, "Number of inference steps").fill("10")
    field(page, "Strength").fill("0.5")
    shot(page, artifacts, "10-image-inputs")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#gallery img")).to_be_visible(timeout=60_000)
    produced = raw_json(page)["images"][0]
    assert (produced["width"], produced["height"]) == (96, 64)


def test_a_scoped_key_sees_its_credit_and_only_its_endpoints(page: Page, server: Server, artifacts: Path) -> None:
    """A customer key with $5 credit, limited to FLUX.1 [schnell] endpoints: the key
    state shows the credit (from /api/me) and the endpoint picker offers only those."""
    import subprocess
    import sys

    from tests.e2e.conftest import create_key
    from tests.support import ROOT

    key = create_key(server.data_dir, "customer")
    openfal = [sys.executable, "-m", "openfal", "--data-dir", str(server.data_dir), "keys"]
    key_id = key.split(":")[0]
    subprocess.run([*openfal, "limits", key_id, "--endpoint", "fal-ai/flux-1/schnell*"], check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*openfal, "credit", key_id, "5"], check=True, capture_output=True, cwd=ROOT)
    page.goto(f"{server.url}/")
    expect(page.locator("#endpoint option").first).to_be_attached()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#key-state")).to_have_text("Saved in this browser · $5.00 credit")
    expect(page.locator("#endpoint option")).to_have_count(2)
    options = page.locator("#endpoint option").evaluate_all("els => els.map(e => e.value)")
    assert options == ["fal-ai/flux-1/schnell", "fal-ai/flux-1/schnell/redux"]
    shot(page, artifacts, "13-scoped-key")


def test_narrow_screen_layout(page: Page, server: Server, artifacts: Path) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_playground(page, server, "fal-ai/flux-1/schnell")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, artifacts, "11-narrow", full_page=True)
    # the theme button cycles automatic -> light -> dark, and is remembered
    theme = page.get_by_role("button", name=re.compile("Colour theme"))
    theme.click()
    expect(theme).to_have_attribute("aria-label", "Colour theme: light")
    theme.click()
    expect(theme).to_have_attribute("aria-label", "Colour theme: dark")
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    expect(page.locator("#endpoint option").first).to_be_attached()
    page.wait_for_timeout(300)
    shot(page, artifacts, "11-narrow-dark")


def test_flux_preview_streams_while_running(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "fal-ai/flux-1/dev")
    field(page, "Prompt").fill("a quiet harbour at night")
    page.get_by_label("Image size").select_option("square_hd")
    field(page, "Number of inference steps").fill("24")
    page.get_by_role("button", name="Run", exact=True).click()

    preview = page.locator("#preview img")
    expect(preview).to_be_visible(timeout=30_000)
    # a preview is never public: its URL is signed for the requester (see README, previews)
    assert re.search(r"/files/.+/preview\.jpg\?fal_signature=", preview.get_attribute("src") or "")
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"step \d+ / 24"))
    page.wait_for_function("document.querySelector('#preview img').complete")
    assert page.evaluate("document.querySelector('#preview img').naturalWidth") > 0  # the browser could read it
    shot(page, artifacts, "12-flux-preview")
    expect(page.locator("#status-pill")).to_have_text("Completed", timeout=60_000)
    expect(page.locator("#preview")).to_be_hidden()
    expect(page.locator("#gallery img")).to_have_attribute("src", re.compile(r"/files/.+\.jpg$"))
    assert (raw_json(page)["images"][0]["width"], raw_json(page)["images"][0]["height"]) == (1024, 1024)


def test_ltx_video_plays_in_the_gallery(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "fal-ai/ltx-video")
    expect(page.locator("#endpoint-info .badge.kind-video")).to_have_text("video")
    field(page, "Prompt").fill("waves rolling onto a beach")
    field(page, "Number of inference steps").fill("1")
    page.get_by_role("button", name="Run", exact=True).click()

    video = page.locator("#gallery video")
    expect(video).to_be_visible(timeout=90_000)
    result = raw_json(page)
    assert video.get_attribute("src") == result["video"]["url"]
    page.wait_for_function("document.querySelector('#gallery video').readyState >= 1", timeout=15_000)
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [768, 512]
    expect(page.locator("#gallery figcaption")).to_contain_text(re.compile(r"768 × 512 · [\d.]+ s · MP4"))
    expect(page.get_by_role("link", name="Download video")).to_have_attribute("href", result["video"]["url"])
    expect(page.locator("#meta")).to_contain_text(str(result["seed"]))
    shot(page, artifacts, "13-ltx-video")


def test_wan_video_plays_in_the_gallery(page: Page, server: Server, artifacts: Path) -> None:
    """fal-ai/wan/v2.2-5b/text-to-video on the tiny TI2V-5B at fal's 580p 9:16 size
    (576x1024; the demo makes fal's real sizes), 17 frames, 1 step: the MP4 plays in the
    gallery at that size, with the seed and the prompt in the result."""
    open_playground(page, server, "fal-ai/wan/v2.2-5b/text-to-video")
    expect(page.locator("#endpoint-info .badge.kind-video")).to_have_text("video")
    field(page, "Prompt").fill("a paper boat on a pond")
    field(page, "Number of frames").fill("17")
    field(page, "Number of inference steps").fill("1")
    page.get_by_label("Resolution").select_option("580p")
    page.get_by_label("Aspect ratio").select_option("9:16")
    page.get_by_role("button", name="Run", exact=True).click()

    video = page.locator("#gallery video")
    expect(video).to_be_visible(timeout=240_000)
    result = raw_json(page)
    assert video.get_attribute("src") == result["video"]["url"] and result["prompt"] == "a paper boat on a pond"
    page.wait_for_function("document.querySelector('#gallery video').readyState >= 1", timeout=15_000)
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [576, 1024]
    expect(page.locator("#gallery figcaption")).to_contain_text(re.compile(r"576 × 1024 · [\d.]+ s · MP4"))
    expect(page.locator("#meta")).to_contain_text(str(result["seed"]))
    shot(page, artifacts, "13b-wan-video")


def test_the_lora_list_editor_uploads_a_lora_and_runs_with_it(page: Page, server: Server, artifacts: Path, tmp_path: Path) -> None:
    """fal-ai/flux-lora: rows of path + scale are added and removed; a .safetensors file
    is uploaded through the storage API (not inlined) and the run applies it."""
    from openfal.backends.local.tiny import build_tiny_models
    from tests.local.lora_makers import linear_shapes, peft_lora, transformer_of

    build_tiny_models(tmp_path, names=("flux-dev",))
    lora = peft_lora(linear_shapes(transformer_of(tmp_path)), tmp_path / "style.safetensors")
    open_playground(page, server, "fal-ai/flux-lora")
    rows = page.locator('[data-field="loras"] li')
    expect(rows).to_have_count(0)  # default []
    add = page.get_by_role("button", name="+ Add LoRA")
    add.click()
    add.click()
    expect(rows).to_have_count(2)
    page.get_by_label("LoRA 1: URL or name").fill("house-style")
    page.get_by_label("LoRA 1: scale").fill("0.8")
    page.get_by_role("button", name="Remove LoRA 1").click()
    expect(rows).to_have_count(1)
    page.get_by_label("LoRA 1: upload a .safetensors file").set_input_files(
        {"name": "style.safetensors", "mimeType": "application/octet-stream", "buffer": lora.read_bytes()}
    )
    path = page.get_by_label("LoRA 1: URL or name")
    expect(path).to_have_value(re.compile(r"/files/"))
    expect(page.locator('[data-field="loras"] .file-note')).to_contain_text("uploaded")
    field(page, "Prompt").fill("a fox in the style")
    page.get_by_label("Image size").select_option("square")
    field(page, "Number of inference steps").fill("2")
    page.locator(".request-preview summary").click()
    body = json.loads(page.locator("#request-json").text_content() or "{}")
    assert body["loras"] == [{"path": path.input_value(), "scale": 1}]
    shot(page, artifacts, "14-lora-editor")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#gallery img")).to_be_visible(timeout=90_000)
    expect(page.locator("#logs")).to_contain_text("LoRAs applied")


def test_several_reference_images_picked_at_once_fill_image_urls(page: Page, server: Server, artifacts: Path) -> None:
    """FLUX.2 [klein] 4B edit: three local files chosen in one picker fill three image_urls
    rows in order (as data: URIs); the edit runs and takes the first image's size."""
    open_playground(page, server, "fal-ai/flux-2/klein/4b/edit")
    files = []
    for name, size, color in (("a.png", (96, 64), (200, 40, 40)), ("b.png", (64, 64), (40, 200, 40)), ("c.png", (64, 80), (40, 40, 200))):
        png = io.BytesIO()
        Image.new("RGB", size, color).save(png, "PNG")
        files.append({"name": name, "mimeType": "image/png", "buffer": png.getvalue()})
    page.get_by_label("Image URLs 1: choose a local file").set_input_files(files)
    urls = page.locator('[data-field="image_urls"] input[type="url"]')
    expect(urls).to_have_count(3)
    for index, file in enumerate(files):
        expect(urls.nth(index)).to_have_value(re.compile(r"^data:image/png;base64,"))
        assert base64.b64decode(urls.nth(index).input_value().split(",", 1)[1]) == file["buffer"]
    field(page, "Prompt").fill("put them together")
    shot(page, artifacts, "15-flux2-references")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#gallery img")).to_be_visible(timeout=120_000)
    produced = raw_json(page)["images"][0]
    assert (produced["width"], produced["height"]) == (96, 64)


def test_qwen_edit_takes_several_uploaded_images(page: Page, server: Server, artifacts: Path) -> None:
    """Qwen-Image-Edit-2511's form: one image picker per reference, each local file sent
    as a data: URI; the result has the last image's size."""
    open_playground(page, server, "fal-ai/qwen-image-edit-2511")
    page.get_by_role("button", name="+ Add URL").click()
    for index, (size, color) in enumerate((((64, 64), (200, 40, 40)), ((48, 32), (40, 200, 40))), start=1):
        png = io.BytesIO()
        Image.new("RGB", size, color).save(png, "PNG")
        page.get_by_label(f"Image URLs {index}: choose a local file").set_input_files({"name": f"{index}.png", "mimeType": "image/png", "buffer": png.getvalue()})
        expect(page.get_by_label(f"Image URLs {index}", exact=True)).to_have_value(re.compile(r"^data:image/png;base64,"))
    field(page, "Prompt").fill("put the red square on the green field")
    field(page, "Number of inference steps").fill("2")
    field(page, "Guidance scale").fill("1")
    expect(page.get_by_label("Image size")).to_have_value("")  # no image_size on fal's edit: the last image's size
    shot(page, artifacts, "17-qwen-edit-inputs")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#gallery img")).to_be_visible(timeout=120_000)
    produced = raw_json(page)["images"][0]
    assert (produced["width"], produced["height"], produced["content_type"]) == (48, 32, "image/png")


def test_z_image_image_to_image_offers_auto_as_its_default_size(page: Page, server: Server, artifacts: Path) -> None:
    open_playground(page, server, "fal-ai/z-image/turbo/image-to-image")
    expect(page.get_by_label("Image size")).to_have_value("auto")
    page.get_by_label("Image size").select_option("square")
    field(page, "Prompt").fill("a fox")
    page.locator(".request-preview summary").click()
    assert json.loads(page.locator("#request-json").text_content() or "{}")["image_size"] == "square"
