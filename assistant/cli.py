"""The ``assistant`` command line."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from .config import AD_HOC_ORIGIN, ModelEntry, load_registry, local_model_file, model_entry, parse_sampling
from .core.sampling import SAMPLING_FIELDS, SamplingSettings
from .diagnostics import core_status, kernels_line

MODEL_HELP = "A model name from models.toml (default: its default) or a .gguf path."
SAMPLING_META = "assistant.sampling"  # ctx.meta key: the sampling options given on the command line


def _print_version(ctx: click.Context, _param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    st = core_status()
    blas = ", ".join(f"{b.get('api')} {b.get('version')} ({b.get('arch')}, {b.get('threads')} threads)"
                     for b in st["blas"] if "api" in b) or "unknown"
    click.echo(f"assistant {st['version']}: core {'compiled (mypyc)' if st['compiled'] else 'NOT compiled (pure Python)'}; "
               f"numpy {st['numpy']}; BLAS {blas}; kernels {kernels_line(st['kernels'])}; {st['cpus']} CPUs")
    ctx.exit()


def _project_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors. Each says what is wrong in a sentence (GGUFError, ConfigError,
    TokenizerError, TemplateError and SamplingError are ValueErrors; registry lookups raise
    KeyError; missing files OSError)."""
    from .errors import ChatError
    from .pull import PullError
    from .quantize import QuantizeError

    return (ValueError, KeyError, OSError, ChatError, PullError, QuantizeError)


def one_line(err: BaseException) -> str:
    """An error as one line (a KeyError's str() would add quotes)."""
    text = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
    return " ".join(text.split("\n")) or type(err).__name__


class Commands(click.Group):
    """Every command prints the project's errors as click's one-line ``Error: ...`` with exit
    status 1, never a traceback (ASSISTANT_DEBUG=1 lets the traceback through)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except _project_errors() as err:
            if os.environ.get("ASSISTANT_DEBUG") == "1":
                raise
            raise click.ClickException(one_line(err)) from None


@click.group(cls=Commands)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, whether the core is compiled, and the BLAS in use.")
@click.option("--config", "config", default=None, help="A models.toml that overrides the built-in registry.")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """assistant: ChatGPT on your own laptop."""
    ctx.obj = {"config": config}


def _registry(ctx: click.Context) -> Any:
    return load_registry(ctx.obj.get("config"))


def _entry(ctx: click.Context, model: str | None) -> ModelEntry:
    """What ``-m`` names (a models.toml name, the default, or a .gguf path), for every command."""
    return model_entry(model, _registry(ctx))


def _local_file(ctx: click.Context, entry: ModelEntry) -> Path:
    """The GGUF file behind a local entry; a remote entry is a clear error for this command."""
    if entry.backend != "local":
        raise click.ClickException(f"model {entry.name!r} is served remotely ({entry.backend} backend, "
                                   f"{entry.base_url}); `assistant {ctx.info_name}` needs a local .gguf file")
    return local_model_file(entry)


def _load(ctx: click.Context, entry: ModelEntry, memory: str | None = None) -> Any:
    """The local engine for ``entry`` (see _local_file)."""
    from .loading import load_local_model

    return load_local_model(_local_file(ctx, entry), entry, memory=memory or "auto")


def _backend(ctx: click.Context, entry: ModelEntry) -> Any:
    """The entry's chat backend: the local engine, or the remote one its plugin provides."""
    from .chat import backend_loader

    return backend_loader(entry)()


