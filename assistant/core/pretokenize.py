"""Pre-tokenizers for byte-level BPE vocabularies, selected by ``tokenizer.ggml.pre``.

Each pre-tokenizer is a list of regular expressions applied in turn, as llama.cpp's
``unicode_regex_split`` does: every expression splits each fragment left by the previous
one into its matches *and* the unmatched gaps between them, and a match never crosses a
fragment boundary (so a lookahead cannot see past the end of its fragment). The
expressions are the ones llama.cpp uses; the ``regex`` package supplies the ``\\p{L}``
and ``\\p{N}`` classes that the standard library lacks.
"""

from __future__ import annotations

from typing import Final

import regex

_GPT2: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3: Final = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2: Final = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# o200k (GPT-4o, Phi-4 mini): a word is upper-case letters then lower-case ones (either run may
# be empty, not both), so "CamelCase" splits in two; contractions stick to the word; digits by 1-3.
# llama.cpp's form, with "[^a-z]" / "[^A-Z]" restricted to letters instead of \p{Lu}/\p{Ll}.
_CONTRACTION: Final = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
_GPT4O: Final = (
    r"[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])*(?:(?=\p{L})[^A-Z])+" + _CONTRACTION
    + r"|[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])+(?:(?=\p{L})[^A-Z])*" + _CONTRACTION
    + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK_LETTERS: Final = (
    # Written with escapes where Unicode normalization would change the character
    # (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126 OHM SIGN, U+212A KELVIN SIGN).
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ"
    "\u1f5f-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌ\u1fd0-\u1fd3\u1fd6-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄ"
    "Ⰰ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)

# name in tokenizer.ggml.pre -> expressions, applied in order.
PRETOKENIZERS: Final[dict[str, tuple[str, ...]]] = {
    "default": (
        r"[\p{P}\$\+<=>\^~\|]+",
        _GPT2,
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ),
    "gpt-2": (_GPT2,),
    "gpt2": (_GPT2,),
    "llama-bpe": (_LLAMA3,),
    "llama3": (_LLAMA3,),
    "llama-v3": (_LLAMA3,),
    # cl100k vocabularies (DBRX, Phi-4 14B) split as Llama 3 does but merge every word.
    "dbrx": (_LLAMA3,),
    "smaug-bpe": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "deepseek-r1-qwen": (_QWEN2,),
    "gpt-4o": (_GPT4O,),
    "llama4": (_GPT4O,),
    "smollm": (r"\p{N}", _GPT2),
    "starcoder": (r"\p{N}", _GPT2),
    "deepseek-llm": (
        r"[\r\n]",
        r"\s?[" + _DEEPSEEK_LETTERS + r"]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}+",
    ),
}

# Pre-tokenizers whose merges are skipped when a whole word is already a token.
IGNORE_MERGES: Final = frozenset({"llama-bpe", "llama3", "llama-v3"})
# Pre-tokenizers for which llama.cpp does not clean up spaces when detokenizing (Llama 3's
# llama-bpe keeps the clean-up on: " ," loses its space there).
NO_CLEAN_SPACES: Final = frozenset({"qwen2", "deepseek-r1-qwen", "smollm", "deepseek-llm", "gpt-4o", "llama4"})


class PreTokenizer:
    """Splits text into the words that BPE merges within."""

    def __init__(self, name: str) -> None:
        exprs = PRETOKENIZERS.get(name)
        if exprs is None:
            raise ValueError(
                f"pre-tokenizer {name!r} (tokenizer.ggml.pre) is not supported; "
                f"supported: {', '.join(sorted(PRETOKENIZERS))}"
            )
        self.name = name
        self.patterns: list[regex.Pattern[str]] = [regex.compile(e) for e in exprs]

    def split(self, text: str) -> list[str]:
        """The words of ``text``; their concatenation is ``text``."""
        frags: list[str] = [text] if text else []
        for pat in self.patterns:
            out: list[str] = []
            for frag in frags:
                # Fast path: when the matches tile the fragment (the usual case for the
                # single-expression pre-tokenizers), findall gives the pieces directly.
                found: list[str] = pat.findall(frag)
                total = 0
                for piece in found:
                    total += len(piece)
                if total == len(frag) and "" not in found:
                    out.extend(found)
                    continue
                start = 0
                for m in pat.finditer(frag):
                    s = m.start()
                    e = m.end()
                    if s == e:
                        continue
                    if s > start:
                        out.append(frag[start:s])
                    out.append(frag[s:e])
                    start = e
                if start < len(frag):
                    out.append(frag[start:])
            frags = out
        return frags
