"""The sampling options of `run` and `chat` are generated from SAMPLING_FIELDS: each field is an
option with its help, the old names (--temperature ... --repeat-penalty) keep working, and the
values reach the sampler. In process (click's runner), on a tiny generated model."""

from __future__ import annotations

import json

import click
from click.testing import CliRunner

from assistant.cli import _sampling_from_options, main, sampling_options
from assistant.config import ModelEntry
from assistant.core.sampling import SAMPLING_FIELDS, SamplingSettings

OLD_OPTIONS = ["--temperature", "0.5", "--top-k", "7", "--top-p", "0.9", "--min-p", "0.1", "--seed", "3",
               "--repeat-penalty", "1.1"]


@click.command()
@sampling_options
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the settings the options make over an entry whose models.toml sets temperature 0.3."""
    entry = ModelEntry(name="m", path="/m.gguf", sampling=SamplingSettings(temperature=0.3))
    click.echo(json.dumps(_sampling_from_options(ctx, entry).as_dict()))


def test_every_field_is_an_option_with_its_help():
    for command in ("run", "chat"):
        out = CliRunner().invoke(main, [command, "--help"])
        assert out.exit_code == 0, out.output
        text = " ".join(out.output.split())
        for f in SAMPLING_FIELDS:
            option = "--" + f.name.replace("_", "-")
            kind = "INTEGER" if f.kind == "int" else "FLOAT"
            assert f"{option} {kind} {f.help[:1].upper()}{f.help[1:]}. Default: the model's, else {f.default:g}." \
                in text, (command, option)


def test_the_old_option_names_set_their_fields_over_the_entry():
    out = CliRunner().invoke(show, OLD_OPTIONS)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"temperature": 0.5, "top_k": 7, "top_p": 0.9, "min_p": 0.1, "seed": 3,
                                      "repeat_penalty": 1.1, "repeat_last_n": 64, "frequency_penalty": 0.0,
                                      "presence_penalty": 0.0}
    untouched = json.loads(CliRunner().invoke(show, ["--presence-penalty", "0.5"]).output)
    assert untouched["temperature"] == 0.3 and untouched["presence_penalty"] == 0.5  # the entry's, then ours


def test_an_out_of_range_option_is_one_line_error(tiny_models):
    out = CliRunner().invoke(main, ["run", "-m", str(tiny_models["llama"]), "-p", "hi", "--top-p", "2"])
    assert out.exit_code == 1
    assert out.output == "Error: command line.sampling: top_p must be between 0 and 1, got 2.0\n"
    out = CliRunner().invoke(show, ["--top-k", "many"])
    assert out.exit_code == 2 and "'many' is not a valid integer" in out.output


def test_run_samples_with_the_options_given(tiny_models):
    def tokens(*options: str) -> list[int]:
        out = CliRunner().invoke(main, ["run", "-m", str(tiny_models["llama"]), "-p", "hello", "-n", "12",
                                        "--json", *options])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["tokens"]

    # The seed reaches the sampler: the same seed draws the same tokens, another seed others.
    sampled = tokens(*OLD_OPTIONS, "--temperature", "50", "--top-k", "0", "--top-p", "1", "--min-p", "0")
    assert len(sampled) == 12
    assert tokens(*OLD_OPTIONS, "--temperature", "50", "--top-k", "0", "--top-p", "1", "--min-p", "0") == sampled
    assert tokens(*OLD_OPTIONS, "--temperature", "50", "--top-k", "0", "--top-p", "1", "--min-p", "0",
                  "--seed", "4") != sampled
    # --top-k 1 is greedy whatever the temperature and seed.
    assert tokens("--top-k", "1", "--seed", "9") == tokens("--temperature", "0")
