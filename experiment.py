"""Experiments: settings in a file or on the command line beside config.py's defaults, and the workdir that keeps them.

    python extract_features.py --data-root data/demo --workdir work/hard --config experiments/hard_targets.py
    python task4b.py --workdir work/hard                     # the workdir's experiment: nothing to repeat
    python task4b.py --workdir work/lr --set LEARNING_RATE=0.003 --set BATCH_SIZE=16
    python experiment.py --workdir work/hard                 # its values, and where each came from

An experiment file is Python assigning config.py's names; --set NAME=VALUE comes after it, then task4b.py's flags. A
workdir keeps its defining values; once it holds a run, a command giving others is refused (docs/experiments.md).
"""
import argparse
import ast
import contextlib
import copy
import functools
import json
import re
import sys
from pathlib import Path

import config
import utils
from utils import DEFAULTS, DataError, check_name, checked

EXPERIMENT_FILE = 'experiment.json'           # WD/experiment.json
# this command's experiment: values over config.py's, their sources, the command line's, its arguments, its workdir
_command = {'settings': {}, 'sources': {}, 'cli': {}, 'args': [], 'workdir': None}


# -----------------------------------------------------------------------------
# Values: a --set, an experiment file

def parse_set(text, where=None):
    """`NAME=VALUE` -> (name, value). Strings need no quotes; other values are Python literals."""
    name, equals, raw = text.partition('=')
    name, raw, where = name.strip(), raw.strip(), where or f'--set {text}'
    if not equals or not name:
        raise DataError(f'{where}: expected NAME=VALUE, e.g. --set LEARNING_RATE=0.003')
    check_name(name, where)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = {'true': True, 'false': False}.get(raw.lower(), raw)
    if isinstance(DEFAULTS[name], (str, Path)) and not isinstance(value, str):
        value = raw                              # a string that looks like a number stays the string typed
    return name, checked(name, value, where)