@main.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the installation: compiled core, BLAS, models, plugins."""
    st = core_status()
    click.echo(json.dumps(st, indent=2))
    reg = _registry(ctx)
    for name, e in reg.models.items():
        click.echo(f"model {name}: {'downloaded' if e.downloaded else 'not downloaded'} ({e.local_path})")
    for err in reg.errors:
        click.echo(f"problem: {err}")


def threads_option(f: Any) -> Any:
    """``--threads N``: threads for the kernels and BLAS (default: every core)."""
    return click.option("--threads", type=click.IntRange(1, 1024), default=None,
                        help="Threads for the kernels and BLAS (default: every core).",
                        callback=_set_threads, expose_value=False)(f)


def _set_threads(_ctx: click.Context, _param: Any, value: int | None) -> None:
    if value:
        from .core.kernels import set_threads

        set_threads(value)


@main.command()
@click.option("-m", "--model", default=None, help=MODEL_HELP)
@threads_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the browser.")
@click.option("--api-key", default=None, envvar="ASSISTANT_API_KEY", help="Required to bind a non-loopback address.")
@click.option("--queue-cap", default=8, show_default=True, type=int)
@click.pass_context
def serve(ctx: click.Context, model: str | None, host: str, port: int, open_browser: bool,
          api_key: str | None, queue_cap: int) -> None:
    """Start the chat server and print the URL to open."""
    from werkzeug.serving import make_server

    from .core.gguf import open_gguf
    from .process import limit_malloc_arenas
    from .server import create_app

    limit_malloc_arenas()  # before the request threads start; see its docstring

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not api_key:
        raise click.ClickException(f"binding {host} exposes the assistant to the network; "
                                   f"set --api-key (or ASSISTANT_API_KEY) to do that")
    reg = _registry(ctx)
    entry = model_entry(model, reg)
    reg.models.setdefault(entry.name, entry)  # a .gguf path is served under its file name
    if entry.backend == "local" and entry.downloaded:
        open_gguf(str(local_model_file(entry)))  # a broken file stops here, not in the worker
    app = create_app({"REGISTRY": reg, "DEFAULT_MODEL": entry.name, "HOST": host, "PORT": port,
                      "API_KEY": api_key or "", "QUEUE_CAP": queue_cap})
    state = app.extensions["assistant"]
    if not entry.downloaded:
        click.echo(f"note: model {entry.name!r} is not downloaded yet; run: assistant pull {entry.name}", err=True)
    else:
        state.manager.worker(entry.name)  # start loading now, in the background
    server = make_server(host, port, app, threaded=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{server.server_port}/"
    click.echo(f"assistant is running on {entry.name}: open {url}", err=False)
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        state.manager.shutdown()


def _remember_sampling(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None and param.name:
        ctx.meta.setdefault(SAMPLING_META, {})[param.name] = value


def sampling_options(f: Any) -> Any:
    """One option per SAMPLING_FIELDS entry (``--top-k`` sets top_k), with the field's help;
    :func:`_sampling_from_options` reads back the ones given."""
    for fl in reversed(SAMPLING_FIELDS):
        f = click.option(f"--{fl.name.replace('_', '-')}", fl.name, type=int if fl.kind == "int" else float,
                         default=None, expose_value=False, callback=_remember_sampling,
                         help=f"{fl.help[:1].upper()}{fl.help[1:]}. Default: the model's, else {fl.default:g}.")(f)
    return f


def _sampling_from_options(ctx: click.Context, entry: ModelEntry) -> SamplingSettings:
    """The entry's sampling with the command line's options over it, validated as models.toml's."""
    try:
        return parse_sampling(ctx.meta.get(SAMPLING_META, {}), "command line", entry.sampling)
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def _echo_piece(text: str) -> None:
    click.echo(text, nl=False)
    sys.stdout.flush()


