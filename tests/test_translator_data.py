"""Translator training data: near-duplicate grouping and the split by group, rare-word slice,
pass-through of names / numbers / URLs / e-mail / emoji, lexicon and gettext extraction helpers.

Pure Python (no TensorFlow); the real-data check needs ../shared/data/translator.
"""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from conftest import SHARED, skip_or_fail
from app.servables.translator import passthrough
from training.translator import dedup, gettext_pairs, lexicon, lexicon_data

REAL_DATA = SHARED / "data" / "translator" / "spa-eng" / "spa.txt"


def same_group(sentences, refs=None):
    gid, _ = dedup.group(sentences, refs)
    return len(set(gid)) == 1


# -- normalisation and grouping ------------------------------------------------------------
def test_normalise_case_punctuation_contractions():
    n = dedup.normalise_en
    assert n("I'm tired.") == n("i am tired!") == ("i", "am", "tired")
    assert n("Don't go!") == n("Do not go.")
    assert n("I can't swim.") == n("I cannot swim.") == n("I can not swim")
    assert n("We won't.") == n("We will not.")
    assert n("He's here.") == n("He is here.")
    assert n("I’ve got it.") == n("I have got it.")  # curly apostrophe
    assert n("Let's go.") == n("Let us go.")
    assert n("Tom's car.") == ("tom", "s", "car")


@pytest.mark.parametrize("a, b", [
    ("I'm tired.", "I am tired!"),                     # equal after normalisation
    ("I have a house.", "I have a car."),              # one word substituted
    ("I have a house.", "I have a big house."),        # one word inserted (the example)
    ("I have a big house.", "I have a house."),        # ... or deleted
    ("Don't do that.", "Do not do this!"),             # contraction + one substitution
])
def test_near_duplicates_land_in_one_group(a, b):
    assert same_group([a, b])


def test_shared_spanish_translation_links():
    refs = {"I could kill you.": ["Podría matarte."], "I might kill you!": ["¡Podría matarte!"],
            "Leave.": ["Vete."]}
    gid, _ = dedup.group(list(refs), refs)
    assert gid[0] == gid[1] != gid[2]


@pytest.mark.parametrize("a, b", [
    ("Go.", "Run."),                                   # one-word sentences: too short to link
    ("Go away.", "Come here."),
    ("I have a house.", "She sold two cars."),
    ("I have a house.", "I have a very big house."),   # two insertions
    ("I have a house.", "You had a car."),             # three substitutions
])
def test_different_sentences_stay_apart(a, b):
    assert not same_group([a, b])


def test_links_are_transitive():
    chain = ["I have a car.", "I had a car.", "He had a car.", "He had a dog.", "Hello there."]
    gid, _ = dedup.group(chain)
    assert len(set(gid[:4])) == 1 and gid[4] != gid[0]


def test_insertion_links_found_efficiently():
    # 2,000 unrelated sentences plus one near-duplicate pair: exactly one link between them
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    sentences = sorted({" ".join(rng.sample(words, 6)) for _ in range(2000)})
    sentences += ["alpha beta gamma delta", "alpha beta big gamma delta"]
    found = [(i, j, k) for i, j, k in dedup.links(sentences)
             if {sentences[i], sentences[j]} == {"alpha beta gamma delta", "alpha beta big gamma delta"}]
    assert [k for *_, k in found] == ["insertion"]


