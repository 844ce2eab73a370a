"""LibreTranslate's API (app/web/libretranslate.py) through nginx, with real clients: the
``libretranslatepy`` library, the exact request shapes Mastodon and the Discourse translator
send, HTML round-trips, file translation, API keys, CORS and errors.

The session ``stack`` serves the defaults (no keys, no CORS); ``keyed`` is a stack of its own
(API keys, CORS origins, a short file TTL and a small file limit; the translator only).
"""
from __future__ import annotations

import html
import json
import re
import time
import urllib.error
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from libretranslatepy import LibreTranslateAPI

from conftest import start_stack

KEY = "lt-key-0123456789abcdef"
ORIGIN = "https://app.example.org"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    st = start_stack(tmp_path_factory.mktemp("lt-keyed"), {
        "WORKERS": "1", "THREADS": "4", "ENABLED_MODELS": "translator", "PRELOAD_LIBRARIES": "1",
        "API_KEYS": KEY, "CORS_ORIGINS": ORIGIN, "TRANSLATE_FILE_TTL": "2", "TRANSLATE_FILE_MAX_BYTES": "4096",
    })
    yield st
    st.stop()


def lt_error(r: requests.Response, status: int, fragment: str = "") -> str:
    """LibreTranslate's error shape: {"error": "<message>"}."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert fragment in body["error"], body
    return body["error"]


def plain(stack, texts: list[str]) -> list[str]:
    """What /translate answers for these plain texts (format text), in one request."""
    r = stack.post("/translate", json={"q": texts, "source": "en", "target": "es"})
    assert r.status_code == 200, r.text
    return r.json()["translatedText"]


# --- libretranslatepy ----------------------------------------------------------------------------

def test_libretranslatepy_translate_languages_detect(stack):
    lt = LibreTranslateAPI(stack.base)
    out = lt.translate("The house is green.", "en", "es")
    assert out == stack.post("/api/translate", json={"text": "The house is green."}).json()["translation"]
    assert lt.languages() == [{"code": "en", "name": "English", "targets": ["es"]},
                              {"code": "es", "name": "Spanish", "targets": []}]
    found = lt.detect("Where is the train station? I cannot find it.")
    assert found[0]["language"] == "en" and 50 <= found[0]["confidence"] <= 100
    assert lt.detect("¿Dónde está la estación de tren? No la encuentro.")[0]["language"] == "es"


def test_translate_a_list_in_one_call(stack):
    texts = ["Good morning.", "I have a house.", "Thank you very much.", "Where is the station?"]
    r = stack.post("/translate", json={"q": texts, "source": "en", "target": "es"})
    assert r.status_code == 200
    assert r.json() == {"translatedText": stack.post("/api/translate", json={"texts": texts}).json()["translations"]}
    for form in (dict(data={"q": "I am tired.", "source": "en", "target": "es"}),
                 dict(files={"q": (None, "I am tired."), "source": (None, "en"), "target": (None, "es")})):
        r = stack.post("/translate", **form)
        assert r.status_code == 200 and r.json()["translatedText"] == plain(stack, ["I am tired."])[0]


def test_translate_equals_api_translate(stack):
    for text in ("The weather is nice today.", "Tom is reading a book in the garden.", "Line one.\nLine two."):
        lt = stack.post("/translate", json={"q": text, "source": "en", "target": "es"}).json()["translatedText"]
        assert lt == stack.post("/api/translate", json={"text": text}).json()["translation"]


def test_auto_source_and_alternatives(stack):
    r = stack.post("/translate", json={"q": "I would like a cup of coffee, please.", "source": "auto",
                                       "target": "es", "alternatives": 3})
    body = r.json()
    assert r.status_code == 200 and body["alternatives"] == []
    assert body["detectedLanguage"]["language"] == "en" and 50 <= body["detectedLanguage"]["confidence"] <= 100
    assert body["translatedText"] == plain(stack, ["I would like a cup of coffee, please."])[0]
    r = stack.post("/translate", json={"q": ["I am hungry.", "We are friends."], "source": "auto", "target": "es",
                                       "alternatives": 2})
    body = r.json()
    assert [d["language"] for d in body["detectedLanguage"]] == ["en", "en"] and body["alternatives"] == [[], []]


def test_frontend_settings(stack):
    s = stack.get("/frontend/settings").json()
    assert s == {"charLimit": 5000, "frontendTimeout": 500, "apiKeys": False, "keyRequired": False,
                 "suggestions": False, "filesTranslation": True, "supportedFilesFormat": [".txt", ".srt", ".html"],
                 "language": {"source": {"code": "auto", "name": "Auto Detect"},
                              "target": {"code": "es", "name": "Spanish"}}}


# --- real clients' request shapes -------------------------------------------------------------------

def test_mastodon_request_shapes(stack):
    """Mastodon's TranslationService::LibreTranslate: JSON {q: [texts], source (or 'auto'), target,
    format: 'html', api_key: nil}; it maps translatedText and reads detectedLanguage[i].language;
    /languages becomes {code => targets without code}, plus nil => every target."""
    texts = ["<p>I have a new car.</p>", "<p>Hello <span class=\"h-card\"><a href=\"https://x.example/@tom\" "
             "class=\"u-url mention\">@<span>tom</span></a></span>, how are you?</p>"]
    for source in ("en", None):
        body = {"q": texts, "source": source or "auto", "target": "es", "format": "html", "api_key": None}
        r = requests.post(stack.url("/translate"), data=json.dumps(body), headers=JSON, timeout=60)
        assert r.status_code == 200, r.text
        data = r.json()
        assert isinstance(data, dict) and len(data["translatedText"]) == 2
        detected = [(data.get("detectedLanguage") or [None] * 2)[i] for i in range(2)]
        langs = [(d or {}).get("language") or source for d in detected]
        assert langs == ["en", "en"]
        assert data["translatedText"][0].startswith("<p>") and data["translatedText"][0].endswith("</p>")
        assert 'class="u-url mention">@<span>tom</span></a></span>' in data["translatedText"][1]
    r = requests.get(stack.url("/languages"), headers=JSON, timeout=30)
    languages = {lang["code"]: [t for t in lang["targets"] if t != lang["code"]] for lang in r.json()}
    languages[None] = sorted({t for ts in languages.values() for t in ts})
    assert languages == {"en": ["es"], "es": [], None: ["es"]}


def test_discourse_request_shapes(stack):
    """The Discourse translator's LibreTranslate provider: form-encoded POSTs with api_key (empty
    when unset); detect reads res[0]['language'], support checks the codes of /languages,
    translate reads res['translatedText']."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = requests.post(stack.url("/detect"), data="q=" + requests.utils.quote("My cat likes to sleep in the sun.")
                      + "&api_key=", headers=form, timeout=60)
    assert r.status_code == 200
    detected = r.json()[0]["language"] if r.json() else "en"
    assert detected == "en"
    codes = [o["code"] for o in requests.get(stack.url("/languages"), timeout=30).json()]
    assert "en" in codes and "es" in codes
    post = "<p>My cat likes to sleep in the <b>sun</b>.</p>"
    r = requests.post(stack.url("/translate"), data={"q": post, "source": detected, "target": "es", "format": "html",
                                                      "api_key": ""}, timeout=60)
    assert r.status_code == 200
    out = r.json()["translatedText"]
    assert isinstance(out, str) and out.startswith("<p>") and "<b>" in out and out != post


