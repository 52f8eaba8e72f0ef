"""Constrained decoding: the byte-level matcher, the trie-walk masks, and generation under them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jsonschema_check import errors
from assistant.core.engine import GenerationSettings, Model
from assistant.core.json_constraint import ConstraintFactory, Grammar, JsonSchemaError
from assistant.core.sampling import SamplingSettings

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]},
    },
    "required": ["name", "age"],
    "$defs": {"pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]},
                                                       "good": {"type": "boolean"}}, "required": ["kind"]}},
}


def matches(schema, text):
    g = Grammar(schema)
    st = g.start
    for c in text.encode():
        st = g.step(st, c)
        if not st:
            return False
    return g.can_end(st)


@pytest.mark.parametrize("text", [
    '{"a": [1, -2.5e3, 0.25, "x\\u00e9\\n"], "b": null, "c": {"d": true}}', "[]", '"s"', "-0", "12",
    '{\n  "a": 1\n}', "[false, {}]",
])
def test_any_json_accepted(text):
    assert matches({}, text)
    json.loads(text)


@pytest.mark.parametrize("text", ['{"a": }', "[1,]", "01", '"a\\x"', "tru", '{"a" 1}', "{'a': 1}", '"\x01"',
                                  "[1] 2", " " * 21 + "1"])
def test_invalid_json_refused(text):
    assert not matches({}, text)


@pytest.mark.parametrize("text, ok", [
    ('{"name": "Ann", "age": 31}', True),
    ('{"age": 31, "name": "Ann", "tags": ["a", "c"], "zip": "12345"}', True),
    ('{"name": "Ann", "age": 31, "pet": {"kind": "dog", "good": true}}', True),
    ('{"name": "Ann", "age": 31, "pet": null}', True),
    ('{"name": "Ann"}', False),                                   # required
    ('{"name": "Ann", "age": 31.5}', False),                      # integer
    ('{"name": "Ann", "age": "31"}', False),                      # type
    ('{"name": "Ann", "age": 3, "zip": "1234"}', False),          # pattern
    ('{"name": "Ann", "age": 3, "tags": ["d"]}', False),          # enum
    ('{"name": "Ann", "age": 3, "tags": ["a", "b", "c", "a"]}', False),  # maxItems
    ('{"name": "Ann", "age": 3, "extra": 1}', False),             # undeclared property
    ('{"name": "Ann", "age": 3, "age": 4}', False),               # repeated property
    ('{"name": "Annabelle Smith", "age": 3}', False),             # maxLength
    ('{"name": "Ann", "age": 3, "pet": {"good": true}}', False),  # nested required
])
def test_schema_enforced(text, ok):
    assert matches(PERSON, text) is ok
    if ok:
        assert errors(json.loads(text), PERSON) == []


@pytest.mark.parametrize("pattern, good, bad", [
    ("^[A-Z]{2}-[0-9]+$", ["AB-1", "XY-123"], ["A-1", "AB-", "ab-1"]),
    ("^(cat|dog)s?$", ["cat", "dogs"], ["cow", "catss"]),
    ("^\\d{3}(\\.\\d{1,2})?$", ["123", "123.4", "123.45"], ["12", "123.", "123.456"]),
    ("x", ["x", "axb"], ["", "ab"]),  # unanchored: search semantics
    ("^[^ ]+@[a-z]+\\.com$", ["me@host.com"], ["me @host.com", "me@host.org"]),
    ("^[A-Z]{3}$", ["MEN"], ["MEN\u00e9", "M\u00c9N"]),  # no dead end on a character's first byte
    ("^[a-z\u00e9]+$", ["caf\u00e9"], ["cafe!"]),
])
def test_patterns(pattern, good, bad):
    schema = {"type": "string", "pattern": pattern}
    for s in good:
        assert matches(schema, json.dumps(s, ensure_ascii=False)), s
    for s in bad:
        assert not matches(schema, json.dumps(s, ensure_ascii=False)), s


@pytest.mark.parametrize("schema, fragment", [
    ({"type": "string", "minimum": 3}, "'minimum' is not supported"),
    ({"type": "thing"}, "not a JSON Schema type"),
    ({"$ref": "http://example.com/s.json"}, "only local $ref"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "not in properties"),
    ({"type": "string", "pattern": "(ab"}, "missing ')'"),
    ({"enum": []}, "non-empty list"),
])
def test_unsupported_schemas_are_refused_by_name(schema, fragment):
    with pytest.raises(JsonSchemaError) as err:
        Grammar(schema)
    assert fragment in str(err.value)


def brute_force_mask(factory, state, n_vocab, eog):
    """Allowed ids by stepping every token's bytes (what the trie walk must reproduce)."""
    g = factory.grammar
    out = np.zeros(n_vocab, dtype=bool)
    for t in range(n_vocab):
        data = factory.token_bytes[t]
        if t in eog:
            out[t] = g.can_end(state)
            continue
        st = state
        for c in data:
            st = g.step(st, c)
            if not st:
                break
        out[t] = bool(data) and bool(st)
    return out


