"""End to end in a real browser: `mumo serve` on a freshly trained CoCa with an index over generated images,
driven through its page by Playwright in Debian's Chromium (installed here if missing; never
`playwright install`); and on a tiny CLIP, with every request to another origin aborted: the API page works
offline and the page asks the model only for what it can do."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mumo.data.shapes import ShapesConfig, write_shapes

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Starts every training caption, so the captions the model writes start with it too. (At the start, not the
# end: the text tower pools at the end token, which then still follows the words a search query has.)
SCRIPT = '<script>alert("mumo")</script> '


def _chromium() -> str:
    """Debian's Chromium, installed with apt-get when it is not there yet."""
    if not Path(CHROMIUM).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            run = subprocess.run(sudo + command, env=env, capture_output=True, text=True)
            assert run.returncode == 0, f"could not install Debian's chromium: {run.stderr[-2000:]}"
    return CHROMIUM


@pytest.fixture(scope="module")
def demo(tmp_path_factory, free_port):
    """Train a small CoCa for a minute on one-object scenes (captions start with a <script> tag), index the
    circles among 600 test scenes, start `mumo serve` on loopback; yields (base URL, gallery folder,
    {file: colour}). A minute of training tells colours apart, shapes not yet: hence circles.

    Every third scene is captioned as a search is worded, by colour and shape alone ("a red circle"). With
    full captions only (size and position always named, 300 steps), a query naming neither was ranked by
    size and position as much as by colour: "a yellow circle" put 1 yellow circle among its top 5 (of 18 in
    the gallery), top-1 right or wrong by the kernels' rounding (issue 16)."""
    import mumo
    from mumo.run.train import train
    from mumo.serve.index import update_index
    from mumo.train import load_recipe

    root = tmp_path_factory.mktemp("demo")
    one_object = ShapesConfig(image_size=32, max_objects=1)
    data = write_shapes(root / "train", 3000, config=one_object)
    with open(data / "pairs.jsonl", "w") as f:
        for i, line in enumerate((data / "captions.jsonl").read_text().splitlines()):
            record = json.loads(line)
            o = record["objects"][0]
            caption = f"a {o['colour']} {o['shape']}" if i % 3 == 0 else record["caption"]
            f.write(json.dumps({"image": record["image"], "caption": SCRIPT + caption}) + "\n")
    overrides = [
        "model=coca_conv_mini_64",
        "objectives=[itc, lm]",
        "loss_weights={itc: 1.0, lm: 2.0}",
        "data.kind=pairs",
        f"data.path={data / 'pairs.jsonl'}",
        "data.image_size=32",
        "data.tokenizer_vocab_size=400",
        "data.tokenizer_samples=3000",
        "batch_size=64",
        "max_steps=300",
        "optim.lr=0.003",
        "optim.warmup_steps=20",
        "checkpoint_every=300",
        "evaluate=false",
        "tensorboard=false",
        "threads=1",  # make test runs another test file on the other core
        f"out_dir={root / 'run'}",
    ]
    train(load_recipe(None, overrides), progress=False)
    final = root / "run" / "final"
    pool = write_shapes(root / "pool", 600, split="test", config=one_object)
    gallery = root / "gallery"
    gallery.mkdir()
    truth = {}
    for line in (pool / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        o = record["objects"][0]
        if o["shape"] == "circle":
            name = Path(record["image"]).name
            shutil.copy(pool / record["image"], gallery / name)
            truth[name] = o["colour"]
    update_index(mumo.load_pretrained(final).eval(), final, gallery, root / "index")

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mumo",
            "serve",
            str(final),
            "--index",
            str(root / "index"),
            "--port",
            str(port),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except OSError:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.1)
    yield base, gallery, truth
    server.terminate()
    server.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.learned