@main.command()
@click.option("-m", "--model", default=None, help=MODEL_HELP)
@click.option("-p", "--prompt", required=True, help="The text to continue (control tokens are parsed).")
@click.option("-n", "--max-tokens", "n_tokens", default=128, show_default=True, type=int)
@sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming.")
@click.option("--memory", type=click.Choice(["auto", "speed", "lean"]), default=None)
@threads_option
@click.pass_context
def run(ctx: click.Context, model: str | None, prompt: str, n_tokens: int, as_json: bool, memory: str | None) -> None:
    """Complete PROMPT with the model, streaming to stdout (a remote entry answers it as a
    user message)."""
    from .core.engine import GenerationSettings

    entry = _entry(ctx, model)
    sampling = _sampling_from_options(ctx, entry)
    if entry.backend != "local":
        _run_remote(ctx, entry, prompt, n_tokens, sampling, as_json)
        return
    m = _load(ctx, entry, memory)
    ids = m.tokenize(prompt, add_special=True, parse_special=True)
    text = ""
    tokens: list[int] = []
    stats: dict[str, float] = {}
    finish = ""
    for piece in m.generate(ids, GenerationSettings(max_tokens=n_tokens, sampling=sampling)):
        text += piece.text
        if piece.done:
            stats, finish = piece.stats, piece.finish_reason
        else:
            tokens.append(piece.token)
        if not as_json and piece.text:
            _echo_piece(piece.text)
    if as_json:
        click.echo(json.dumps({"text": text, "tokens": tokens, "prompt_tokens": len(ids),
                               "finish_reason": finish, "prefill_s": stats.get("prefill_s", 0.0),
                               "decode_s": stats.get("decode_s", 0.0), "load_s": m.load_seconds,
                               "decode_tps": len(tokens) / stats["decode_s"] if stats.get("decode_s") else 0.0,
                               "model": m.name}))
    else:
        click.echo()


def _run_remote(ctx: click.Context, entry: ModelEntry, prompt: str, n_tokens: int, sampling: Any,
                as_json: bool) -> None:
    """`run` on a remote entry: the prompt goes as one user message; the server counts tokens."""
    from .bench import timed_stream
    from .chat import ChatSettings

    backend = _backend(ctx, entry)
    events = backend.complete(prompt, ChatSettings(max_tokens=n_tokens, sampling=sampling), None)
    t = timed_stream(events, None if as_json else _echo_piece)
    if as_json:
        click.echo(json.dumps({"text": t.text, "finish_reason": t.finish_reason, "model": entry.name,
                               "backend": entry.backend, "first_token_s": t.first_token_s, "total_s": t.total_s,
                               "generated_tokens": t.tokens, "decode_tps": t.decode_tps}))
    else:
        click.echo()


@main.command()
@click.option("-m", "--model", default=None, help=MODEL_HELP)
@click.option("--system", default=None, help="System prompt.")
@click.option("-n", "--max-tokens", "n_tokens", default=None, type=int)
@sampling_options
@click.pass_context
def chat(ctx: click.Context, model: str | None, system: str | None, n_tokens: int | None) -> None:
    """Chat in the terminal: /reset, /system TEXT, /quit; Ctrl-C stops an answer."""
    from .chat import ChatRunner, ChatSettings
    from .store import default_db_path
    from .tools import ToolContext, registered_tools

    entry = _entry(ctx, model)
    backend = _backend(ctx, entry)
    settings = ChatSettings(max_tokens=n_tokens or entry.max_tokens, sampling=_sampling_from_options(ctx, entry))
    session = TerminalChat(ChatRunner(backend, registered_tools(), ToolContext(default_db_path())), settings,
                           system if system is not None else entry.system_prompt)
    click.echo(f"Chatting with {entry.name}. /reset, /system TEXT, /quit; Ctrl-C stops an answer.")
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if line.strip() in ("/quit", "/exit"):
            return
        session.handle(line)


