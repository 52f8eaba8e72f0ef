"""Prompt formats: exact renderings, the GGUF templates, and the jinja2 sandbox."""

from __future__ import annotations

import pytest

from assistant.chat import prompt_formats
from assistant.core.gguf import open_gguf
from assistant.formats import TemplateError, auto_format
from conftest import golden, real_model_path

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]

EXPECTED = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
              "Hello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
    "alpaca": "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### Instruction:\n2+2?\n\n### Response:\n",
    "vicuna": "Be brief. USER: Hi ASSISTANT: Hello!</s>USER: 2+2? ASSISTANT:",
    "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]",
    "llama-3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
               "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
             "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] 2+2? [/INST]",
    "qwen3": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
             "Hello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
    "phi-3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\n2+2?<|end|>\n"
             "<|assistant|>\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n",
    "plain": "Be brief.\n\nHi\n\nHello!\n\n2+2?",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_format_renders_exactly(name):
    fmt = prompt_formats()[name]
    assert fmt.render(CONV) == EXPECTED[name]


# A tool round, and braces in the text (the [INST] formats fill templates with str.format).
TOOL_CONV = [{"role": "system", "content": "Use {braces}."}, {"role": "user", "content": "What is {x}?"},
             {"role": "assistant", "content": "Calling."}, {"role": "tool", "content": '{"x": 42}'},
             {"role": "user", "content": "Thanks"}]
TOOL_EXPECTED = {
    "llama-2": '<s>[INST] <<SYS>>\nUse {braces}.\n<</SYS>>\n\nWhat is {x}? [/INST] Calling. </s>'
               '<s>[INST] [tool result]\n{"x": 42} [/INST]<s>[INST] Thanks [/INST]',
    "llama-3": '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nUse {braces}.<|eot_id|>'
               '<|start_header_id|>user<|end_header_id|>\n\nWhat is {x}?<|eot_id|>'
               '<|start_header_id|>assistant<|end_header_id|>\n\nCalling.<|eot_id|>'
               '<|start_header_id|>ipython<|end_header_id|>\n\n{"x": 42}<|eot_id|>'
               '<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>'
               '<|start_header_id|>assistant<|end_header_id|>\n\n',
    "mistral": '<s>[INST] Use {braces}.\n\nWhat is {x}? [/INST]Calling.</s>[INST] [tool result]\n{"x": 42} [/INST]'
               '[INST] Thanks [/INST]',
    "zephyr": '<|system|>\nUse {braces}.</s>\n<|user|>\nWhat is {x}?</s>\n<|assistant|>\nCalling.</s>\n'
              '<|user|>\n{"x": 42}</s>\n<|user|>\nThanks</s>\n<|assistant|>\n',
}


@pytest.mark.parametrize("name", sorted(TOOL_EXPECTED))
def test_tool_results_and_braces_render_exactly(name):
    assert prompt_formats()[name].render(TOOL_CONV) == TOOL_EXPECTED[name]


def test_every_named_format_has_stops_or_is_plain():
    for name, fmt in prompt_formats().items():
        assert fmt.stop or name == "plain", name


@pytest.mark.real_model
@pytest.mark.parametrize("model", ["smollm2", "qwen2.5-coder"])
def test_gguf_templates_render_the_golden_prompts(model):
    f = open_gguf(str(real_model_path(model)))
    fmt = auto_format(f.get_str("tokenizer.chat_template"), "", "")
    questions = ["What is the capital of Japan?", "Write a haiku about the sea.",
                 "Explain what a CPU does in one sentence.", "List three fruits."]
    chats = [c for c in golden(model)["generate"] if c["kind"] == "chat"]
    assert len(chats) == 4
    for q, case in zip(questions, chats):
        assert fmt.render([{"role": "user", "content": q}]) == case["prompt"]


@pytest.mark.parametrize("template", [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{% for m in messages %}{{ m.update({'role': 'x'}) }}{% endfor %}",
    "{{ raise_exception('nope') }}",
])
def test_sandbox_blocks_hostile_templates(template, tmp_path):
    marker = tmp_path / "pwned"
    fmt = auto_format(template.replace("id", f"touch {marker}"), "", "")
    with pytest.raises(TemplateError):
        fmt.render([{"role": "user", "content": "hi"}])
    assert not marker.exists()