def test_the_page_searches_labels_and_captions_safely(demo):
    from playwright.sync_api import sync_playwright

    base, gallery, truth = demo
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=ARGS)
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base + "/")
        # selectors, not wait_for_function: a string predicate that is still false at its first check is
        # polled through eval, which the page's Content-Security-Policy ('self', no 'unsafe-eval') refuses
        page.wait_for_selector(f"#about:has-text('{len(truth)} images')")

        # a text query puts the right images first: of the 12 results the page shows, most of the top 5 and
        # half of all 12 have the colour asked for. Chance: the 5 colours of circles (cyan circles are held
        # out) are about equally common, so 1 of 5 and 2.4 of 12. Measured over training seeds 0-2 and a
        # second data seed, on the default (AVX-512) and AVX2 kernels, 1 and 2 threads: 5 of 5 and 11 or 12
        # of 12 for every colour (without the query-worded captions: 1 of 5 and 1 of 12 for yellow).
        colours = sorted(set(truth.values()))
        assert len(colours) >= 4
        for colour in colours:
            page.fill("#query", f"a {colour} circle")
            with page.expect_response(lambda r: "/search?" in r.url):
                page.click("#search-form button")
            page.wait_for_selector("figure.hit img")
            shown = [truth[c.split()[-1]] for c in page.locator("figure.hit figcaption").all_text_contents()]
            assert len(shown) == 12, shown
            assert shown[:5].count(colour) >= 3 and shown.count(colour) >= 6, (colour, shown)
            image = page.locator("figure.hit img").first
            image.evaluate("img => img.decode()")
            assert image.evaluate("img => img.naturalWidth") == 32  # the indexed file itself

        # an uploaded image gets zero-shot labels and a caption; the caption's <script> is text
        page.fill("#labels", "red circle\nblue square\n<b>bold</b> label")
        image = sorted(gallery.iterdir())[0]
        page.set_input_files("#file", str(image))
        page.wait_for_selector("tr.label")
        page.wait_for_selector("#caption:not(:empty)")
        labels = page.locator("tr.label td:first-child").all_text_contents()
        assert sorted(labels) == ["<b>bold</b> label", "blue square", "red circle"]
        caption = page.text_content("#caption")
        assert "<script>" in caption, caption
        assert page.eval_on_selector("#caption", "e => e.children.length") == 0  # text, not elements
        assert (
            page.evaluate("document.querySelectorAll('#zero-shot b, body script').length") == 1
        )  # app.js only
        assert dialogs == [], dialogs  # no alert() ran
        assert page.text_content("#status") == ""
        browser.close()


@pytest.fixture(scope="module")
def clip_demo(tmp_path_factory, free_port, clip_and_tokenizer):
    """`mumo serve` over a tiny untrained CLIP (embeddings, no decoder, no index); yields (base URL, an
    image)."""
    import mumo

    root = tmp_path_factory.mktemp("clip-demo")
    model, tokenizer = clip_and_tokenizer
    mumo.save_pretrained(model, root / "model", tokenizer=tokenizer)
    image = write_shapes(root / "shapes", 1, config=ShapesConfig(image_size=32)) / "images" / "000000.png"
    port = free_port()
    command = [sys.executable, "-m", "mumo", "serve", str(root / "model"), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except OSError:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.1)
    yield base, image
    server.terminate()
    server.wait(timeout=20)


def _offline_page(browser, base: str) -> tuple:
    """A page on which every request to another origin than ``base`` is aborted, as without internet;
    returns (page, the URLs it tried elsewhere, the URLs it asked of ``base``, console errors)."""
    page = browser.new_page()
    elsewhere: list[str] = []
    asked: list[str] = []
    errors: list[str] = []

    def route(r) -> None:
        if r.request.url.startswith(base + "/"):
            asked.append(r.request.url[len(base) :])
            r.continue_()
        else:
            elsewhere.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    return page, elsewhere, asked, errors


@pytest.mark.slow
def test_the_api_page_works_offline(clip_demo):
    from playwright.sync_api import sync_playwright

    base, _ = clip_demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=ARGS)
        page, elsewhere, _, errors = _offline_page(browser, base)
        page.goto(base + "/docs")
        page.wait_for_selector(".opblock-summary-path")  # Swagger UI drew the schema's operations
        paths = set(page.locator(".opblock-summary-path").all_text_contents())
        assert {"/search", "/zero-shot", "/caption", "/embed/text", "/healthz"} <= {x.strip() for x in paths}
        assert elsewhere == [] and errors == [], (elsewhere, errors)  # no CDN, nothing the CSP refused
        browser.close()


@pytest.mark.slow
def test_the_page_asks_a_clip_only_for_what_it_can_do(clip_demo):
    from playwright.sync_api import sync_playwright

    base, image = clip_demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=ARGS)
        page, elsewhere, asked, errors = _offline_page(browser, base)
        page.goto(base + "/")
        page.wait_for_selector("#about:has-text('CLIP')")
        assert page.is_hidden("#search") and page.is_hidden("#caption-box")  # no index, no decoder
        page.fill("#labels", "red circle\nblue square")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("tr.label")
        page.wait_for_load_state("networkidle")
        assert page.locator("tr.label").count() == 2
        assert page.text_content("#status") == ""  # no red "422: ... does not generate captions"
        assert "/zero-shot" in asked and "/caption" not in asked, asked
        assert elsewhere == [] and errors == [], (elsewhere, errors)
        browser.close()
