"""The seqtool Typer app: global options, the command list, and error → exit-code handling."""

from __future__ import annotations

import copy
import io
import os
import sys
import traceback
from typing import Annotated, Literal, Optional

import click
import typer
import typer.core

from seqtool import __version__
from seqtool.cli.console import GlobalOptions, print_error
from seqtool.cli.options import complete_device, show_config_defaults
from seqtool.errors import EXIT_FAILURE, EXIT_INTERRUPTED, RuntimeFailure, SeqtoolError, out_of_memory


class SeqtoolCommand(typer.core.TyperCommand):
    """A command whose --help shows the config default of each option that sets a config key."""

    def format_help(self, ctx: click.Context, formatter) -> None:
        show_config_defaults(self.name, self.callback.__wrapped__, self.params)
        super().format_help(ctx, formatter)

    def invoke(self, ctx: click.Context):
        obj = ctx.find_root().obj  # the global options, wherever they were given
        if isinstance(obj, GlobalOptions) and obj.threads:
            use_threads(obj.threads)
        return super().invoke(ctx)


def use_threads(n: int) -> None:
    """--threads N: torch's intra-op CPU threads for this command. Before torch is imported (commands
    import it inside their bodies) through OMP_NUM_THREADS/MKL_NUM_THREADS, so that its thread pool
    starts at N and worker processes inherit it; after, through torch.set_num_threads."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


PASS_THROUGH = (typer.Exit, typer.TyperException, typer.Abort, click.ClickException, click.exceptions.Abort)


class SeqtoolGroup(typer.core.TyperGroup):
    """Takes the global options after a command name too, and maps every failure inside a command to
    one stderr line and the documented exit code."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():  # each command also takes the global options it lacks
            taken = {opt for param in command.params for opt in param.opts}
            command.params += [_after_command(param) for param in self.params
                               if param.name in GLOBALS and not taken & set(param.opts)]

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as err:  # a bad global option
            raise _one_line(err) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PASS_THROUGH as err:  # typer ≥ 0.24 vendors its own click: its exceptions and click's differ
            raise _one_line(err) from None
        except click.exceptions.Exit as done:  # e.g. console.final_summary, written against click itself
            raise typer.Exit(done.exit_code) from None
        except SeqtoolError as err:
            _maybe_traceback(ctx)
            print_error(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted by Ctrl-C")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # `seqtool tokenize big.txt | head`: the reader went away; that is not an error.
            _silence_stdout()
            raise typer.Exit(0) from None
        except Exception as err:  # noqa: BLE001 - last resort: never a bare traceback for users
            _maybe_traceback(ctx)
            if (known := out_of_memory(err)) is not None:
                print_error(str(known))
                raise typer.Exit(known.exit_code) from None
            print_error(f"internal error: {type(err).__name__}: {err} "
                        "(run again with --debug for a traceback, and please report it)")
            raise typer.Exit(EXIT_FAILURE) from None


def _one_line(err: Exception) -> Exception:
    """Click's usage error (usage, a hint, a blank line, the error) shown as one line like every other
    error: `error: Invalid value for '--cell': 'x' is not one of 'rnn', ... (see seqtool train-rnn -h)`."""
    if isinstance(err, typer.TyperException) and err.exit_code == 2:
        message = err.format_message().replace("Value error, ", "").rstrip(".")  # typer's pydantic prefix
        ctx = getattr(err, "ctx", None)
        err.show = lambda file=None: print_error(message + (f" (see {ctx.command_path} -h)" if ctx else ""))
    return err


GLOBALS = ("workspace", "device", "seed", "quiet", "log_format", "debug", "threads")


def _after_command(param: click.Parameter) -> click.Parameter:
    """A copy of global option `param` for after the command name; a value given there is set on the
    GlobalOptions that the root callback made (the command's own function never sees it)."""
    def store(ctx: click.Context, param: click.Parameter, value):
        obj = ctx.find_root().obj
        if isinstance(obj, GlobalOptions) and value != param.default:
            setattr(obj, param.name, value)
        return value

    param = copy.copy(param)
    param.expose_value, param.callback, param.help = False, store, f"{param.help} (a global option)"
    return param


class ClosedStdout(io.TextIOBase):
    """sys.stdout of a process started with stdout closed (`>&-`, where Python sets it to None): a
    command that writes data fails with one line, one that writes none runs as usual."""

    def write(self, text: str) -> int:
        raise RuntimeFailure("cannot write the output: stdout is closed",
                             hint="redirect it to a file or a pipe, e.g. > out.txt")

    @property
    def buffer(self):  # open_output("-") writes bytes
        return self.write("")


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _maybe_traceback(ctx: click.Context) -> None:
    obj = ctx.find_root().obj
    if (isinstance(obj, GlobalOptions) and obj.debug) or os.environ.get("SEQTOOL_DEBUG") == "1":
        traceback.print_exc()


app = typer.Typer(
    name="seqtool",
    cls=SeqtoolGroup,
    help="Train, use and inspect sequence models (RNN LMs, seq2seq with attention, Transformers).\n\n"
    "Every command reads and writes a workspace directory that makes a run self-describing.\n\n"
    "Example: seqtool train-rnn --config recipes_data/configs/lstm_word.yaml -w runs/recipes",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqtool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[
        Optional[str], typer.Option("--workspace", "-w", help="Workspace directory.")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto | cpu | cuda[:N] | mps.", autocompletion=complete_device)
    ] = "auto",
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors on stderr.")] = False,
    log_format: Annotated[
        Literal["auto", "rich", "plain", "json"],
        typer.Option("--log-format", help="auto: rich on a terminal, else plain; json: one object per line."),
    ] = "auto",
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", min=1, envvar="SEQTOOL_THREADS", show_default=False,
                     help="CPU threads for torch (default: torch's, one per core). On a shared or busy "
                     "machine --threads 1 is often faster (README: Decoding faster).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(workspace=workspace, device=device, seed=seed, quiet=quiet,
                            log_format=log_format, debug=debug, threads=threads)


# Every command, in --help order. Modules import only typer at the top; torch is imported inside
# the command bodies so that --help, tokenize, build-vocab and bleu start fast.
from seqtool.cli import (  # noqa: E402
    attention_map,
    bleu,
    build_vocab,
    classify,
    embeddings,
    evaluate,
    export,
    finetune,
    forecast,
    generate,
    info,
    runs,
    tokenize,
    train,
    train_seq2seq,
    train_transformer,
    translate,
)

COMMANDS = [
    ("tokenize", tokenize.tokenize),
    ("build-vocab", build_vocab.build_vocab),
    ("train-rnn", train.train_rnn),
    ("train-seq2seq", train_seq2seq.train_seq2seq),
    ("train-transformer", train_transformer.train_transformer),
    ("translate", translate.translate),
    ("finetune", finetune.finetune),
    ("generate", generate.generate),
    ("forecast", forecast.forecast),
    ("classify", classify.classify),
    ("evaluate", evaluate.evaluate),
    ("bleu", bleu.bleu),
    ("attention-map", attention_map.attention_map),
    ("embeddings", embeddings.embeddings),
    ("export", export.export),
    ("info", info.info),
    ("runs", runs.runs),
]
for _name, _fn in COMMANDS:
    app.command(_name, cls=SeqtoolCommand)(_fn)


def main() -> None:
    """Console-script entry point."""
    if sys.stdout is None:
        sys.stdout = ClosedStdout()
    try:
        app(prog_name="seqtool")
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)
    except SeqtoolError as err:  # raised outside a command, e.g. --version with stdout closed
        print_error(str(err))
        sys.exit(err.exit_code)