def read_experiment_file(path):
    """An experiment file -> {name: value} of every setting it assigns, imports or changes, checked."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except OSError as error:
        raise DataError(f'{path}: experiment file not readable ({error.strerror})') from None
    except SyntaxError as error:
        raise DataError(f'{path}, line {error.lineno}: {error.msg}') from None
    lines = {}                                   # name -> the line binding it (an assignment or an import)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) or isinstance(node, ast.alias):
            lines.setdefault(node.id if isinstance(node, ast.Name) else node.asname or node.name, node.lineno)
    namespace = {'__file__': str(path), **copy.deepcopy(DEFAULTS)}    # copies: config's own lists stay untouched
    before = {name: copy.deepcopy(getattr(config, name)) for name in DEFAULTS}
    try:
        exec(compile(tree, str(path), 'exec'), namespace)
    except Exception as error:          # whatever the user's file raises: one line naming it
        raise DataError(f'{path}: {type(error).__name__}: {error}') from None
    finally:
        written = [name for name in DEFAULTS if getattr(config, name) != before[name]]
        apply({name: before[name] for name in written})
    if written:
        raise DataError(f'{path}: writes config.{written[0]}, which no record would see; assign {written[0]} '
                        f'= ... in the file instead')
    values = {}
    for name in [n for n, v in namespace.items() if n.isupper() and (n in lines or v != DEFAULTS.get(n, v))]:
        where = f'{path}, line {lines[name]}' if name in lines else str(path)
        check_name(name, where)
        values[name] = checked(name, namespace[name], f'{where}: {name} = {namespace[name]!r}')
    return values


def apply(settings):
    """config's values set to `settings`, the derived ones derived again (also a worker process's initializer)."""
    for name, value in settings.items():
        setattr(config, name, value)
    config.derive()


@contextlib.contextmanager
def applied(settings):
    before = {name: getattr(config, name) for name in settings}
    apply(settings)
    try:
        yield
    finally:
        apply(before)


# -----------------------------------------------------------------------------
# The experiment a workdir keeps

def defines(name):
    """Whether a setting defines an experiment (its workdir keeps it): not '(per command)', and no path."""
    return not utils.per_command(name) and not isinstance(DEFAULTS[name], Path)


def _json(value):
    return json.loads(json.dumps(value, default=str))             # as experiment.json reads back: tuples are lists


def read_workdir(workdir):
    """WD/experiment.json -> {name: value} of its defining settings, checked (None without one)."""
    path = Path(workdir) / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        saved = dict(json.loads(path.read_text())['settings'])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path}: not an experiment of experiment.py; delete it to start the workdir's experiment "
                        f"again from this command's settings") from None
    return {name: checked(name, value, f'{path}: {name}') for name, value in saved.items()
            if check_name(name, str(path)) or defines(name)}


def settle(workdir, cli, sources):
    """The workdir's experiment with the command line's values on top, refused if they differ and it holds runs."""
    saved, runs = read_workdir(workdir), Path(workdir) / config.RUNS_DIR
    pinned = saved is not None and any(runs.glob('run*/settings.json'))
    for name, value in cli.items():
        was = (saved or {}).get(name, DEFAULTS[name])
        if pinned and defines(name) and _json(value) != _json(was):
            holds = ', '.join(f'{k}={v!r}' for k, v in saved.items()) or "config.py's values"
            raise DataError(f"{Path(workdir) / EXPERIMENT_FILE}: this workdir's experiment is {holds}, and it holds "
                            f'runs ({runs}); {sources[name]} gives {name} = {value!r}, the experiment {was!r}: give '
                            f'another --workdir for another experiment')
    return {**(saved or {}), **cli}


def save():
    """The command's defining values -> its workdir's experiment.json (when extraction or a run starts there)."""
    workdir = _command['workdir']
    settings = {name: value for name, value in _command['settings'].items() if defines(name)}
    if workdir and _json(read_workdir(workdir)) != _json(settings):
        utils.write_json_atomic(workdir / EXPERIMENT_FILE, {
            'settings': _json(settings), 'sources': sorted({_command['sources'][name] for name in settings})})


# -----------------------------------------------------------------------------
# A command: its arguments -> its experiment

@contextlib.contextmanager
def for_command(argv, workdir=False, flags=()):
    """A script's arguments -> those left for its parser (--workdir and the flags stay), inside the block where
    config holds the command's experiment: its workdir's (if it has one), then --config, --set and the flags."""
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for option in ('--config', '--set', '--workdir', *flags):
        own.add_argument(option, action='append', default=[])
    known, rest = own.parse_known_args(argv)
    cli, sources = {}, {}
    for path in known.config:
        values = read_experiment_file(path)
        cli.update(values)
        sources.update(dict.fromkeys(values, f'--config {path}'))
    sets = [(f'--set {text}', text) for text in known.set]
    for option, name in dict(flags).items():
        values = getattr(known, option[2:].replace('-', '_'))
        rest += [a for value in values for a in (option, value)]
        sets += [(f'{option} {value}', f'{name}={value}') for value in values]
    for where, text in sets:
        name, cli[name] = parse_set(text, where)
        sources[name] = where
    rest += [a for value in known.workdir for a in ('--workdir', value)]
    with applied(cli):                    # the command line may move the workdir itself (--set WORKDIR=...)
        workdir = Path(known.workdir[-1] if known.workdir else config.WORKDIR) if workdir else None
    settings = settle(workdir, cli, sources) if workdir else dict(cli)
    previous = copy.copy(_command)
    _command.update(settings=settings, cli=cli, workdir=workdir, args=[a for p in known.config for a in ('--config', p)]
                    + [a for _, text in sets for a in ('--set', text)],
                    sources={**{n: str(workdir / EXPERIMENT_FILE) for n in settings if n not in cli}, **sources})
    try:
        with applied(settings):
            problem = utils.config_problem()          # before anything runs: a value no script can work with
            if problem:
                names, text = problem
                raise DataError(with_source(text, names))
            yield rest
    finally:
        _command.update(previous)


def with_source(text, names):
    """A refusal of config values -> the same naming where the first of `names` came from."""
    source = next((_command['sources'][n] for n in names if n in _command['sources']), None)
    if source:
        return f'{text}; set by {source}'
    return f'{text}; set in config.py' if names and names[0] in DEFAULTS else text


def command(main=None, *, workdir=False, flags=()):
    """A script's main(argv) -> exit status, run in its experiment (flags: its options that are settings,
    {'--epochs': 'MAX_EPOCHS'}); a DataError is one line on stderr and exit status 2, no traceback."""
    if main is None:
        return functools.partial(command, workdir=workdir, flags=flags)

    @functools.wraps(main)
    def run(argv=None):
        try:
            with for_command(sys.argv[1:] if argv is None else [str(a) for a in argv], workdir, flags) as rest:
                try:
                    return main(rest) or 0
                except DataError as error:       # a value refused where it is used (config.LOSS: model.loss_of)
                    name = re.match(r'config\.(\w+)', str(error))
                    raise DataError(with_source(str(error), [name.group(1)]) if name else str(error)) from None
        except DataError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
    return run


def parse_args(parser, argv):
    """argv in full option names only (an abbreviation is refused, never guessed); --config and --set in --help."""
    parser.allow_abbrev = False
    group = parser.add_argument_group("experiment (experiment.py; default: the workdir's)")
    group.add_argument('--config', metavar='FILE', help='an experiment file, e.g. experiments/hard_targets.py')
    group.add_argument('--set', metavar='NAME=VALUE', help='a setting of config.py, e.g. LEARNING_RATE=0.003')
    return parser.parse_args(argv)


def current():
    """This command's experiment: {'settings': its values (a worker process apply()s them), 'sources'}."""
    return {'settings': dict(_command['settings']), 'sources': sorted(set(_command['sources'].values()))}


def command_args():
    return list(_command['args'])             # this command's --config and --set, for its child processes


@contextlib.contextmanager
def of_workdir(workdir):
    """config with workdir's experiment and this command's values on top (compare.py: each side in its own)."""
    with applied(settle(workdir, _command['cli'], _command['sources'])):
        yield


@command(workdir=True)
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR, help='the workdir (default: %(default)s)')
    parser.add_argument('--list', action='store_true', help="every setting's value (default: those set)")
    for name in DEFAULTS if parse_args(parser, argv).list else _command['settings'] or ['WORKDIR']:
        print(f"{name} = {getattr(config, name)!r}  ({_command['sources'].get(name, 'config.py')})")


if __name__ == '__main__':
    import experiment       # one module: command() applies the experiment in `experiment`, not in `__main__`
    raise SystemExit(experiment.main())
