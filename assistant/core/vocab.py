"""The vocabulary of a GGUF file: tokens, their types and scores, and the special-token
settings (BOS/EOS, end-of-generation ids, llama.cpp's RSTRIP tokens) read from its
``tokenizer.ggml.*`` metadata."""

from __future__ import annotations

from typing import Final

from .gguf import GGUFFile

# Token types (llama_token_type).
TT_NORMAL: Final = 1
TT_UNKNOWN: Final = 2
TT_CONTROL: Final = 3
TT_USER_DEFINED: Final = 4
TT_UNUSED: Final = 5
TT_BYTE: Final = 6

# Tokens that end a turn, recognised by their text as llama.cpp does.
EOG_TEXTS: Final = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>",
})



class TokenizerError(ValueError):
    """The vocabulary is unusable, or an id is out of range."""


class Vocab:
    """The token table and special-token settings read from GGUF metadata."""

    def __init__(self, tokens: list[str], types: list[int], scores: list[float], model: str, pre: str) -> None:
        if not tokens:
            raise TokenizerError("the vocabulary is empty (tokenizer.ggml.tokens missing)")
        self.tokens = tokens
        self.types = types
        self.scores = scores
        self.model = model
        self.pre = pre
        self.token_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            # llama.cpp keeps the first id for a duplicated text.
            if t not in self.token_to_id:
                self.token_to_id[t] = i
        self.bos_id = -1
        self.eos_id = -1
        self.eot_id = -1
        self.unk_id = -1
        self.pad_id = -1
        self.add_bos = False
        self.add_eos = False
        self.add_space_prefix = False
        self.eog_ids: set[int] = set()
        # Special tokens that swallow the whitespace after them (llama.cpp's RSTRIP attribute).
        self.rstrip_ids: set[int] = set()

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def special_ids(self) -> list[int]:
        """Control, user-defined and unknown tokens, longest text first (llama.cpp order)."""
        ids = [i for i, t in enumerate(self.types) if t in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN)]
        ids.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))
        return ids


def phi3_rstrip_ids(v: Vocab) -> set[int]:
    """The special tokens llama.cpp marks RSTRIP when ``general.name`` says Phi-3: all of them and
    ``</s>``, but not ``<unk>``, ``<s>`` or ``<|endoftext|>``. Nothing in the vocabulary itself says
    so; llama.cpp keys this on the name, and so must we to give the same tokens."""
    ids = {i for i, t in enumerate(v.types) if t in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN)}
    eos_text = v.token_to_id.get("</s>", -1)
    if eos_text >= 0:
        ids.add(eos_text)
    for text in ("<unk>", "<s>", "<|endoftext|>"):
        ids.discard(v.token_to_id.get(text, -1))
    return ids


def vocab_from_gguf(f: GGUFFile) -> Vocab:
    """Build the :class:`Vocab` from a GGUF file's ``tokenizer.ggml.*`` metadata."""
    model = f.get_str("tokenizer.ggml.model", "")
    tokens = f.get_strings("tokenizer.ggml.tokens")
    n = len(tokens)
    types_arr = f.get_numbers("tokenizer.ggml.token_type")
    types: list[int] = [int(t) for t in types_arr.tolist()] if types_arr is not None else [TT_NORMAL] * n
    scores_arr = f.get_numbers("tokenizer.ggml.scores")
    scores: list[float] = [float(s) for s in scores_arr.tolist()] if scores_arr is not None else [0.0] * n
    if len(types) != n or len(scores) != n:
        raise TokenizerError(
            f"vocabulary arrays disagree: {n} tokens, {len(types)} types, {len(scores)} scores"
        )
    pre = f.get_str("tokenizer.ggml.pre", "default")
    v = Vocab(tokens, types, scores, model, pre)
    v.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1)
    v.eos_id = f.get_int("tokenizer.ggml.eos_token_id", -1)
    v.unk_id = f.get_int("tokenizer.ggml.unknown_token_id", -1)
    v.pad_id = f.get_int("tokenizer.ggml.padding_token_id", -1)
    v.eot_id = f.get_int("tokenizer.ggml.eot_token_id", -1)
    default_bos = model == "llama"
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", default_bos)
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", False)
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", model == "llama")
    for tid in (v.bos_id, v.eos_id, v.unk_id, v.pad_id, v.eot_id):
        if tid >= n:
            raise TokenizerError(f"special token id {tid} is outside the vocabulary of {n} tokens")
    for text in EOG_TEXTS:
        tid = v.token_to_id.get(text, -1)
        if tid >= 0 and types[tid] in (TT_CONTROL, TT_USER_DEFINED):
            v.eog_ids.add(tid)
            if v.eot_id < 0 and text != "<|endoftext|>":
                v.eot_id = tid
    if v.eos_id >= 0:
        v.eog_ids.add(v.eos_id)
    if v.eot_id >= 0:
        v.eog_ids.add(v.eot_id)
    name = f.get_str("general.name", "").lower()
    if "phi-3" in name or "phi3" in name:
        v.rstrip_ids = phi3_rstrip_ids(v)
    return v


