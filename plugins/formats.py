"""Named prompt formats: alpaca, vicuna, chatml, llama-2, llama-3, qwen3, gemma, phi-3, mistral,
zephyr, plain.

Each renders a message list to the exact text its model family was trained on and says
which strings end an answer. Tool results (role ``tool``) are shown to formats without
a tool role as a user turn that says so.
"""

from __future__ import annotations

from typing import Any

from assistant.formats import Message, PromptFormat, last_user_index, split_thinking
from assistant.hookspecs import hookimpl

ALPACA_SYSTEM = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def _split_system(messages: list[Message], default: str = "") -> tuple[str, list[Message]]:
    if messages and messages[0].get("role") == "system":
        return str(messages[0].get("content", "")), messages[1:]
    return default, messages


def _turns(messages: list[Message]) -> list[tuple[str, str]]:
    """(role, content) with tool results folded into user turns."""
    out: list[tuple[str, str]] = []
    for m in messages:
        role = m.get("role", "user")
        content = str(m.get("content", ""))
        if role == "tool":
            role, content = "user", f"[tool result]\n{content}"
        out.append((role, content))
    return out


def chatml(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    parts = [f"<|im_start|>{m.get('role', 'user')}\n{m.get('content', '')}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _labelled(messages: list[Message], add_generation_prompt: bool, default_system: str, after_system: str,
              user: str, assistant: str, generation: str) -> str:
    """Turns as labelled paragraphs (Alpaca, Vicuna) after the system prompt."""
    system, rest = _split_system(messages, default_system)
    out = system + after_system if system else ""
    for role, content in _turns(rest):
        out += (assistant if role == "assistant" else user).format(content=content)
    return out + generation if add_generation_prompt else out


def alpaca(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    return _labelled(messages, add_generation_prompt, ALPACA_SYSTEM, "\n\n", "### Instruction:\n{content}\n\n",
                     "### Response:\n{content}\n\n", "### Response:\n")


def vicuna(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    return _labelled(messages, add_generation_prompt, VICUNA_SYSTEM, " ", "USER: {content} ",
                     "ASSISTANT: {content}</s>", "ASSISTANT:")


def _inst(messages: list[Message], start: str, user: str, assistant: str, first_user: str) -> str:
    """[INST] prompts (Llama 2, Mistral): the system prompt goes into the first user turn."""
    system, rest = _split_system(messages)
    out = start
    first = True
    for role, content in _turns(rest):
        if role == "assistant":
            out += assistant.format(content=content)
            continue
        if first and system:
            content = first_user.format(system=system, content=content)
        first = False
        out += user.format(content=content)
    return out


def llama2(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    return _inst(messages, "", "<s>[INST] {content} [/INST]", " {content} </s>",
                 "<<SYS>>\n{system}\n<</SYS>>\n\n{content}")


def _renamed(messages: list[Message], tool_role: str) -> list[tuple[str, str]]:
    """(role, content) with the ``tool`` role written as ``tool_role``."""
    roles = [str(m.get("role", "user")) for m in messages]
    return [(tool_role if r == "tool" else r, str(m.get("content", ""))) for r, m in zip(roles, messages)]


def llama3(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    out = "<|begin_of_text|>" + "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>"
                                        for role, content in _renamed(messages, "ipython"))
    if add_generation_prompt:
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


def qwen3(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    """ChatML as Qwen3's template writes it: replies before the last user message lose their
    <think> block, later ones (tool rounds of this turn) keep it, tool results go in a user turn."""
    last = last_user_index(messages)
    out = ""
    prev = ""
    for i, m in enumerate(messages):
        role = m.get("role", "user")
        content = str(m.get("content", ""))
        if role == "assistant":
            reasoning, answer = split_thinking(content)
            if i > last and reasoning:
                answer = f"<think>\n{reasoning}\n</think>\n\n{answer}"
            out += f"<|im_start|>assistant\n{answer}<|im_end|>\n"
        elif role == "tool":
            # Consecutive tool results share one user turn.
            if prev != "tool":
                out += "<|im_start|>user"
            out += f"\n<tool_response>\n{content}\n</tool_response>"
            if i + 1 == len(messages) or messages[i + 1].get("role") != "tool":
                out += "<|im_end|>\n"
        else:
            out += f"<|im_start|>{role}\n{content}<|im_end|>\n"
        prev = role
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


def phi3(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    out = ""
    for role, content in _turns(messages):
        if role == "system" and not content:
            continue
        out += f"<|{role}|>\n{content}<|end|>\n"
    if add_generation_prompt:
        out += "<|assistant|>\n"
    return out


def gemma(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    system, rest = _split_system(messages)
    out = ""
    first = True
    for role, content in _turns(rest):
        # The system prompt goes before the first user turn's text, untrimmed (Gemma 3's template).
        prefix = f"{system}\n\n" if first and system and role == "user" else ""
        first = False
        who = "model" if role == "assistant" else "user"
        out += f"<start_of_turn>{who}\n{prefix}{content.strip()}<end_of_turn>\n"
    if add_generation_prompt:
        out += "<start_of_turn>model\n"
    return out


def mistral(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    return _inst(messages, "<s>", "[INST] {content} [/INST]", "{content}</s>", "{system}\n\n{content}")


def zephyr(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    out = "".join(f"<|{role}|>\n{content}</s>\n" for role, content in _renamed(messages, "user"))
    if add_generation_prompt:
        out += "<|assistant|>\n"
    return out


def plain(messages: list[Message], add_generation_prompt: bool, tools: Any = None) -> str:
    return "\n\n".join(str(m.get("content", "")) for m in messages)


FORMATS = [
    PromptFormat("chatml", chatml, ["<|im_end|>"], "ChatML (<|im_start|>role ... <|im_end|>)"),
    PromptFormat("alpaca", alpaca, ["### Instruction:"], "Stanford Alpaca instruction format"),
    PromptFormat("vicuna", vicuna, ["USER:", "</s>"], "Vicuna v1.1 (USER: ... ASSISTANT:)"),
    PromptFormat("llama-2", llama2, ["</s>", "[INST]"], "Llama 2 chat ([INST] <<SYS>> ... [/INST])"),
    PromptFormat("llama-3", llama3, ["<|eot_id|>"], "Llama 3 instruct (header ids, <|eot_id|>)"),
    PromptFormat("qwen3", qwen3, ["<|im_end|>"], "Qwen3 (ChatML; earlier replies' <think> blocks left out)"),
    PromptFormat("gemma", gemma, ["<end_of_turn>"], "Gemma turns (<start_of_turn>user/model)"),
    PromptFormat("phi-3", phi3, ["<|end|>", "<|endoftext|>"], "Phi-3 / Phi-3.5 (<|user|> ... <|end|>)"),
    PromptFormat("mistral", mistral, ["</s>", "[INST]"], "Mistral instruct ([INST] ... [/INST])"),
    PromptFormat("zephyr", zephyr, ["</s>", "<|user|>"], "Zephyr (<|user|>, <|assistant|>)"),
    PromptFormat("plain", plain, [], "no markup: the messages' text joined by blank lines"),
]


@hookimpl
def register_prompt_formats(register):
    for fmt in FORMATS:
        register(fmt)


# How these families mark tool calls (Hermes/Qwen's <tool_call> tags are built in).
TOOL_CALL_MARKERS = [("<|python_tag|>", "<|eom_id|>"), ("[TOOL_CALLS]", "")]


@hookimpl
def register_tool_call_syntax(register):
    for open_, close in TOOL_CALL_MARKERS:
        register(open_, close)