def test_trie_masks_equal_brute_force(tiny_models):
    """On a real vocabulary shape (byte-level BPE), masks from the trie walk (with its
    whole-subtree shortcuts) equal token-by-token checking, at every step of a document."""
    m = Model(str(tiny_models["qwen2"]), n_ctx=256)
    eog = sorted(m.tokenizer.vocab.eog_ids)
    f = ConstraintFactory(PERSON, m.tokenizer, eog)
    c = f.new()
    doc = '{"name": "A\\"n é", "age": -12, "tags": ["a"], "pet": {"kind": "cat"}}'
    ids = m.tokenize(doc, add_special=False)
    assert m.detokenize(ids) == doc
    for tid in ids:
        allowed, listed = f.cache.mask(c.state)
        mask = np.zeros(m.n_vocab, dtype=bool)
        mask[listed] = True
        if not allowed:
            mask = ~mask
        assert np.array_equal(mask, brute_force_mask(f, c.state, m.n_vocab, set(eog)))
        assert mask[tid]
        c.accept(tid)
    assert c.done()


def test_generation_under_the_constraint_always_parses(tiny_models):
    """A random tiny model, sampled at temperature 1, writes schema-valid JSON every time."""
    m = Model(str(tiny_models["llama"]), n_ctx=1024)
    factory = ConstraintFactory(PERSON, m.tokenizer, sorted(m.tokenizer.vocab.eog_ids))
    for seed in range(20):
        s = GenerationSettings(max_tokens=900, sampling=SamplingSettings(temperature=1.0, top_k=0, top_p=1.0,
                                                                         min_p=0.0, seed=seed),
                               constraint=factory.new(), lookup_decoding=False)
        prompt = m.tokenize(f"person {seed}:", add_special=True)
        pieces = list(m.generate(prompt, s))
        text = "".join(p.text for p in pieces)
        assert pieces[-1].finish_reason == "stop", text
        assert errors(json.loads(text), PERSON) == [], text


@pytest.mark.parametrize("data, ok", [
    (b'"caf\xc3\xa9"', True), (b'"\xe6\x97\xa5\xe6\x9c\xac"', True), (b'"\xf0\x9f\x98\x80"', True),
    (b'"\x80"', False),          # a stray continuation byte
    (b'"\xc3"', False),          # a character cut short by the closing quote
    (b'"\xc3\x28"', False),      # a lead byte followed by ASCII
    (b'"\xc0\xaf"', False),      # an overlong lead byte
])
def test_strings_are_valid_utf8(data, ok):
    """Byte-level vocabularies hold partial characters; strings may only join them into whole ones."""
    for schema in ({"type": "string"}, {"type": "string", "maxLength": 4}):
        g = Grammar(schema)
        st = g.start
        for c in data:
            st = g.step(st, c)
            if not st:
                break
        assert (bool(st) and g.can_end(st)) is ok
        if ok:
            assert len(json.loads(data)) <= 4