# --- HTML round-trips --------------------------------------------------------------------------------

SKIP_TAGS = {"code", "pre", "script", "style", "kbd", "samp", "var"}


class _Structure(HTMLParser):
    """A document's markup, without the translatable text: tags with their attributes (alt and
    title values blanked), comments, declarations; text only where it must stay as it was
    (skipped elements, whitespace-only nodes, text without letters)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.text, self.skip = [], [], []

    def handle_starttag(self, tag, attrs, end=False):
        d = dict(attrs)
        attrs = [(k, "<text>" if k in ("alt", "title") else v) for k, v in attrs]
        self.out.append(("startend" if end else "start", tag, attrs))
        if not end and tag not in ("br", "img", "input", "meta", "link", "hr"):
            parent = self.skip[-1] if self.skip else False
            keep = (tag in SKIP_TAGS or d.get("translate") == "no" or "notranslate" in (d.get("class") or "")
                    or parent and d.get("translate") != "yes")
            self.skip.append(keep)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs, end=True)

    def handle_endtag(self, tag):
        self.out.append(("end", tag))
        if self.skip:
            self.skip.pop()

    def handle_data(self, data):
        if self.skip and self.skip[-1]:
            self.out.append(("kept", data))
        elif not data.strip() or not any(c.isalpha() for c in data):
            self.out.append(("data", data))
        else:
            self.text.append(data)
            self.out.append(("text",))

    def handle_comment(self, data):
        self.out.append(("comment", data))

    def handle_decl(self, decl):
        self.out.append(("decl", decl))


INLINE_TAGS = {"a", "abbr", "b", "em", "i", "span", "strong", "code", "kbd", "u", "small"}


def structure(doc: str):
    """(markup, text): a text node without letters between block tags (a number, whitespace) is
    markup that must stay; one beside inline tags belongs to a sentence and may change."""
    p = _Structure()
    p.feed(doc)
    p.close()
    ev = p.out
    out = []
    for i, e in enumerate(ev):
        if e[0] == "text":
            continue
        if e[0] == "data":
            near = [ev[k] for k in (i - 1, i + 1) if 0 <= k < len(ev)]
            if any(n[0] in ("start", "end", "startend") and n[1] in INLINE_TAGS or n[0] == "text" for n in near):
                continue
        out.append(e)
    return out, " ".join(" ".join(p.text).split())


#: (html, the one text node's text or None) -- None: several texts, inline markup or attributes.
SNIPPETS = [
    ("<p>The house is green.</p>", "The house is green."),
    ("<h1>Good morning.</h1>", "Good morning."),
    ("<div class=\"note\" id=n1 data-x='{\"a\": 1}'>I have a house.</div>", "I have a house."),
    ("<p>   Thank you very much.   </p>", "   Thank you very much.   "),
    ("<td>Where is the station?</td>", "Where is the station?"),
    ("<p>Tom &amp; Mary are good friends.</p>", "Tom &amp; Mary are good friends."),
    ("<li>I like to read books.</li>", "I like to read books."),
    ("<p>\n  The weather is nice today.\n</p>", "\n  The weather is nice today.\n"),
    ("<span>Where are you going?</span>", "Where are you going?"),
    ("<P CLASS=x>Are you hungry?</P>", "Are you hungry?"),
    ("<p>I have a <b>big</b> house.</p>", None),
    ("<p>The dog is <a href=\"/x?a=1&amp;b=2\" title=\"A link\">very small</a>.</p>", None),
    ("<p>My <em>brother</em> lives in <strong>London</strong>.</p>", None),
    ("<p>He was <i>very <b>tired</b></i> after work.</p>", None),
    ("<p>Click <a href=\"#\"><span class=\"icon\"></span></a> to continue.</p>", None),
    ("<p>Run <code>ls -la</code> in the terminal.</p>", None),
    ("<pre>  Do not translate   this.\n</pre><p>Translate this sentence.</p>", None),
    ("<script>var s = \"Hello <b>world</b>\";</script><p>Hello world.</p>", None),
    ("<style>p { color: red; }</style><p>The sky is blue.</p>", None),
    ("<p translate=\"no\">Brand Name Inc.</p><p>We sell good food.</p>", None),
    ("<div translate=\"no\"><p>Keep this text.</p><p translate=\"yes\">Translate this one.</p></div>", None),
    ("<p class=\"notranslate\">Keep me too.</p><p>I am happy.</p>", None),
    ("<img src=\"cat.png\" alt=\"A black cat\" width=\"100\"><p>The cat is sleeping.</p>", None),
    ("<p><abbr title=\"World Health Organization\">WHO</abbr> is in Geneva.</p>", None),
    ("<a href=\"/x\" title='She said \"hello\"'>Read more.</a>", None),
    ("<label>Your name <input type=\"text\" placeholder=\"Name\" title=\"Your name\"></label>", None),
    ("<!-- a comment --><p>I am hungry.</p><!-- another one -->", "I am hungry."),
    ("<!DOCTYPE html><html><head><title>My page</title></head><body><p>Welcome to my page.</p></body></html>", None),
    ("<p>First line.<br>Second line.<br/>Third line.</p>", None),
    ("<ul>\n  <li>Apples are red.</li>\n  <li>Bananas are yellow.</li>\n</ul>", None),
    ("<p>It costs 42&nbsp;&euro; &lt;not much&gt;.</p>", "It costs 42&nbsp;&euro; &lt;not much&gt;."),
    ("<table><tr><td>42</td><td>Yes, I do.</td></tr></table>", None),
    ("<p>Use <kbd>Ctrl</kbd>+<kbd>C</kbd> to copy the text.</p>", None),
]


def test_html_round_trips(stack):
    assert len(SNIPPETS) >= 30
    docs = [s for s, _ in SNIPPETS]
    out = []
    for part in (docs[:16], docs[16:]):  # at most MAX_BATCH_TEXTS (32) texts a request
        r = stack.post("/translate", json={"q": part, "source": "en", "target": "es", "format": "html"})
        assert r.status_code == 200, r.text
        out += r.json()["translatedText"]
    singles = [html.unescape(t).strip() for _, t in SNIPPETS if t]
    expected = dict(zip(singles, plain(stack, singles)))
    for (src, text), got in zip(SNIPPETS, out):
        s_in, t_in = structure(src)
        s_out, t_out = structure(got)
        assert s_out == s_in, (src, got)               # tags, attributes, their order, kept text
        assert t_out and t_out != t_in, (src, got)      # the text is translated
        if text is not None:                            # one text node: the plain translation, escaped
            lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            tr = html.escape(expected[html.unescape(text).strip()], quote=False)
            # the HTML path collapses whitespace (a no-break space too) before translating, so a
            # number's "42\xa0€" kept by the plain path's pass-through comes back as "42 €"
            nbsp = lambda x: x.replace("\xa0", " ")  # noqa: E731
            assert nbsp(got) == nbsp(src.replace(text, lead + tr + trail, 1)), (src, got)
        for m in re.finditer(r"(?:alt|title)=(\"[^\"]*\"|'[^']*')", src):  # translated in place
            assert m.group(0) not in got, (src, got)
    by_src = dict(zip(docs, out))
    # attributes: alt/title translated in place, the others and their quoting kept
    assert re.fullmatch(r'<img src="cat.png" alt="[^"<>]+" width="100"><p>[^<>]+</p>',
                        by_src[SNIPPETS[22][0]])
    assert 'placeholder="Name"' in by_src[SNIPPETS[25][0]]
    # inline markup inside a sentence: around the translation of its words, in the whole sentence's translation
    big = by_src["<p>I have a <b>big</b> house.</p>"]
    whole = plain(stack, ["I have a big house."])[0]
    assert re.sub(r"</?b>", "", big) == f"<p>{whole}</p>"
    assert re.search(r"<b>[^<\s][^<]*</b>", big), big
    london = by_src["<p>My <em>brother</em> lives in <strong>London</strong>.</p>"]
    assert re.search(r"<em>\w+</em>.*<strong>\w+</strong>", london), london
    # never translated: code, pre, script, style, kbd, translate="no", class="notranslate"
    for keep in ("<code>ls -la</code>", "<pre>  Do not translate   this.\n</pre>",
                 "<script>var s = \"Hello <b>world</b>\";</script>", "<style>p { color: red; }</style>",
                 "<p translate=\"no\">Brand Name Inc.</p>", "<p>Keep this text.</p>",
                 "<p class=\"notranslate\">Keep me too.</p>", "<kbd>Ctrl</kbd>", "<kbd>C</kbd>"):
        assert any(keep in o for o in out), keep
    assert "Translate this one." not in by_src[SNIPPETS[20][0]]  # translate="yes" inside "no"
    # entities: the text is escaped again; an untranslated node keeps them as they were
    assert "<not" not in by_src[SNIPPETS[30][0]]
    assert "<td>42</td>" in by_src[SNIPPETS[31][0]]


def test_html_output_is_safe(stack):
    q = "<p>Tom said &lt;script&gt;alert(1)&lt;/script&gt; is bad.</p>"
    got = stack.post("/translate", json={"q": q, "source": "en", "target": "es", "format": "html"}).json()
    s_out, _ = structure(got["translatedText"])
    assert s_out == [("start", "p", []), ("end", "p")], got
    assert "<script" not in got["translatedText"]


# --- files ------------------------------------------------------------------------------------------

def _upload(st, name: str, data: bytes, headers=None, **fields):
    return st.post("/translate_file", files={"file": (name, data)}, data={"source": "en", "target": "es", **fields},
                   headers=headers or {})


def _download(st, url: str) -> requests.Response:
    path = url.split("/download_file/", 1)[1]
    assert url.startswith(st.base + "/download_file/"), url
    return st.get("/download_file/" + path, headers=st.auth_headers)


def test_translate_file_txt(stack):
    src = "The house is green.\r\n\r\n  I have a dog.  \r\nThank you.\n\n42\n"
    r = _upload(stack, "notes.txt", src.encode())
    assert r.status_code == 200, r.text
    url = r.json()["translatedFileUrl"]
    name = url.rsplit("/", 1)[1]
    # stored on disk under RUN_DIR, so whichever worker answers the download has it
    assert (Path(stack.env["RUN_DIR"]) / "translated-files" / name).is_file()
    d = _download(stack, url)
    assert d.status_code == 200 and d.headers["Content-Type"].startswith("text/plain")
    assert 'attachment; filename=notes.txt' in d.headers["Content-Disposition"]
    out = d.content.decode()
    tr = plain(stack, ["The house is green.", "I have a dog.", "Thank you."])
    assert out == f"{tr[0]}\r\n\r\n  {tr[1]}  \r\n{tr[2]}\n\n42\n"
    lt_error(_download(stack, url), 404, "no such file")  # once only
    assert not (Path(stack.env["RUN_DIR"]) / "translated-files" / name).exists()


SRT = ("1\r\n00:00:01,000 --> 00:00:03,500\r\nI have a house.\r\nIt is very big.\r\n\r\n"
       "2\r\n00:00:04,000 --> 00:00:06,250\r\n<i>Where is the station?</i>\r\n\r\n"
       "3\r\n00:01:00,100 --> 00:01:02,900\r\n{\\an8}Thank you very much.\r\n\r\n"
       "4\r\n01:02:03,004 --> 01:02:05,006\r\n♪ ♪\r\n")


def test_translate_file_srt_keeps_numbers_and_timings(stack):
    r = _upload(stack, "movie.srt", SRT.encode("utf-8"))
    assert r.status_code == 200, r.text
    d = _download(stack, r.json()["translatedFileUrl"])
    assert d.status_code == 200
    out = d.content.decode("utf-8")
    blocks_in, blocks_out = SRT.split("\r\n\r\n"), out.split("\r\n\r\n")
    assert len(blocks_out) == len(blocks_in)
    for a, b in zip(blocks_in, blocks_out):
        la, lb = a.split("\r\n"), b.split("\r\n")
        assert lb[:2] == la[:2]  # numbering and timings exactly
        assert lb[2:] != la[2:] or la[2] == "♪ ♪"
    tr = plain(stack, ["I have a house. It is very big.", "Thank you very much."])
    first = out.split("\r\n\r\n")[0].split("\r\n")[2:]
    assert " ".join(first) == tr[0] and len(first) == min(2, len(tr[0].split()))
    assert re.fullmatch(r"<i>[^<>]+</i>", blocks_out[1].split("\r\n")[2])
    assert blocks_out[2].split("\r\n")[2] == "{\\an8}" + tr[1]
    assert out.endswith("♪ ♪\r\n")


def test_translate_file_html(stack):
    doc = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>My page</title></head>\n"
           "<body><p>Welcome to my <b>home</b> page.</p><pre>code()</pre></body></html>\n")
    r = _upload(stack, "page.html", b"\xef\xbb\xbf" + doc.encode())
    assert r.status_code == 200, r.text
    d = _download(stack, r.json()["translatedFileUrl"])
    assert d.status_code == 200 and d.headers["Content-Type"].startswith("text/html")
    assert d.content.startswith(b"\xef\xbb\xbf")  # the BOM kept
    out = d.content.decode("utf-8-sig")
    assert structure(out)[0] == structure(doc)[0] and structure(out)[1] != structure(doc)[1]
    assert "<pre>code()</pre>" in out


def test_translate_file_errors(stack):
    lt_error(stack.post("/translate_file", data={"source": "en", "target": "es"}), 400, "missing file parameter")
    lt_error(_upload(stack, "x.pdf", b"%PDF"), 400, "file format not supported")
    lt_error(_upload(stack, "x.txt", b"\xff\xfe bad"), 400, "not UTF-8")
    lt_error(_upload(stack, "x.txt", b"Hello.", target="fr"), 400, "fr is not supported")
    lt_error(stack.get("/download_file/not-a-token.txt"), 404)
    lt_error(stack.get("/download_file/" + "0" * 32 + ".x.txt"), 404)


def test_translate_file_size_limit_and_expiry(keyed):
    h = keyed.auth_headers
    lt_error(_upload(keyed, "big.txt", b"Hello there.\n" * 400, headers=h), 413, "over the limit of 4096 bytes")
    r = _upload(keyed, "a.txt", b"I am tired.\n", headers=h)
    assert r.status_code == 200, r.text
    url = r.json()["translatedFileUrl"]
    stored = Path(keyed.env["RUN_DIR"]) / "translated-files" / url.rsplit("/", 1)[1]
    assert stored.is_file()
    time.sleep(3)  # TRANSLATE_FILE_TTL=2
    lt_error(_download(keyed, url), 404)
    assert not stored.exists()
    # an expired file nobody asks for is swept by the next upload (any worker)
    r = _upload(keyed, "b.txt", b"I am tired.\n", headers=h)
    old = Path(keyed.env["RUN_DIR"]) / "translated-files" / r.json()["translatedFileUrl"].rsplit("/", 1)[1]
    time.sleep(3)
    assert _upload(keyed, "c.txt", b"We are here.\n", headers=h).status_code == 200
    assert not old.exists()


# --- keys ---------------------------------------------------------------------------------------------

def test_keys_libretranslatepy(keyed):
    with pytest.raises(urllib.error.HTTPError) as exc:
        LibreTranslateAPI(keyed.base).translate("Hello.", "en", "es")
    assert exc.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as exc:
        LibreTranslateAPI(keyed.base, api_key=KEY[:-1] + "x").translate("Hello.", "en", "es")
    assert exc.value.code == 403
    lt = LibreTranslateAPI(keyed.base, api_key=KEY)
    assert lt.translate("I have a house.", "en", "es")
    assert lt.detect("I have a house and a garden.")[0]["language"] == "en"
    assert lt.languages()[0]["code"] == "en"


@pytest.mark.parametrize("path,fields", [("/translate", {"q": "Hello.", "source": "en", "target": "es"}),
                                         ("/detect", {"q": "Hello there, my friend."})])
def test_keys_required(keyed, path, fields):
    assert lt_error(keyed.post(path, json=fields), 403) == "Please contact the server operator to get an API key"
    assert lt_error(keyed.post(path, json={**fields, "api_key": "wrong-key-0123456789"}), 403) == "Invalid API key"
    assert lt_error(keyed.post(path, data={**fields, "api_key": KEY + "x"}), 403) == "Invalid API key"
    assert lt_error(keyed.post(path, json={**fields, "api_key": 12}), 403) == "Invalid API key"
    for kw in (dict(json={**fields, "api_key": KEY}), dict(data={**fields, "api_key": KEY}),
               dict(json=fields, headers={"X-API-Key": KEY}), dict(json=fields, headers={"Authorization": "Bearer " + KEY}),
               dict(json={**fields, "api_key": None}, headers={"X-API-Key": KEY})):
        r = keyed.post(path, **kw)
        assert r.status_code == 200, (kw, r.text)
    lt_error(_upload(keyed, "a.txt", b"Hello."), 403)
    # public as in LibreTranslate: the languages, the settings
    assert keyed.get("/languages").status_code == 200
    s = keyed.get("/frontend/settings").json()
    assert s["apiKeys"] is True and s["keyRequired"] is True


# --- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body,status,message", [
    ({"source": "en", "target": "es"}, 400, "Invalid request: missing q parameter"),
    ({"q": "", "source": "en", "target": "es"}, 400, "Invalid request: missing q parameter"),
    ({"q": [], "source": "en", "target": "es"}, 400, "Invalid request: missing q parameter"),
    ({"q": "Hi", "target": "es"}, 400, "Invalid request: missing source parameter"),
    ({"q": "Hi", "source": "en"}, 400, "Invalid request: missing target parameter"),
    ({"q": 5, "source": "en", "target": "es"}, 400, "q must be a string or an array of strings"),
    ({"q": ["a", 1], "source": "en", "target": "es"}, 400, "q must be a string or an array of strings"),
    ({"q": "Hi", "source": "xx", "target": "es"}, 400, "xx is not supported"),
    ({"q": "Hi", "source": "en", "target": "fr"}, 400, "fr is not supported"),
    ({"q": "Hi", "source": "es", "target": "en"}, 400, "English (en) is not available as a target language from Spanish (es)"),
    ({"q": "Hi", "source": "en", "target": "es", "format": "pdf"}, 400, "pdf format is not supported"),
    ({"q": "Hi", "source": "en", "target": "es", "alternatives": "many"}, 400, "alternatives parameter is not a number"),
    ({"q": "¿Dónde está la estación de tren? Tengo prisa.", "source": "auto", "target": "es"}, 400,
     "es is not supported"),
    ({"q": "x" * 5001, "source": "en", "target": "es"}, 400, "Invalid request: request (5001) exceeds text limit (5000)"),
    ({"q": ["Hi."] * 33, "source": "en", "target": "es"}, 400, "Invalid request: request (33) exceeds text limit (32)"),
    ({"q": ["x" * 4000] * 6, "source": "en", "target": "es", "format": "html"}, 400, "exceeds text limit (20000)"),
    ({"q": "\ud800", "source": "en", "target": "es"}, 400, "lone surrogate"),
])
def test_translate_errors(stack, body, status, message):
    lt_error(stack.post("/translate", json=body), status, message)


def test_other_errors(stack):
    lt_error(stack.post("/translate", data=b"{not json", headers=JSON), 400, "Invalid JSON format")
    lt_error(stack.post("/translate", data=b"[1, 2]", headers=JSON), 400, "Invalid JSON format")
    lt_error(stack.post("/translate", data={"q": "Hi", "source": "en", "target": "es", "alternatives": "x"}), 400)
    lt_error(stack.get("/translate"), 405)
    lt_error(stack.post("/detect", json={}), 400, "missing q parameter")
    assert stack.post("/detect", json={"q": "12345"}).json() == [{"confidence": 0.0, "language": "en"}]


# --- CORS ---------------------------------------------------------------------------------------------

def test_cors_when_configured(keyed):
    pre = requests.options(keyed.url("/translate"), timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-api-key"} <= allowed
    assert "Origin" in pre.headers["Vary"]
    r = keyed.post("/translate", json={"q": "I am here.", "source": "en", "target": "es", "api_key": KEY},
                   headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = keyed.post("/translate", json={"q": "I am here.", "source": "en", "target": "es"}, headers={"Origin": ORIGIN})
    assert r.status_code == 403 and r.headers["Access-Control-Allow-Origin"] == ORIGIN  # the error readable too
    other = requests.options(keyed.url("/translate"), timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # only these paths
    assert "Access-Control-Allow-Origin" not in keyed.get("/healthz", headers={"Origin": ORIGIN}).headers


def test_cors_off_by_default(stack):
    pre = requests.options(stack.url("/translate"), timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert not [h for h in pre.headers if h.lower().startswith("access-control-")]
    r = stack.post("/translate", json={"q": "Hello.", "source": "en", "target": "es"}, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


# --- observability --------------------------------------------------------------------------------------

def test_metrics_label(stack):
    stack.post("/translate", json={"q": "Hello.", "source": "en", "target": "es"})
    text = stack.get("/metrics").text
    assert re.search(r'^http_requests_total\{endpoint="lt_translate",method="POST",status="200"\} [1-9]', text, re.M)
    stats = stack.get("/api/stats").json()
    assert "lt_translate" in str(stats)


# --- without a server: the formats ------------------------------------------------------------------------

def test_formats_keep_their_source_when_nothing_is_translated():
    from app.web.textformats import HtmlJob, SrtJob, TextJob, split_balanced, translate_jobs
    for src in ("<p>a &amp; b <b>c</b></p>\n<!-- x -->", "", "<<>>&&;", "<p title='x y'>Hi</p>"):
        assert HtmlJob(src).render({}) == src
    assert SrtJob(SRT).render({}) == SRT
    assert TextJob("a\r\nb\n\nc").render({}) == "a\r\nb\n\nc"
    assert split_balanced("uno dos tres cuatro", 2) == ["uno dos", "tres cuatro"]
    assert split_balanced("uno", 3) == ["uno"]
    calls = []

    def upper(texts):
        calls.append(list(texts))
        return [t.upper() for t in texts]
    out = translate_jobs([HtmlJob("<p>Hello.</p>"), HtmlJob("<p>Hello.</p><p>World.</p>")], upper)
    assert out == ["<p>HELLO.</p>", "<p>HELLO.</p><p>WORLD.</p>"] and calls == [["Hello.", "World."]]
    # whatever the model answers is text: escaped in HTML (and in attributes), never markup
    evil = lambda texts: ['<b onclick="x">&\xa0\'"</b>' for _ in texts]  # noqa: E731
    (out,) = translate_jobs([HtmlJob('<p title="A title">Some &lt;text&gt;.</p>')], evil)
    assert out == ('<p title="&lt;b onclick=&quot;x&quot;&gt;&amp;\xa0&#x27;&quot;&lt;/b&gt;">'
                   '&lt;b onclick="x"&gt;&amp;&nbsp;\'"&lt;/b&gt;</p>')


class _UpperModel:
    """Test double of the translator's model (upper-cases); records each decoding call."""

    def __init__(self):
        self.calls = []

    def translate(self, texts, beam=1):
        self.calls.append(list(texts))
        return [t.upper() for t in texts]

    def cached(self, texts, beam=1):
        return None