class TerminalChat:
    """`assistant chat`'s conversation: the history, the system prompt, and one line at a time."""

    def __init__(self, runner: Any, settings: Any, system_prompt: str) -> None:
        self.runner = runner
        self.settings = settings
        self.system_prompt = system_prompt
        self.history: list[dict[str, Any]] = []

    def handle(self, line: str) -> None:
        """A command (/reset, /system, a tool's /command) or a message to answer."""
        from .tools import parse_slash_command, run_tool

        if not line.strip():
            return
        if line.strip() == "/reset":
            self.history.clear()
            click.echo("(conversation cleared)")
        elif line.startswith("/system"):
            self.system_prompt = line[len("/system"):].strip()
            click.echo("(system prompt set)")
        elif (slash := parse_slash_command(line.strip(), self.runner.all_tools)) is not None:
            res = run_tool(*slash, self.runner.context)
            click.echo(res.content if res.ok else f"error: {res.content}")
        else:
            self.answer(line)

    def answer(self, line: str) -> None:
        """Stream the answer to ``line``; Ctrl-C stops it and keeps what was said."""
        from .errors import ChatError

        self.history.append({"role": "user", "content": line})
        msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + self.history
        stopped = threading.Event()
        shown: list[str] = []
        try:
            for ev in self.runner.run(msgs, self.settings, stopped.is_set):
                self._show(ev, shown)
        except KeyboardInterrupt:
            stopped.set()
            click.echo("\n(stopped)")
            if shown:
                self.history.append({"role": "assistant", "content": "".join(shown)})
        except ChatError as err:
            click.echo(f"\nerror: {err}")
            self.history.pop()
        click.echo()

    def _show(self, ev: dict[str, Any], shown: list[str]) -> None:
        if ev["type"] == "token":
            _echo_piece(ev["text"])
            shown.append(ev["text"])
        elif ev["type"] == "tool_call":
            click.echo(f"\n[calling {ev['name']}({json.dumps(ev['arguments'])})]")
        elif ev["type"] == "tool_result":
            click.echo(f"[{ev['name']}: {ev['content']}]")
        elif ev["type"] == "trimmed":
            click.echo(f"[{ev['message']}]")
        elif ev["type"] == "done":
            self.history.extend(ev.get("new_messages", []))


@main.command()
@click.argument("model")
@click.argument("text")
@click.option("--special", is_flag=True, help="Parse control tokens written in the text.")
@click.option("--no-bos", is_flag=True, help="Do not add BOS even if the model wants it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokenize(ctx: click.Context, model: str, text: str, special: bool, no_bos: bool, as_json: bool) -> None:
    """Print the token ids and pieces of TEXT (like llama-tokenize)."""
    from .core.gguf import open_gguf
    from .core.tokenizer import tokenizer_from_gguf

    entry = _entry(ctx, model)
    tok = tokenizer_from_gguf(open_gguf(str(_local_file(ctx, entry))), entry.tokenizer_model)
    ids = tok.encode(text, add_special=not no_bos, parse_special=special)
    if as_json:
        click.echo(json.dumps([{"id": i, "piece": tok.piece(i)} for i in ids], ensure_ascii=False))
        return
    for i in ids:
        click.echo(f"{i:>8} -> {tok.piece(i)!r}")


@main.command()
@click.argument("model", required=False)
@click.option("-m", "--model", "model_opt", default=None, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def info(ctx: click.Context, model: str | None, model_opt: str | None, as_json: bool) -> None:
    """Summarise a model file (MODEL or -m): architecture, sizes, vocabulary, template, quantization mix."""
    from .info import model_summary, render_summary

    if model and model_opt and model != model_opt:
        raise click.UsageError(f"two models given: {model!r} and -m {model_opt!r}")
    entry = _entry(ctx, model or model_opt)
    path = _local_file(ctx, entry)
    summary = model_summary(str(path), None if entry.origin == AD_HOC_ORIGIN else entry)
    click.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary))


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_models", is_flag=True, help="Fetch every model in the registry.")
@click.option("--force", is_flag=True, help="Fetch again even if the file exists.")
@click.pass_context
def pull(ctx: click.Context, names: tuple[str, ...], all_models: bool, force: bool) -> None:
    """Fetch models into the model cache: NAME from models.toml, an http(s) URL, or
    hf:OWNER/REPO/FILE.gguf (a Hugging Face repo; set HF_TOKEN for gated ones)."""
    from .pull import PullError, pull as do_pull, pull_target

    reg = _registry(ctx)
    targets = list(reg.models) if all_models else list(names) or [reg.default]
    for name in targets:
        try:
            entry = pull_target(name, reg)
            t0 = time.time()
            path = do_pull(entry, force=force)
            click.echo(f"{entry.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.time() - t0:.1f} s)")
            if name not in reg.models:
                click.echo(f"chat with it: assistant chat -m {path}")
        except (PullError, KeyError) as err:
            raise click.ClickException(str(err.args[0]) if err.args else str(err)) from None
    _warm_kernels()