# -- split by group ----------------------------------------------------------------------
def synthetic_corpus(n=2000, seed=0):
    """Random 5-word sentences, a quarter of them with a one-word variant (small groups)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    refs = {}
    for k in range(n):
        toks = rng.sample(words, 5)
        refs.setdefault(" ".join(toks) + ".", []).append(f"ES {k}")
        if k % 4 == 0:
            toks[rng.randrange(5)] = rng.choice(words)
            refs.setdefault(" ".join(toks) + "!", []).append(f"ES {k} bis")
    return refs


def test_split_is_deterministic_and_independent_of_input_order():
    refs = synthetic_corpus()
    sentences = sorted(refs)
    gid, _ = dedup.group(sentences, refs)
    a = dedup.split_by_group(sentences, gid, {"test": 200, "dev": 100}, seed=1234, max_group=50)
    shuffled = sentences[:]
    random.Random(5).shuffle(shuffled)
    gid2, _ = dedup.group(shuffled, refs)
    b = dedup.split_by_group(shuffled, gid2, {"test": 200, "dev": 100}, seed=1234, max_group=50)
    assert a == b
    c = dedup.split_by_group(sentences, gid, {"test": 200, "dev": 100}, seed=99, max_group=50)
    assert c["test"] != a["test"]


def test_split_keeps_groups_whole_and_sizes_exact():
    refs = synthetic_corpus()
    sentences = sorted(refs)
    gid, _ = dedup.group(sentences, refs)
    assert max(np.bincount(gid)) >= 2  # there are groups to keep whole
    split = dedup.split_by_group(sentences, gid, {"test": 150, "dev": 80}, seed=3, max_group=20)
    assert len(split["test"]) == 150 and len(split["dev"]) == 80
    assert sorted(s for part in split.values() for s in part) == sentences
    where = {s: name for name, part in split.items() for s in part}
    for g in set(gid):
        assert len({where[s] for s, h in zip(sentences, gid) if h == g}) == 1
    assert not dedup.crossing_links(split, refs)


def test_rare_word_slice():
    vocab = dedup.vocabulary(["I have a house.", "You are tired."])
    held = ["I have a house.", "I have a zeppelin.", "You are 25.", "You're tired."]
    assert dedup.rare_word_sentences(held, vocab) == ["I have a zeppelin."]


def test_real_data_split_has_no_near_duplicate_across():
    if not REAL_DATA.exists():
        skip_or_fail(f"training data not found: {REAL_DATA}")
    from training.translator.prepare import read_pairs
    refs = read_pairs(REAL_DATA)
    sentences = sorted(refs)
    gid, _ = dedup.group(sentences, refs)
    split = dedup.split_by_group(sentences, gid, {"test": 2000, "dev": 1000}, seed=1234, max_group=50)
    assert len(split["test"]) == 2000 and len(split["dev"]) == 1000
    assert len(split["train"]) == len(sentences) - 3000
    assert dedup.crossing_links(split, refs) == {}


# -- pass-through --------------------------------------------------------------------------
@pytest.mark.parametrize("text, span, kind", [
    ("I met Zbigniew in the park.", "Zbigniew", "name"),
    ("I was born in 2024.", "2024", "number"),
    ("The station is 3.5 km away.", "3.5 km", "number"),
    ("Please visit https://example.org.", "https://example.org", "url"),
    ("Write to a@b.com, please.", "a@b.com", "email"),
    ("I love you ❤️", "❤️", "emoji"),
    ("Good job 👍🏽!", "👍🏽", "emoji"),
    ("Our family 👨‍👩‍👧 is here.", "👨‍👩‍👧", "emoji"),
    ("Call me at 10:30.", "10:30", "number"),
    ("It costs $25.", "$25", "number"),
    ("I bought an MP3 player.", "MP3", "code"),
    ("Where is Mr. Smith?", "Smith", "name"),
])
def test_protect_finds_span_and_round_trips(text, span, kind):
    protected, spans = passthrough.protect(text)
    assert [(s.text, s.kind) for s in spans] == [(span, kind)]
    assert span not in protected and passthrough.PLACEHOLDERS[0] in protected
    assert passthrough.restore(protected, spans) == text


def test_translated_words_and_known_names_are_left_to_the_model():
    for text in ["I speak English on Monday.", "Tom is in Paris.", "I think Mary is tired.",
                 "Where is the station?", "Tom's car is red."]:
        protected, spans = passthrough.protect(text)
        assert spans == [] and protected == text


def test_restore_in_a_translation():
    protected, spans = passthrough.protect("Visit https://example.org with Zbigniew at 10:30.")
    assert protected == "Visit ⟦0⟧ with ⟦1⟧ at ⟦2⟧."
    assert passthrough.restore("Visita ⟦0⟧ con ⟦1⟧ a las ⟦2⟧.", spans) == \
        "Visita https://example.org con Zbigniew a las 10:30."
    # the model may reorder placeholders
    assert passthrough.restore("A las ⟦2⟧, ⟦1⟧ visita ⟦0⟧.", spans) == \
        "A las 10:30, Zbigniew visita https://example.org."


def test_restore_is_robust_to_dropped_duplicated_and_unknown_placeholders():
    _, spans = passthrough.protect("I was born in 2024 in Reykjavik.")
    assert [s.text for s in spans] == ["2024", "Reykjavik"]
    assert passthrough.restore("Nací en ⟦0⟧ en ⟦0⟧ ⟦1⟧.", spans) == "Nací en 2024 en Reykjavik."
    assert passthrough.restore("Nací en ⟦0⟧.", spans) == "Nací en 2024 Reykjavik."  # dropped -> end
    assert passthrough.restore("Nací.", spans) == "Nací 2024 Reykjavik."
    assert passthrough.restore("Nací en ⟦ 1 ⟧ en ⟦0⟧ ⟦7⟧.", spans) == "Nací en Reykjavik en 2024."
    assert passthrough.restore("Sin marcadores.", []) == "Sin marcadores."


def test_existing_placeholder_text_is_kept_literally():
    text = "Type ⟦0⟧ and 42."
    protected, spans = passthrough.protect(text)
    assert [s.kind for s in spans] == ["literal", "number"]
    assert passthrough.restore(protected, spans) == text


def test_protect_pair_for_training():
    en, es, n = passthrough.protect_pair("I was born in 1990 in Osaka.", "Nací en 1990 en Osaka.")
    assert (en, es, n) == ("I was born in ⟦0⟧ in ⟦1⟧.", "Nací en ⟦0⟧ en ⟦1⟧.", 2)
    # a span the Spanish does not copy stays as text on both sides
    assert passthrough.protect_pair("I have 3 cats.", "Tengo tres gatos.") == \
        ("I have 3 cats.", "Tengo tres gatos.", 0)
    # with a generator: random increasing ids, the same on both sides; names protected sometimes
    rng = random.Random(1)
    en, es, n = passthrough.protect_pair("I think Tom is 30.", "Creo que Tom tiene 30.", rng, 0.0)
    ids_en = passthrough._PH.findall(en)
    assert n == 2 and ids_en == passthrough._PH.findall(es) and ids_en == sorted(ids_en, key=int)


# -- lexicon / gettext helpers --------------------------------------------------------------
def test_att_paths_and_entries():
    att = "\n".join([
        "0\t1\tc\tc\t0.0", "1\t2\ta\ta\t0.0", "2\t3\tt\tt\t0.0", "3\t4\tε\th\t0.0",
        "4\t5\t<n>\t<n>\t0.0", "5\t6\tε\t<m>\t0.0", "6\t6\t1\t1\t0.0", "6\t0.0", "--", "0\t1\tx\tx",
    ])
    assert lexicon.paths_of_att(att) == [("cat<n>", "cath<n><m>")]
    assert lexicon.split_entry("take# part<vblex>") == ("take", " part", ["vblex"])
    assert lexicon.split_entry("casa<n><f>") == ("casa", "", ["n", "f"])


def test_gettext_cleaning():
    c = gettext_pairs.clean
    assert c("_Open", "_Abrir", 16) == ("Open", "Abrir")
    assert c("Save &As", "Guardar &como", 16) == ("Save As", "Guardar como")
    assert c("File %s not found", "Archivo %s no encontrado", 16) is None
    assert c("Hello {name}", "Hola {name}", 16) is None
    assert c("one\x00many", "uno\x00muchos", 16) is None
    assert c("menu\x04Quit", "Salir", 16) == ("Quit", "Salir")
    assert c("OK", "OK", 16) is None
    assert c(" ".join(["word"] * 30), "x", 16) is None


def test_read_mo(tmp_path):
    entries = sorted([("", "Content-Type: text/plain; charset=UTF-8\n"), ("Open", "Abrir"), ("Quit", "Salir")])
    ids = b"".join(k.encode() + b"\0" for k, _ in entries)
    strs = b"".join(v.encode() + b"\0" for _, v in entries)
    n, o_tab = len(entries), 28
    t_tab = o_tab + 8 * n
    ids_at = t_tab + 8 * n
    strs_at = ids_at + len(ids)
    table_o, table_t, pos_i, pos_s = b"", b"", ids_at, strs_at
    for k, v in entries:
        table_o += struct.pack("<2I", len(k.encode()), pos_i)
        table_t += struct.pack("<2I", len(v.encode()), pos_s)
        pos_i += len(k.encode()) + 1
        pos_s += len(v.encode()) + 1
    mo = struct.pack("<7I", 0x950412DE, 0, n, o_tab, t_tab, 0, 0) + table_o + table_t + ids + strs
    (tmp_path / "x.mo").write_bytes(mo)
    assert dict(gettext_pairs.read_mo(tmp_path / "x.mo"))["Open"] == "Abrir"


def test_extra_pair_sampling_weight():
    rng = np.random.default_rng(0)
    assert len(lexicon_data.sample_indices(1000, 0.0, rng)) == 0
    assert abs(len(lexicon_data.sample_indices(10000, 0.2, rng)) - 2000) < 200
    idx = lexicon_data.sample_indices(100, 2.5, rng)
    assert 230 < len(idx) < 270 and np.bincount(idx, minlength=100).min() >= 2