def test_protocol_layer_over_the_registry(tmp_path):
    """No model name in the layer: without a translation servable nothing is offered; with one
    (a stub model behind the real translator servable), a list is one registry.run and an HTML
    document's texts one more only for inline markup."""
    from app import create_app
    from app.config import Config
    from app.serving.registry import ModelRegistry

    base = {"MODEL_LOADING": "off", "PROMETHEUS_MULTIPROC_DIR": "", "RUN_DIR": str(tmp_path)}
    c = create_app(Config.from_env({**base, "ENABLED_MODELS": "nose_tracker"})).test_client()
    assert c.get("/languages").get_json() == []
    assert c.post("/translate", json={"q": "Hi", "source": "en", "target": "es"}).get_json() == \
        {"error": "en is not supported"}
    assert c.get("/frontend/settings").get_json()["language"]["target"] == {"code": "", "name": ""}
    assert c.get("/openapi.json").status_code == 200

    cfg = Config.from_env({**base, "ENABLED_MODELS": "translator"})
    reg = ModelRegistry(cfg)
    c = create_app(cfg, registry=reg).test_client()
    assert c.post("/translate", json={"q": "Hi", "source": "en", "target": "es"}).status_code == 503  # not loaded
    h = reg.handles["translator"]
    model = h.servable.model = _UpperModel()
    h.status = "ready"
    r = c.post("/translate", json={"q": ["One.", "Two.", "Three."], "source": "en", "target": "es"})
    assert r.get_json() == {"translatedText": ["ONE.", "TWO.", "THREE."]} and model.calls == [["One.", "Two.", "Three."]]
    model.calls.clear()
    r = c.post("/translate", json={"q": "<p>A <b>b</b> c.</p><p>D.</p>", "source": "en", "target": "es",
                                   "format": "html"})
    assert r.get_json() == {"translatedText": "<p>A <b>B</b> C.</p><p>D.</p>"}
    assert model.calls == [["A b c.", "b", "D."]]  # "b" found as "B": no second pass
    assert c.post("/translate", json={"q": ["x"] * 40, "source": "en", "target": "es"}).status_code == 400