def _warm_kernels() -> None:
    """Compile the kernels into the disk cache now, so the first answer does not wait."""
    from .core import kernels

    if kernels.HAVE_NUMBA:
        t0 = time.time()
        kernels.warm()
        click.echo(f"kernels ready ({time.time() - t0:.1f} s; cached in {kernels.status()['cache_dir']})")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the models in models.toml and any problems with it."""
    reg = _registry(ctx)
    rows = []
    for name, e in reg.models.items():
        size = e.local_path.stat().st_size if e.backend == "local" and e.local_path.is_file() else e.size
        rows.append({"name": name, "size_mb": round(size / 1e6, 1) if size else None,
                     "downloaded": e.downloaded, "format": e.prompt_format, "default": name == reg.default,
                     "backend": e.backend, "description": e.description})
    if as_json:
        click.echo(json.dumps({"models": rows, "errors": reg.errors}, indent=2))
        return
    click.echo(f"{'':2}{'NAME':<18}{'SIZE':>10}  {'DOWNLOADED':<11}{'FORMAT':<9}DESCRIPTION")
    for r in rows:
        size = f"{r['size_mb']:.0f} MB" if r["size_mb"] else "-"
        click.echo(f"{'*' if r['default'] else ' ':2}{r['name']:<18}{size:>10}  "
                   f"{'yes' if r['downloaded'] else 'no':<11}{r['format']:<9}{r['description']}")
    for err in reg.errors:
        click.echo(f"problem: {err}", err=True)


@main.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """List loaded plugins, where they come from, and the hooks each implements."""
    from .plugin_manager import get_plugins

    pm = get_plugins(_registry(ctx).plugin_dirs)
    for info in pm.infos.values():
        status = f"ERROR {info.error}" if info.error else ", ".join(info.hooks)
        click.echo(f"{info.name:<34} {info.origin:<40} {status}")


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--type", "qtype", type=click.Choice(["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "f32"]),
              required=True)
def quantize(src: str, dst: str, qtype: str) -> None:
    """Requantize the matrices of SRC into DST (atomically; never overwrites SRC)."""
    from .quantize import QuantizeError, quantize_file

    try:
        quantize_file(src, dst, qtype, progress=True)
    except QuantizeError as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.option("-m", "--model", default=None, help=MODEL_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--ctx", "n_ctx", default=512, show_default=True, type=int, help="Tokens per chunk.")
@click.option("--chunks", default=0, type=int, help="Stop after this many chunks (0 = all).")
@click.pass_context
def perplexity(ctx: click.Context, model: str | None, file: str, n_ctx: int, chunks: int) -> None:
    """Perplexity over a text file, scored like llama-perplexity (second half of each chunk)."""
    from .perplexity import perplexity as ppl

    m = _load(ctx, _entry(ctx, model))
    text = Path(file).read_text(encoding="utf-8", errors="replace")
    result = ppl(m, text, n_ctx, chunks, lambda i, n, p: click.echo(f"[{i}/{n}] {p:.4f}", err=True))
    click.echo(f"perplexity: {result['perplexity']:.4f} over {result['tokens_scored']} tokens "
               f"in {result['chunks']} chunks")


@main.command()
@click.option("-m", "--model", default=None, help=MODEL_HELP)
@click.option("--prompt", "n_prompt", default=512, show_default=True, type=int)
@click.option("--gen", "n_gen", default=128, show_default=True, type=int)
@click.option("--reps", default=3, show_default=True, type=int)
@click.option("--memory", type=click.Choice(["speed", "lean"]), default="lean", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@threads_option
@click.pass_context
def bench(ctx: click.Context, model: str | None, n_prompt: int, n_gen: int, reps: int, memory: str,
          as_json: bool) -> None:
    """Measure load time, first token, prefill and decode speed, and peak memory (remote
    entries: time to first token and tokens per second)."""
    from .bench import run_bench, run_remote_bench

    entry = _entry(ctx, model)
    if entry.backend != "local":
        result = run_remote_bench(_backend(ctx, entry), n_prompt, n_gen, reps)
    else:
        result = run_bench(str(_local_file(ctx, entry)), n_prompt, n_gen, reps, memory)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            click.echo(f"{k:>16}: {v}")


if __name__ == "__main__":
    main()
